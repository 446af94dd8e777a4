//! Property tests of the pure budget engine under virtual time: exact windows, work
//! conservation, estimates that match the driver, and no panics on any input.

use std::time::Duration;

use hubgate_engine::virtual_time::{self, Arrival, Fate, RunConfig};
use hubgate_engine::{
    BudgetBook, BudgetKey, DailySpec, Limits, OwnerQueue, Reservation, SlidingLog, Tick, WindowSpec,
};
use proptest::prelude::*;

mod common;
use common::max_in_any_window;

const DAILY: BudgetKey = BudgetKey::Daily { portal_id: 1 };
const SEARCH: BudgetKey = BudgetKey::Search { portal_id: 1 };
const NO_DEADLINE: Duration = Duration::from_secs(1 << 40);

fn burst(owner: usize) -> BudgetKey {
    BudgetKey::Burst {
        app_id: owner as u64,
        portal_id: 1,
    }
}

fn is_sorted(times: &[Tick]) -> bool {
    times.windows(2).all(|w| w[0] <= w[1])
}

/// A window spec: short (µs) or long (up to a minute) windows, optional margins.
fn window_spec() -> impl Strategy<Value = WindowSpec> {
    (
        1u32..=30,
        prop_oneof![1u64..=2_000, 1_000u64..=60_000_000],
        0u64..=100,
        0u32..=100,
    )
        .prop_map(|(limit, window_us, margin_pct, slot_pct)| {
            let margin_time = Duration::from_micros(window_us * margin_pct / 1_000);
            let margin_slots = (limit - 1) * slot_pct / 300;
            WindowSpec::new(limit, Duration::from_micros(window_us))
                .with_margins(margin_time, margin_slots)
        })
}

/// Gaps between arrivals, relative to the window: bursts (gap 0), steady streams and
/// random gaps, so the runs alternate between idle, saturated and in between.
fn gaps(window_us: u64, max_len: usize) -> impl Strategy<Value = Vec<u64>> {
    let w = window_us.max(1);
    let segment = prop_oneof![
        (1usize..120).prop_map(|n| vec![0u64; n]),
        (1usize..400, 0u64..=w / 4).prop_map(|(n, gap)| vec![gap; n]),
        prop::collection::vec(0u64..=2 * w, 1..200),
        (0u64..=10 * w).prop_map(|idle| vec![idle]),
    ];
    prop::collection::vec(segment, 1..12).prop_map(move |segs| {
        let mut all: Vec<u64> = segs.into_iter().flatten().collect();
        all.truncate(max_len);
        all
    })
}

fn arrivals_from(gaps: &[u64], owners: usize, pick: &[u8]) -> Vec<Arrival> {
    let mut at = 1_000u64;
    gaps.iter()
        .enumerate()
        .map(|(i, gap)| {
            at += gap;
            let choice = pick.get(i % pick.len().max(1)).copied().unwrap_or(0);
            let owner = usize::from(choice) % owners;
            let keys = if choice % 5 == 4 {
                vec![SEARCH, DAILY]
            } else {
                vec![burst(owner), DAILY]
            };
            Arrival {
                at: Tick(at),
                owner,
                keys,
                max_wait: NO_DEADLINE,
            }
        })
        .collect()
}

fn config(burst: WindowSpec, search: WindowSpec, max_depth: usize) -> RunConfig {
    RunConfig {
        limits: Limits {
            burst,
            search,
            daily: DailySpec {
                limit: 10_000_000,
                utc_offset_secs: 0,
            },
            ..Limits::default()
        },
        max_depth,
        unix_ms_at_zero: 1_700_000_000_000,
    }
}

