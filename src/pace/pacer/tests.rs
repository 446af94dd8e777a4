//! The pacer's behaviour in virtual time: bursts, windows, deadlines, queue bounds, shares
//! and reloads, with tokio's clock paused.

use super::*;
use crate::hubspot::{budgets_for, CallClass};
use crate::store::MemoryStore;
use hubgate_engine::{CallerId, DailySpec, Limits, WindowSpec};

const WINDOW: Duration = Duration::from_millis(1000);
const OWNER: Owner = Owner::App {
    app_id: 1,
    portal_id: 10,
};

#[test]
fn a_split_counts_each_caller_once_whether_active_waiting_or_both() {
    let seat = |caller, weight, priority| Seat {
        priority,
        caller,
        weight,
    };
    let mut shares = Shares::new((10, WINDOW));
    shares.record(seat(1, 2, Priority::Normal), Tick(0));
    shares.record(seat(1, 2, Priority::Normal), Tick(1));
    shares.record(seat(2, 3, Priority::Normal), Tick(0));
    shares.record(seat(3, 5, Priority::High), Tick(0));
    // 1 is active; 2 active and waiting (its recorded weight counts); 3 active only at
    // another priority, so here it counts as waiting; 4 only waits.
    let split = shares.split(Priority::Normal, &[(2, 9), (3, 7), (4, 1)]);
    assert_eq!(split.callers, 4);
    assert_eq!(split.total_weight, 2 + 3 + 7 + 1);
    let high = shares.split(Priority::High, &[]);
    assert_eq!((high.callers, high.total_weight), (1, 5));
}

fn pacer(limit: u32, max_depth: usize, daily: u64) -> Pacer {
    let limits = Limits {
        burst: WindowSpec::new(limit, WINDOW),
        daily: DailySpec {
            limit: daily,
            utc_offset_secs: 0,
        },
        ..Limits::default()
    };
    Pacer::new(
        Arc::new(MemoryStore::new(limits)),
        Clock::new(),
        PacerConfig::unshared(max_depth, Duration::from_secs(300)),
    )
}

fn ask(owner: Owner, keys: Keys, max_wait: Duration) -> Ask {
    Ask {
        owner,
        keys,
        seat: Seat {
            priority: Priority::Normal,
            caller: 0,
            weight: 1,
        },
        max_wait,
        retry: false,
    }
}

fn keys(owner: Owner) -> Keys {
    budgets_for(owner, CallClass::default())
}

