//! Criterion benchmarks of the pure engine: one reservation on a hot owner, reservations
//! spread over 10,000 owners, and wait estimates.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group!(benches, bench);
criterion_main!(benches);