/// Asserts the window invariant for one key: no interval of `window` (nor of
/// `window + margin_time`) holds more than `limit - margin_slots` sends.
fn assert_window_respected(times: &[Tick], spec: &WindowSpec) -> Result<(), TestCaseError> {
    prop_assert!(is_sorted(times));
    let cap = spec.capacity() as usize;
    let window = spec.window.as_micros() as u64;
    prop_assert!(max_in_any_window(times, window.max(1)) <= cap);
    prop_assert!(max_in_any_window(times, spec.span_micros()) <= cap);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Several owners, a shared search budget, small queues and deadlines: whatever
    /// happens, no budget ever sends more than its capacity in any window.
    #[test]
    fn no_window_ever_holds_more_than_capacity(
        burst_spec in window_spec(),
        search_spec in window_spec(),
        owners in 1usize..4,
        pick in prop::collection::vec(any::<u8>(), 1..64),
        max_depth in prop_oneof![Just(usize::MAX), 1usize..50],
        deadline_windows in prop_oneof![Just(u64::MAX), 0u64..5],
        gaps in gaps(2_000, 3_000),
    ) {
        let scale = burst_spec.window.as_micros() as u64 / 2_000 + 1;
        let gaps: Vec<u64> = gaps.iter().map(|g| g * scale).collect();
        let mut arrivals = arrivals_from(&gaps, owners, &pick);
        let max_wait = Duration::from_micros(
            deadline_windows.saturating_mul(burst_spec.span_micros()),
        );
        for a in &mut arrivals {
            a.max_wait = max_wait;
        }
        let cfg = config(burst_spec, search_spec, max_depth);
        let out = virtual_time::run(&cfg, &arrivals);
        for owner in 0..owners {
            assert_window_respected(&out.send_times(&arrivals, &burst(owner)), &burst_spec)?;
        }
        assert_window_respected(&out.send_times(&arrivals, &SEARCH), &search_spec)?;
        // Every call ends somewhere, and time only advanced on events.
        let mut events = 0;
        for (i, fate) in out.fates.iter().enumerate() {
            match *fate {
                Fate::Waiting => prop_assert!(false, "call {i} left waiting"),
                Fate::Sent(t) => {
                    prop_assert!(t >= arrivals[i].at);
                    prop_assert!(t <= arrivals[i].at.saturating_add(arrivals[i].max_wait));
                    events += 1;
                }
                Fate::Expired(_) => events += 1,
                _ => {}
            }
        }
        prop_assert!(out.steps <= arrivals.len() + events + 1);
    }

    /// One owner, one window budget, FIFO, no deadlines: every call leaves exactly at
    /// `max(arrival, previous send, send C places earlier + span)` — the earliest moment
    /// the window allows, i.e. the driver is work-conserving — and exactly when the
    /// estimate given on arrival said it would.
    #[test]
    fn fifo_sends_are_exactly_as_early_as_allowed_and_as_estimated(
        spec in window_spec(),
        gaps in gaps(2_000, 3_000),
    ) {
        let scale = spec.window.as_micros() as u64 / 2_000 + 1;
        let gaps: Vec<u64> = gaps.iter().map(|g| g * scale).collect();
        let arrivals = arrivals_from(&gaps, 1, &[0]);
        let out = virtual_time::run(&config(spec, spec, usize::MAX), &arrivals);
        let cap = spec.capacity() as usize;
        let span = spec.span_micros();
        let mut expected: Vec<u64> = Vec::with_capacity(arrivals.len());
        for (k, a) in arrivals.iter().enumerate() {
            let mut t = a.at.as_micros();
            if k > 0 {
                t = t.max(expected[k - 1]);
            }
            if k >= cap {
                t = t.max(expected[k - cap] + span);
            }
            expected.push(t);
        }
        prop_assert_eq!(&out.send_order, &(0..arrivals.len()).collect::<Vec<_>>());
        for (k, a) in arrivals.iter().enumerate() {
            prop_assert_eq!(out.fates[k], Fate::Sent(Tick(expected[k])), "call {}", k);
            let estimate = out.estimates[k].expect("admitted");
            prop_assert_eq!(a.at.saturating_add(estimate), Tick(expected[k]), "estimate {}", k);
        }
    }

    /// Evicting idle budgets between any two operations never changes an answer.
    #[test]
    fn eviction_never_changes_an_answer(
        spec in window_spec(),
        daily_limit in 0u64..20,
        ops in prop::collection::vec((0u64..3_000, 0u8..4, 0u32..40), 1..400),
    ) {
        let limits = Limits {
            burst: spec,
            search: spec,
            daily: DailySpec { limit: daily_limit, utc_offset_secs: -3_600 },
            ..Limits::default()
        };
        let mut kept = BudgetBook::new(limits.clone());
        let mut evicted = BudgetBook::new(limits);
        let mut now = Tick(0);
        let window = spec.window.as_micros() as u64;
        for (gap, op, arg) in ops {
            now = now.saturating_add_micros(gap * (window / 500 + 1));
            let unix_ms = (now.as_micros() / 10) as i64;
            evicted.evict_idle(now, unix_ms, Duration::ZERO);
            let keys: &[BudgetKey] = match op % 2 {
                0 => &[BudgetKey::Burst { app_id: 1, portal_id: 1 }, DAILY],
                _ => &[SEARCH, DAILY],
            };
            match op {
                0 | 1 => prop_assert_eq!(
                    kept.reserve(keys, now, unix_ms),
                    evicted.reserve(keys, now, unix_ms)
                ),
                2 => {
                    kept.observe_remaining(&SEARCH, now, arg);
                    evicted.observe_remaining(&SEARCH, now, arg);
                }
                _ => {
                    let until = now.saturating_add_micros(u64::from(arg) * 100);
                    kept.block_until(&SEARCH, now, until);
                    evicted.block_until(&SEARCH, now, until);
                }
            }
            prop_assert_eq!(
                kept.estimate_wait(keys, now, unix_ms, arg as usize),
                evicted.estimate_wait(keys, now, unix_ms, arg as usize)
            );
        }
    }

    /// Arbitrary values, extremes included, never panic and keep the log's invariants.
    #[test]
    fn sliding_log_survives_any_input(
        limit in prop_oneof![Just(0u32), Just(u32::MAX), 0u32..5],
        window in prop_oneof![Just(0u64), Just(u64::MAX), 0u64..100],
        margin_slots in prop_oneof![Just(u32::MAX), 0u32..3],
        ops in prop::collection::vec(
            (prop_oneof![Just(u64::MAX), Just(0u64), 0u64..1_000, any::<u64>()], 0u8..8, any::<u32>()),
            1..60,
        ),
    ) {
        let spec = WindowSpec::new(limit, Duration::from_micros(window))
            .with_margins(Duration::from_micros(window / 3), margin_slots);
        let mut log = SlidingLog::new(spec);
        for (t, op, arg) in ops {
            let now = Tick(t);
            match op {
                0 => { let _ = log.try_reserve(now); }
                1 => log.block_until(Tick(u64::from(arg))),
                2 => log.observe_remaining(now, arg % 8),
                3 => { let _ = log.estimate_wait(now, arg as usize); }
                4 => log.observe_arrival_bound(now, now, Tick(t.saturating_add(u64::from(arg)))),
                5 => log.observe_usage(now, arg, arg % 7, Tick(t / 2)),
                6 => log.observe_rejection(now),
                _ => { let _ = log.is_idle(now); }
            }
            prop_assert!(log.used(now) <= log.capacity());
            prop_assert!(log.used(now) + log.remaining(now) <= log.capacity());
            prop_assert!(
                log.remaining(now) + log.held_for_outside(now) >= log.capacity() - log.used(now)
            );
            prop_assert!(log.next_free(now) >= now);
            prop_assert!(log.sends().len() <= log.capacity() as usize);
        }
    }
}

