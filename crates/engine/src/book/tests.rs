//! The budget book against its contract: all-or-nothing reservations, estimates, lessons
//! from HubSpot, overrides, reloads and eviction.

use super::*;

const MS: u64 = 1_000;
const APP: BudgetKey = BudgetKey::Burst {
    app_id: 1,
    portal_id: 7,
};
const SEARCH: BudgetKey = BudgetKey::Search { portal_id: 7 };
const DAILY: BudgetKey = BudgetKey::Daily { portal_id: 7 };

fn limits(burst: u32, daily: u64) -> Limits {
    let burst = WindowSpec::new(burst, Duration::from_millis(100));
    Limits {
        burst,
        unidentified: burst,
        search: WindowSpec::new(2, Duration::from_millis(10)),
        daily: DailySpec {
            limit: daily,
            utc_offset_secs: 0,
        },
        ..Limits::default()
    }
}

fn used(book: &BudgetBook, key: &BudgetKey, now: Tick, unix_ms: i64) -> u64 {
    match book.get(key) {
        Some(Budget::Window(log)) => u64::from(log.used(now)),
        Some(Budget::Daily(day)) => day.used(unix_ms),
        None => 0,
    }
}

#[test]
fn failing_daily_budget_commits_nothing_in_burst() {
    let mut book = BudgetBook::new(limits(10, 1));
    assert_eq!(
        book.reserve(&[APP, DAILY], Tick(0), 0),
        Reservation::Granted
    );
    let r = book.reserve(&[APP, DAILY], Tick(MS), 0);
    assert_eq!(
        r,
        Reservation::DailyExhausted(DailyExhausted {
            resets_at_unix_ms: 86_400_000
        })
    );
    assert_eq!(used(&book, &APP, Tick(MS), 0), 1);
    assert_eq!(used(&book, &DAILY, Tick(MS), 0), 1);
}

#[test]
fn failing_window_commits_nothing_and_not_before_is_the_max() {
    let mut book = BudgetBook::new(limits(2, 100));
    book.reserve(&[APP], Tick(0), 0);
    book.reserve(&[APP], Tick(30 * MS), 0);
    book.reserve(&[SEARCH], Tick(30 * MS), 0);
    book.reserve(&[SEARCH], Tick(30 * MS), 0);
    // Burst frees at 100 ms, search at 40 ms: the answer is the later one.
    let keys = [SEARCH, APP, DAILY];
    assert_eq!(
        book.reserve(&keys, Tick(30 * MS), 0),
        Reservation::NotBefore(Tick(100 * MS))
    );
    assert_eq!(used(&book, &DAILY, Tick(30 * MS), 0), 0);
    assert_eq!(used(&book, &SEARCH, Tick(30 * MS), 0), 2);
    assert_eq!(
        book.reserve(&keys, Tick(40 * MS), 0),
        Reservation::NotBefore(Tick(100 * MS))
    );
    assert_eq!(used(&book, &SEARCH, Tick(40 * MS), 0), 0);
    assert_eq!(book.reserve(&keys, Tick(100 * MS), 0), Reservation::Granted);
    assert_eq!(used(&book, &SEARCH, Tick(100 * MS), 0), 1);
    assert_eq!(used(&book, &DAILY, Tick(100 * MS), 0), 1);
    // The send at 30 ms still counts; the one at 0 has left.
    assert_eq!(used(&book, &APP, Tick(100 * MS), 0), 2);
}

#[test]
fn duplicate_keys_spend_once() {
    let mut book = BudgetBook::new(limits(1, 0));
    assert_eq!(book.reserve(&[APP, APP], Tick(0), 0), Reservation::Granted);
    assert_eq!(used(&book, &APP, Tick(0), 0), 1);
}

#[test]
fn empty_key_list_is_always_granted() {
    let mut book = BudgetBook::new(limits(0, 0));
    assert_eq!(book.reserve(&[], Tick(0), 0), Reservation::Granted);
    assert!(book.is_empty());
}

