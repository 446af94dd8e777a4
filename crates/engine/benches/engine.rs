//! Criterion benchmarks of the pure engine: one reservation on a hot owner, reservations
//! spread over 10,000 owners, wait estimates, and a full window's reservation plus answer
//! across limits from 100 to 1,000,000.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hubgate_engine::{BudgetBook, BudgetKey, Limits, Reservation, Tick, WindowSpec};

/// Burst 110 per 10 s with a 100 ms margin, like a production default.
fn limits() -> Limits {
    Limits {
        burst: WindowSpec::new(110, Duration::from_secs(10))
            .with_margins(Duration::from_millis(100), 0),
        ..Limits::default()
    }
}

/// Keys of a normal CRM call of app `app` in portal `portal`.
fn keys(app: u64, portal: u64) -> [BudgetKey; 2] {
    [
        BudgetKey::Burst {
            app_id: app,
            portal_id: portal,
        },
        BudgetKey::Daily { portal_id: portal },
    ]
}

fn bench(c: &mut Criterion) {
    // Advancing time by window/limit per call keeps the owner saturated but granted, so
    // every iteration runs the full check-and-commit path.
    let step = 10_100_000 / 110;

    let mut book = BudgetBook::new(limits());
    let hot = keys(1, 1);
    let mut now = Tick(0);
    c.bench_function("reserve/hot_owner", |b| {
        b.iter(|| {
            now = now.saturating_add_micros(step);
            let r = book.reserve(black_box(&hot), now, 0);
            debug_assert_eq!(r, Reservation::Granted);
            r
        })
    });

    let owners: Vec<[BudgetKey; 2]> = (0..10_000).map(|i| keys(i, 1_000 + i)).collect();
    let mut book = BudgetBook::new(limits());
    let mut now = Tick(0);
    let mut i = 0usize;
    c.bench_function("reserve/10k_owners", |b| {
        b.iter(|| {
            i = (i + 1) % owners.len();
            now = now.saturating_add_micros(1);
            book.reserve(black_box(&owners[i]), now, 0)
        })
    });

    let mut book = BudgetBook::new(limits());
    for _ in 0..110 {
        book.reserve(&hot, Tick(0), 0);
    }
    c.bench_function("estimate_wait/full_window_10k_ahead", |b| {
        b.iter(|| book.estimate_wait(black_box(&hot), Tick(1_000), 0, black_box(10_000)))
    });
}

/// Answers still out when a reservation is made: each answer lands this many
/// reservations after its own, as on a gateway with calls in flight.
const IN_FLIGHT: usize = 16;

/// One owner's window kept full at limits 100 … 1,000,000 (10 s window): each iteration is
/// what the gateway does per call, a reservation and then the lessons of an earlier call's
/// answer (its arrival bound and HubSpot's count). The cost must not grow with the sends
/// the window holds.
fn steady_full_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve_and_answer/full_10s_window");
    for limit in [100u32, 1_000, 10_000, 100_000, 1_000_000] {
        let span = 10_000_000u64;
        // Each send is held until `IN_FLIGHT` calls after its own, so a slot frees every
        // `span / (limit - IN_FLIGHT)`: calls at exactly that pace (rounded up per call, so
        // any `limit - IN_FLIGHT` of them span exactly `span`) are each granted the moment a
        // slot frees. The window stays full at every limit, with the same few sends gone
        // from it, so the limit is the only thing that changes.
        let per_slot = u64::from(limit) - IN_FLIGHT as u64;
        let limits = Limits {
            burst: WindowSpec::new(limit, Duration::from_secs(10)).learning_first(),
            ..Limits::default()
        };
        let mut book = BudgetBook::new(limits);
        let owner = keys(1, 1);
        let mut out = [Tick(0); IN_FLIGHT];
        let mut call = 0u64;
        let mut one_call = |book: &mut BudgetBook| {
            let now = Tick(span + (call * span).div_ceil(per_slot));
            let r = book.reserve(black_box(&owner), now, 0);
            assert_eq!(r, Reservation::Granted, "limit {limit}: the window bound");
            let slot = (call % IN_FLIGHT as u64) as usize;
            let admitted = std::mem::replace(&mut out[slot], now);
            book.observe_arrival_bound(&owner[0], admitted, admitted, now);
            book.observe_usage(&owner[0], now, 1, limit, admitted);
            call += 1;
        };
        // Fill the window twice over before measuring: the steady state, not the ramp.
        for _ in 0..2 * limit {
            one_call(&mut book);
        }
        group.bench_function(BenchmarkId::from_parameter(limit), |b| {
            b.iter(|| one_call(&mut book))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, steady_full_window);
criterion_main!(benches);