proptest! {
    // Each case runs a thousand windows or more; a few cases are plenty.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Saturated for thousands of windows: at least `windows × capacity - limit` sends,
    /// and never more than the window allows.
    #[test]
    fn saturated_runs_use_the_whole_budget(
        spec in window_spec(),
        windows in 1_000u64..1_100,
    ) {
        let cap = u64::from(spec.capacity());
        let span = spec.span_micros();
        // Half as much again as the capacity arrives per window, evenly spread.
        let per_window = cap + cap / 2 + 1;
        let n = windows * per_window;
        let arrivals: Vec<Arrival> = (0..n)
            .map(|i| Arrival {
                at: Tick(i * span / per_window.max(1)),
                owner: 0,
                keys: vec![burst(0)],
                max_wait: NO_DEADLINE,
            })
            .collect();
        let out = virtual_time::run(&config(spec, spec, usize::MAX), &arrivals);
        let times = out.send_times(&arrivals, &burst(0));
        assert_window_respected(&times, &spec)?;
        let horizon = windows * span;
        let sent_in_horizon = times.iter().filter(|t| t.as_micros() < horizon).count() as u64;
        prop_assert!(
            sent_in_horizon + u64::from(spec.limit) >= windows * cap,
            "sent {} in {} windows of capacity {}", sent_in_horizon, windows, cap
        );
    }
}

