//! The pacer's behaviour in virtual time: bursts, windows, deadlines, queue bounds, shares
//! and reloads, with tokio's clock paused.

use super::*;
use crate::hubspot::{budgets_for, CallClass};
use crate::store::MemoryStore;
use hubgate_engine::{DailySpec, Limits, WindowSpec};

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
    assert_eq!(pacer.admit(as_caller(2)).await, Ok(Duration::ZERO));
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