/// Starts `n` calls at once and returns each one's grant time since start, in order.
async fn burst(
    pacer: &Pacer,
    owner: Owner,
    n: usize,
    max_wait: Duration,
) -> Vec<Result<Duration, Refusal>> {
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer
                    .admit(ask(owner, keys(owner), max_wait))
                    .await
                    .map(|_| start.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_burst_up_to_the_limit_leaves_at_once_and_the_rest_waits_a_window() {
    let pacer = pacer(10, 100, 0);
    let times = burst(&pacer, OWNER, 25, Duration::from_secs(60)).await;
    let times: Vec<Duration> = times.into_iter().map(Result::unwrap).collect();
    assert!(
        times[..10].iter().all(|t| *t == Duration::ZERO),
        "{times:?}"
    );
    assert!(times[10..20].iter().all(|t| *t == WINDOW), "{times:?}");
    assert!(times[20..].iter().all(|t| *t == 2 * WINDOW), "{times:?}");
    assert_eq!(pacer.queue_depth(&OWNER), 0);
}

#[tokio::test(start_paused = true)]
async fn no_window_ever_holds_more_than_the_limit() {
    let pacer = pacer(7, 10_000, 0);
    let start = tokio::time::Instant::now();
    let mut calls = Vec::new();
    // Arrivals spread unevenly over about five windows.
    for i in 0..60u64 {
        let pacer = pacer.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i * i * 37) % 4000)).await;
            pacer
                .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
                .await
                .unwrap();
            start.elapsed()
        }));
    }
    let mut sends = Vec::new();
    for call in calls {
        sends.push(call.await.unwrap());
    }
    sends.sort();
    for (i, first) in sends.iter().enumerate() {
        let in_window = sends[i..]
            .iter()
            .take_while(|t| **t < *first + WINDOW)
            .count();
        assert!(
            in_window <= 7,
            "{in_window} sends within a window starting at {first:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_reload_judges_queued_calls_by_the_new_limit_at_once() {
    let pacer = pacer(2, 100, 0);
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer
                    .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
                    .await
                    .map(|_| start.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pacer.queue_depth(&OWNER), 4, "two sent, four queued");
    let raised = Limits {
        burst: WindowSpec::new(6, WINDOW),
        ..Limits::default()
    };
    let config = pacer.inner.config.load().as_ref().clone();
    pacer.reconfigure(config, raised);
    let mut times = Vec::new();
    for call in calls {
        times.push(call.await.unwrap().unwrap());
    }
    times.sort();
    assert_eq!(times[..2], [Duration::ZERO; 2]);
    assert!(
        times[2..].iter().all(|t| *t == Duration::from_millis(100)),
        "the queued four leave at the reload, not a window later: {times:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let pacer = pacer(2, 3, 0);
    let results = burst(&pacer, OWNER, 6, Duration::from_secs(60)).await;
    let refused: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        matches!(refused[..], [&Err(Refusal::QueueFull { depth: 3, drain })] if drain == 2 * WINDOW),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unmeetable_deadline_is_refused_on_arrival_with_the_estimate() {
    let pacer = pacer(2, 100, 0);
    let results = burst(&pacer, OWNER, 3, Duration::from_millis(500)).await;
    assert!(results[0].is_ok() && results[1].is_ok());
    assert_eq!(
        results[2],
        Err(Refusal::DeadlineUnmeetable {
            estimate: WINDOW,
            deadline: Duration::from_millis(500)
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_in_the_queue_is_refused_then() {
    // Two apps of one portal share its search budget; app A's estimate cannot see
    // app B's queue, so A's deadline passes while B's calls take the slots.
    let limits = Limits {
        search: WindowSpec::new(1, WINDOW),
        ..Limits::default()
    };
    let pacer = Pacer::new(
        Arc::new(MemoryStore::new(limits)),
        Clock::new(),
        PacerConfig::unshared(100, Duration::from_secs(300)),
    );
    let search = CallClass {
        search: true,
        ..CallClass::default()
    };
    let (a, b) = (
        Owner::App {
            app_id: 1,
            portal_id: 10,
        },
        Owner::App {
            app_id: 2,
            portal_id: 10,
        },
    );
    pacer
        .admit(ask(b, budgets_for(b, search), Duration::from_secs(60)))
        .await
        .unwrap();
    let queued_b: Vec<_> = (0..3)
        .map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer
                    .admit(ask(b, budgets_for(b, search), Duration::from_secs(60)))
                    .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let late = pacer
        .admit(ask(a, budgets_for(a, search), Duration::from_millis(1500)))
        .await;
    match late {
        Err(Refusal::DeadlineExpired { waited, .. }) => {
            assert_eq!(waited, Duration::from_millis(1500))
        }
        other => panic!("expected an expired deadline, got {other:?}"),
    }
    for b in queued_b {
        b.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_the_queue_spends_nothing() {
    let pacer = pacer(1, 100, 0);
    pacer
        .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
        .await
        .unwrap();
    let leaver = {
        let pacer = pacer.clone();
        tokio::spawn(async move {
            pacer
                .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pacer.queue_depth(&OWNER), 1);
    leaver.abort();
    let _ = leaver.await;
    assert_eq!(pacer.queue_depth(&OWNER), 0);
    // The slot the leaver would have taken at t = 1 s is still there for the next call.
    let start = tokio::time::Instant::now();
    pacer
        .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), WINDOW - Duration::from_millis(10));
    let fresh = pacer
        .admit(ask(OWNER, keys(OWNER), Duration::from_secs(60)))
        .await;
    assert!(fresh.is_ok());
    assert_eq!(
        start.elapsed(),
        2 * WINDOW - Duration::from_millis(10),
        "one slot per window"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_daily_budget_refuses_without_waiting() {
    let pacer = pacer(100, 100, 3);
    let results = burst(&pacer, OWNER, 5, Duration::from_secs(60)).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert!(results[3..]
        .iter()
        .all(|r| matches!(r, Err(Refusal::DailyExhausted { resets_at_unix_ms }) if *resets_at_unix_ms % 86_400_000 == 0)));
}

#[tokio::test(start_paused = true)]
async fn idle_lanes_are_swept() {
    let limits = Limits::default();
    let pacer = Pacer::new(
        Arc::new(MemoryStore::new(limits)),
        Clock::new(),
        PacerConfig::unshared(10, Duration::from_secs(2)),
    );
    for portal_id in 0..50 {
        let owner = Owner::App {
            app_id: 1,
            portal_id,
        };
        pacer
            .admit(ask(owner, keys(owner), Duration::from_secs(1)))
            .await
            .unwrap();
    }
    assert_eq!(pacer.active_owners(), 50);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(pacer.active_owners(), 0);
    // Burst windows are dropped once empty; a portal's daily counter is kept until its
    // day ends, since dropping it would hand the portal a second daily allowance.
    assert_eq!(pacer.store().len(), 50, "only the 50 daily counters remain");
}

#[tokio::test(start_paused = true)]
async fn a_caller_served_at_once_still_counts_against_its_share() {
    let limits = Limits {
        burst: WindowSpec::new(4, WINDOW),
        ..Limits::default()
    };
    let pacer = Pacer::new(
        Arc::new(MemoryStore::new(limits)),
        Clock::new(),
        PacerConfig {
            fair_windows: FairWindows {
                burst: (4, WINDOW),
                search: (5, WINDOW),
                token: (5, WINDOW),
            },
            ..PacerConfig::unshared(100, Duration::from_secs(300))
        },
    );
    let as_caller = |caller| Ask {
        seat: Seat {
            priority: Priority::Normal,
            caller,
            weight: 1,
        },
        ..ask(OWNER, keys(OWNER), Duration::from_secs(60))
    };
    // Caller 2 sends once from idle; caller 1 then asks for four. Two of the window's
    // four slots are caller 1's share; caller 2's second share slot is kept for it.
    assert_eq!(
        pacer.admit(as_caller(2)).await.map(|a| a.waited),
        Ok(Duration::ZERO)
    );
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer.admit(as_caller(1)).await.unwrap();
                start.elapsed()
            })
        })
        .collect();
    let mut times = Vec::new();
    for call in calls {
        times.push(call.await.unwrap());
    }
    times.sort();
    assert_eq!(times[..2], [Duration::ZERO, Duration::ZERO]);
    assert_eq!(
        times[2], WINDOW,
        "waits until caller 2's send leaves the window"
    );
}

/// The memory store as a shared store looks to its lanes: nothing answered without a round
/// trip, each `reserve_many` a round trip that is counted, batches of up to `batch` calls.
#[derive(Debug)]
struct RoundTrips {
    store: MemoryStore,
    batch: usize,
    trips: std::sync::atomic::AtomicUsize,
}

impl BudgetStore for RoundTrips {
    fn reserve<'a>(
        &'a self,
        keys: &'a [BudgetKey],
        now: Tick,
        unix_ms: i64,
    ) -> crate::store::StoreFuture<'a, Reservation> {
        self.trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.store.reserve(keys, now, unix_ms)
    }
    fn reserve_many<'a>(
        &'a self,
        asks: &'a [&'a [BudgetKey]],
        now: Tick,
        unix_ms: i64,
    ) -> crate::store::StoreFuture<'a, Vec<Reservation>> {
        self.trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.store.reserve_many(asks, now, unix_ms)
    }
    fn batch_limit(&self, _: &[BudgetKey]) -> usize {
        self.batch
    }
    fn try_reserve_now(&self, _: &[BudgetKey], _: Tick, _: i64) -> Option<Reservation> {
        None
    }
    fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, hubgate_engine::DailyExhausted> {
        self.store.estimate_wait(keys, now, unix_ms, ahead)
    }
    fn learn(
        &self,
        lesson: crate::store::Lesson,
        now: Tick,
        unix_ms: i64,
    ) -> crate::store::StoreFuture<'_, ()> {
        self.store.learn(lesson, now, unix_ms)
    }
    fn set_limits(&self, limits: Limits, unix_ms: i64) {
        self.store.set_limits(limits, unix_ms)
    }
    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        self.store.evict_idle(now, unix_ms, idle_ttl)
    }
    fn len(&self) -> usize {
        self.store.len()
    }
    fn snapshot(&self, now: Tick, unix_ms: i64) -> Vec<crate::store::BudgetView> {
        self.store.snapshot(now, unix_ms)
    }
    fn keys(&self) -> Vec<BudgetKey> {
        self.store.keys()
    }
    fn view(&self, key: &BudgetKey, now: Tick, unix_ms: i64) -> Option<crate::store::BudgetView> {
        self.store.view(key, now, unix_ms)
    }
}