#[test]
fn burst_of_limit_from_idle_goes_at_one_tick_and_the_next_waits_for_the_first() {
    let spec =
        WindowSpec::new(110, Duration::from_secs(10)).with_margins(Duration::from_millis(200), 0);
    let t0 = Tick::from_millis(42_000);
    let arrivals: Vec<Arrival> = (0..111)
        .map(|_| Arrival {
            at: t0,
            owner: 0,
            keys: vec![burst(0), DAILY],
            max_wait: Duration::from_secs(30),
        })
        .collect();
    let out = virtual_time::run(&config(spec, spec, 1_000), &arrivals);
    for fate in &out.fates[..110] {
        assert_eq!(*fate, Fate::Sent(t0));
    }
    assert_eq!(
        out.fates[110],
        Fate::Sent(Tick::from_millis(42_000 + 10_200))
    );
    assert_eq!(out.estimates[110], Some(Duration::from_millis(10_200)));
}

#[test]
fn deadlines_queue_full_and_daily_exhaustion_in_the_driver() {
    let spec = WindowSpec::new(2, Duration::from_millis(100));
    let mut cfg = config(spec, spec, 3);
    cfg.limits.daily.limit = 6;
    let at = |ms: u64, wait_ms: u64| Arrival {
        at: Tick::from_millis(ms),
        owner: 0,
        keys: vec![burst(0), DAILY],
        max_wait: Duration::from_millis(wait_ms),
    };
    let arrivals = vec![
        at(0, 0),     // sent at once
        at(0, 0),     // sent at once
        at(0, 50),    // would wait 100 ms: unmeetable
        at(0, 1_000), // waits until 100 ms
        at(0, 1_000), // waits until 100 ms
        at(0, 1_000), // waits until 200 ms
        at(0, 1_000), // queue full (3 waiting)
        at(150, 10),  // would go at 200 ms: unmeetable
        at(150, 500), // goes at 200 ms with #5, spending the 6th and last daily slot
        at(150, 500), // the daily budget runs out before its turn: waits for midnight
        at(300, 500), // nothing left today: refused at once
    ];
    let out = virtual_time::run(&cfg, &arrivals);
    use hubgate_engine::RejectReason::*;
    let ms = Tick::from_millis;
    assert_eq!(out.fates[0], Fate::Sent(ms(0)));
    assert_eq!(out.fates[1], Fate::Sent(ms(0)));
    assert_eq!(
        out.fates[2],
        Fate::Rejected(DeadlineUnmeetable {
            estimate: Duration::from_millis(100)
        })
    );
    assert_eq!(out.fates[3], Fate::Sent(ms(100)));
    assert_eq!(out.fates[4], Fate::Sent(ms(100)));
    assert_eq!(out.fates[5], Fate::Sent(ms(200)));
    assert_eq!(out.fates[6], Fate::Rejected(QueueFull));
    assert_eq!(
        out.fates[7],
        Fate::Rejected(DeadlineUnmeetable {
            estimate: Duration::from_millis(50)
        })
    );
    assert_eq!(out.fates[8], Fate::Sent(ms(200)));
    match out.fates[9] {
        Fate::Rejected(DeadlineUnmeetable { estimate }) => {
            assert!(estimate > Duration::from_secs(3_600));
        }
        other => panic!("expected unmeetable, got {other:?}"),
    }
    assert_eq!(out.fates[10], Fate::DailyExhausted(ms(300)));
}