#[test]
fn overrides_apply_per_owner() {
    let mut l = limits(1, 0);
    let big = BudgetKey::Burst {
        app_id: 2,
        portal_id: 7,
    };
    l.window_overrides
        .insert(big, WindowSpec::new(3, Duration::from_millis(100)));
    l.daily_overrides.insert(
        9,
        DailySpec {
            limit: 1,
            utc_offset_secs: 3_600,
        },
    );
    let mut book = BudgetBook::new(l);
    for _ in 0..3 {
        assert_eq!(book.reserve(&[big], Tick(0), 0), Reservation::Granted);
    }
    assert!(matches!(
        book.reserve(&[big], Tick(0), 0),
        Reservation::NotBefore(_)
    ));
    assert_eq!(book.reserve(&[APP], Tick(0), 0), Reservation::Granted);
    let other = BudgetKey::Daily { portal_id: 9 };
    book.reserve(&[other], Tick(0), 0);
    assert_eq!(
        book.reserve(&[other], Tick(0), 0),
        Reservation::DailyExhausted(DailyExhausted {
            resets_at_unix_ms: 86_400_000 - 3_600_000
        })
    );
}

#[test]
fn zero_limit_means_never() {
    let mut book = BudgetBook::new(limits(0, 0));
    assert_eq!(
        book.reserve(&[APP, DAILY], Tick(5), 0),
        Reservation::NotBefore(Tick::MAX)
    );
    assert_eq!(book.estimate_wait(&[APP], Tick(5), 0, 0), Ok(Duration::MAX));
}

#[test]
fn estimate_covers_unknown_budgets_and_daily_runout() {
    let mut book = BudgetBook::new(limits(2, 3));
    let est = |b: &BudgetBook, ahead| b.estimate_wait(&[APP, DAILY], Tick(0), 0, ahead);
    assert_eq!(est(&book, 0), Ok(Duration::ZERO));
    assert_eq!(est(&book, 2), Ok(Duration::from_millis(100)));
    assert_eq!(est(&book, 3), Ok(Duration::from_secs(86_400)));
    book.reserve(&[APP, DAILY], Tick(0), 0);
    assert_eq!(est(&book, 1), Ok(Duration::from_millis(100)));
    book.reserve(&[APP, DAILY], Tick(100 * MS), 0);
    book.reserve(&[APP, DAILY], Tick(100 * MS), 0);
    assert!(est(&book, 0).is_err());
}

#[test]
fn eviction_only_drops_budgets_that_look_fresh() {
    let mut book = BudgetBook::new(limits(2, 5));
    book.reserve(&[APP, DAILY], Tick(0), 0);
    let other = BudgetKey::Unidentified { credential_hash: 3 };
    book.reserve(&[other], Tick(0), 0);
    book.block_until(&BudgetKey::Global, Tick(0), Tick(10_000 * MS));
    assert_eq!(book.len(), 4);
    let ttl = Duration::from_millis(50);
    // Within the window nothing is idle.
    assert_eq!(book.evict_idle(Tick(60 * MS), 0, ttl), 0);
    // Windows have slid; the daily count still matters today; Global is blocked.
    assert_eq!(book.evict_idle(Tick(200 * MS), 0, ttl), 2);
    assert!(book.get(&DAILY).is_some());
    assert!(book.get(&BudgetKey::Global).is_some());
    // Next day the count is stale and the block is over.
    assert_eq!(book.evict_idle(Tick(10_000 * MS), 86_400_000, ttl), 2);
    assert!(book.is_empty());
}

#[test]
fn recent_use_keeps_a_budget_past_its_window() {
    let mut book = BudgetBook::new(limits(2, 0));
    book.reserve(&[APP], Tick(0), 0);
    let ttl = Duration::from_secs(1);
    assert_eq!(book.evict_idle(Tick(500 * MS), 0, ttl), 0);
    assert_eq!(book.evict_idle(Tick(1_000 * MS), 0, ttl), 1);
}