/// Queues callers of every priority and weight on a store answering in round trips of up
/// to `batch` calls; whose calls were granted, in order, and the round trips spent.
async fn grant_order(batch: usize) -> (Vec<(Priority, CallerId)>, usize) {
    const LIMIT: u32 = 20;
    let limits = Limits {
        burst: WindowSpec::new(LIMIT, WINDOW),
        ..Limits::default()
    };
    let store = Arc::new(RoundTrips {
        store: MemoryStore::new(limits),
        batch,
        trips: Default::default(),
    });
    let pacer = Pacer::new(
        store.clone(),
        Clock::new(),
        PacerConfig {
            fair_windows: FairWindows {
                burst: (LIMIT, WINDOW),
                ..FairWindows::default()
            },
            ..PacerConfig::unshared(100, Duration::from_secs(300))
        },
    );
    let seats = [
        (Priority::Normal, 1, 2, 12),
        (Priority::Normal, 2, 1, 6),
        (Priority::Low, 3, 1, 3),
        (Priority::High, 4, 1, 2),
        (Priority::Normal, 5, 3, 14),
    ];
    // Caller 9 sent four and is done: its share of the window is kept for it, so the
    // others are held to theirs.
    let early = Ask {
        seat: Seat {
            priority: Priority::Normal,
            caller: 9,
            weight: 1,
        },
        ..ask(OWNER, keys(OWNER), Duration::from_secs(60))
    };
    for _ in 0..4 {
        pacer.admit(early.clone()).await.unwrap();
    }
    let granted = Arc::new(Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    for (priority, caller, weight, count) in seats {
        for _ in 0..count {
            let (pacer, granted) = (pacer.clone(), granted.clone());
            let ask = Ask {
                seat: Seat {
                    priority,
                    caller,
                    weight,
                },
                ..ask(OWNER, keys(OWNER), Duration::from_secs(60))
            };
            calls.push(tokio::spawn(async move {
                pacer.admit(ask).await.unwrap();
                granted.lock().unwrap().push((priority, caller));
            }));
        }
    }
    for call in calls {
        call.await.unwrap();
    }
    let order = granted.lock().unwrap().clone();
    (
        order,
        store.trips.load(std::sync::atomic::Ordering::Relaxed),
    )
}

#[tokio::test(start_paused = true)]
async fn a_batch_grants_in_the_order_calls_went_one_at_a_time() {
    let (one_at_a_time, trips_one) = grant_order(1).await;
    let (batched, trips_batched) = grant_order(256).await;
    assert_eq!(one_at_a_time.len(), 37);
    assert_eq!(
        batched, one_at_a_time,
        "priority, turns and shares give one order"
    );
    assert_eq!(one_at_a_time[..2], [(Priority::High, 4); 2]);
    assert!(
        trips_batched * 3 <= trips_one,
        "{trips_batched} round trips batched, {trips_one} one at a time"
    );
}