#[test]
fn a_daily_budget_spent_elsewhere_refuses_the_head_of_the_queue() {
    let spec = WindowSpec::new(1, Duration::from_millis(100));
    let mut cfg = config(spec, spec, 10);
    cfg.limits.daily.limit = 2;
    // Owner 1 spends the portal's last daily slot while owner 0's second call waits.
    let call = |owner: usize, ms: u64| Arrival {
        at: Tick::from_millis(ms),
        owner,
        keys: vec![burst(owner), DAILY],
        max_wait: Duration::from_secs(1),
    };
    let arrivals = vec![call(0, 0), call(0, 0), call(1, 10)];
    let out = virtual_time::run(&cfg, &arrivals);
    assert_eq!(out.fates[0], Fate::Sent(Tick(0)));
    assert_eq!(out.fates[2], Fate::Sent(Tick::from_millis(10)));
    assert_eq!(out.fates[1], Fate::DailyExhausted(Tick::from_millis(100)));
}

#[test]
fn a_deadline_passing_in_the_queue_expires_the_call() {
    let spec = WindowSpec::new(1, Duration::from_millis(100));
    let mut book = BudgetBook::new(config(spec, spec, 10).limits);
    let mut queue = OwnerQueue::new(10);
    let keys = [burst(0)];
    assert_eq!(book.reserve(&keys, Tick(0), 0), Reservation::Granted);
    let wait = book.estimate_wait(&keys, Tick(0), 0, queue.len()).unwrap();
    queue
        .push("a", Tick::from_millis(150), Tick(0), wait)
        .unwrap();
    // Someone else's HubSpot traffic: the window is held until 200 ms.
    book.block_until(&keys[0], Tick(0), Tick::from_millis(200));
    assert_eq!(
        book.reserve(&keys, Tick::from_millis(100), 0),
        Reservation::NotBefore(Tick::from_millis(200))
    );
    assert_eq!(queue.next_deadline(), Some(Tick::from_millis(150)));
    assert_eq!(queue.expire(Tick::from_millis(150)), vec!["a"]);
    assert!(queue.is_empty());
}

#[test]
fn a_run_of_thousands_of_windows_costs_a_step_per_event() {
    let spec = WindowSpec::new(10, Duration::from_secs(10));
    let arrivals: Vec<Arrival> = (0..40_000u64)
        .map(|i| Arrival {
            at: Tick::from_millis(i * 500),
            owner: (i % 3) as usize,
            keys: vec![burst((i % 3) as usize), DAILY],
            max_wait: NO_DEADLINE,
        })
        .collect();
    let out = virtual_time::run(&config(spec, spec, usize::MAX), &arrivals);
    assert!(out.fates.iter().all(|f| matches!(f, Fate::Sent(_))));
    for owner in 0..3 {
        let times = out.send_times(&arrivals, &burst(owner));
        assert!(max_in_any_window(&times, 10_000_000) <= 10);
    }
    // 2,000 windows of 10 s cost one step per event (an arrival, a send), never a step per
    // tick: a run's cost follows its calls, not the virtual time it covers. (Its speed in
    // wall time is measured by `cargo bench -p hubgate-engine --bench engine`.)
    assert!(
        out.steps <= 2 * arrivals.len(),
        "{} steps for {} arrivals",
        out.steps,
        arrivals.len()
    );
}