#[test]
fn memory_per_budget_is_small_and_stated() {
    use std::mem::size_of;
    // As the crate docs state: a live window budget costs its map slot plus
    // `capacity` ticks of log; keep these from growing unnoticed. The outside-use model,
    // the measured answer delay, the probe and the spacing take 136 of a log's bytes.
    assert!(size_of::<SlidingLog>() <= 192);
    assert!(size_of::<DailyBudget>() <= 40);
    assert!(size_of::<BudgetKey>() <= 24);
    assert!(size_of::<Entry>() <= 200);
    let mut log = SlidingLog::new(WindowSpec::new(110, Duration::from_secs(10)));
    assert_eq!(log.log_capacity(), 0);
    log.commit(Tick(0));
    assert!(log.log_capacity() >= 110 && log.log_capacity() < 2 * 110);
}

#[test]
fn new_limits_apply_to_live_budgets_in_place() {
    let mut book = BudgetBook::new(limits(2, 3));
    assert_eq!(
        book.reserve(&[APP, DAILY], Tick(0), 0),
        Reservation::Granted
    );
    assert_eq!(
        book.reserve(&[APP, DAILY], Tick(0), 0),
        Reservation::Granted
    );
    assert_eq!(
        book.reserve(&[APP], Tick(0), 0),
        Reservation::NotBefore(Tick(100 * MS))
    );
    // Raised: the two sends still count, two more slots are free at once.
    book.set_limits(limits(4, 3), 0);
    assert_eq!(book.reserve(&[APP], Tick(MS), 0), Reservation::Granted);
    assert_eq!(book.reserve(&[APP], Tick(MS), 0), Reservation::Granted);
    assert_eq!(used(&book, &APP, Tick(MS), 0), 4);
    // Lowered: the newest two sends fill the window until they leave it.
    book.set_limits(limits(2, 2), 0);
    assert_eq!(
        book.reserve(&[APP], Tick(2 * MS), 0),
        Reservation::NotBefore(Tick(101 * MS))
    );
    assert_eq!(
        book.reserve(&[APP], Tick(101 * MS), 0),
        Reservation::Granted
    );
    // The daily count is kept: 2 spent of a new limit of 2.
    assert!(matches!(
        book.reserve(&[DAILY], Tick(101 * MS), 0),
        Reservation::DailyExhausted(_)
    ));
    book.set_limits(limits(2, 5), 0);
    assert_eq!(
        book.reserve(&[DAILY], Tick(101 * MS), 0),
        Reservation::Granted
    );
    assert_eq!(used(&book, &DAILY, Tick(101 * MS), 0), 3);
    // Budgets created later use the new specs.
    assert_eq!(book.limits().daily.limit, 5);
}

#[test]
fn a_new_time_zone_keeps_todays_count_and_moves_the_reset() {
    let mut book = BudgetBook::new(limits(2, 1));
    let noon = 12 * 3_600_000;
    assert_eq!(book.reserve(&[DAILY], Tick(0), noon), Reservation::Granted);
    let mut moved = limits(2, 1);
    moved.daily.utc_offset_secs = -3 * 3600;
    book.set_limits(moved, noon);
    assert_eq!(
        book.reserve(&[DAILY], Tick(0), noon),
        Reservation::DailyExhausted(DailyExhausted {
            resets_at_unix_ms: 86_400_000 + 3 * 3_600_000
        })
    );
}

#[test]
fn feedback_reaches_the_named_budget() {
    let mut book = BudgetBook::new(limits(10, 100));
    book.observe_remaining(&APP, Tick(0), 4);
    assert_eq!(used(&book, &APP, Tick(0), 0), 6);
    book.block_until(&APP, Tick(0), Tick(5 * MS));
    assert_eq!(
        book.reserve(&[APP], Tick(0), 0),
        Reservation::NotBefore(Tick(5 * MS))
    );
    book.observe_daily_remaining(7, Tick(0), 0, 40);
    assert_eq!(used(&book, &DAILY, Tick(0), 0), 60);
    book.mark_daily_exhausted(7, Tick(0), 0);
    assert!(matches!(
        book.reserve(&[DAILY], Tick(0), 0),
        Reservation::DailyExhausted(_)
    ));
    // Window feedback on a daily key, and daily on a window key, is ignored.
    book.observe_remaining(&DAILY, Tick(0), 0);
    book.block_until(&DAILY, Tick(0), Tick::MAX);
    assert_eq!(used(&book, &DAILY, Tick(0), 0), 60);
}
