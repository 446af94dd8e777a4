//! Owns every budget by key and the all-or-nothing reservation of several budgets per call.
//!
//! A call spends several budgets at once (burst + daily, search + daily, fewer when exempt).
//! `BudgetBook::reserve` either commits a slot in every one of them or commits nothing and
//! says why: the latest `next_free` over the window budgets, or the daily reset.
//!
//! # Mapping onto one atomic store round trip
//! The reservation is state-passing on purpose: each budget's decision is a pure function
//! of (spec, state, now) — `SlidingLog::check`/`commit`, `DailyBudget::check`/`commit` —
//! and `reserve` is "check all, then commit all". A Redis store runs exactly that as one
//! Lua script per reservation: `KEYS` = the budget keys (all but the credential and global
//! ones carry the portal id, so a `{portal_id}` hash tag keeps them in one cluster slot),
//! `ARGV` = each key's spec (capacity, span in µs / daily limit, offset) and `unix_ms`, and
//! `now` read from `TIME` inside the script so replicas share one clock. State per window
//! key is its send ticks (a list trimmed to capacity) plus `blocked_until`; per daily key
//! `{day, used, exhausted}`. The script returns `granted`, `not_before <tick>` or
//! `daily <reset_ms>`, which is `Reservation` verbatim. Nothing here needs a second round
//! trip: no lock, no read-modify-write split across calls.

use std::collections::HashMap;
use std::time::Duration;

use super::daily::{DailyBudget, DailyExhausted, DailySpec};
use super::time::Tick;
use super::window::{SlidingLog, WindowSpec};

/// Names one budget. Window budgets: `Burst`, `Search`, `Unidentified`, `Global`;
/// counter budgets: `Daily`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BudgetKey {
    /// The rolling burst window of one app installed in one portal.
    Burst {
        /// HubSpot app id.
        app_id: u64,
        /// HubSpot portal (hub) id.
        portal_id: u64,
    },
    /// The per-second CRM search window of one portal.
    Search {
        /// HubSpot portal (hub) id.
        portal_id: u64,
    },
    /// The daily counter of one portal.
    Daily {
        /// HubSpot portal (hub) id.
        portal_id: u64,
    },
    /// A burst window for a credential that could not be resolved to an owner.
    Unidentified {
        /// Hash of the credential (never the credential itself).
        credential_hash: u64,
    },
    /// The one shared window for calls without credentials.
    Global,
}

/// What a budget is configured as; which variant follows from the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSpec {
    /// A rolling window.
    Window(WindowSpec),
    /// A daily counter.
    Daily(DailySpec),
}

/// Default specs per budget kind plus per-owner overrides; consulted when a budget is
/// first used, and applied to live budgets in place by `BudgetBook::set_limits`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Burst window of each (app, portal) without an override.
    pub burst: WindowSpec,
    /// Search window of each portal without an override.
    pub search: WindowSpec,
    /// Burst window of each unresolved credential.
    pub unidentified: WindowSpec,
    /// The window shared by calls without credentials.
    pub global: WindowSpec,
    /// Daily counter of each portal without an override.
    pub daily: DailySpec,
    /// Window specs for particular `Burst`/`Search`/`Unidentified` keys; an override on a
    /// `Daily` key is ignored.
    pub window_overrides: HashMap<BudgetKey, WindowSpec>,
    /// Daily specs per portal id (limit and time zone).
    pub daily_overrides: HashMap<u64, DailySpec>,
}

impl Default for Limits {
    /// HubSpot's documented defaults: 110 per 10 s burst, 5 per second search, no daily
    /// limit; unidentified credentials get the burst default, anonymous calls 10 per second.
    fn default() -> Limits {
        let burst = WindowSpec::new(110, Duration::from_secs(10));
        Limits {
            burst,
            search: WindowSpec::new(5, Duration::from_secs(1)),
            unidentified: burst,
            global: WindowSpec::new(10, Duration::from_secs(1)),
            daily: DailySpec::default(),
            window_overrides: HashMap::new(),
            daily_overrides: HashMap::new(),
        }
    }
}

impl Limits {
    /// The spec a budget named `key` starts with.
    pub fn spec_for(&self, key: &BudgetKey) -> BudgetSpec {
        let default = match *key {
            BudgetKey::Daily { portal_id } => {
                return BudgetSpec::Daily(
                    self.daily_overrides
                        .get(&portal_id)
                        .copied()
                        .unwrap_or(self.daily),
                )
            }
            BudgetKey::Burst { .. } => self.burst,
            BudgetKey::Search { .. } => self.search,
            BudgetKey::Unidentified { .. } => self.unidentified,
            BudgetKey::Global => self.global,
        };
        BudgetSpec::Window(self.window_overrides.get(key).copied().unwrap_or(default))
    }
}

/// One budget's state.
#[derive(Debug, Clone)]
pub enum Budget {
    /// A rolling window.
    Window(SlidingLog),
    /// A daily counter.
    Daily(DailyBudget),
}

impl Budget {
    /// A fresh budget for `spec`.
    pub fn new(spec: BudgetSpec) -> Budget {
        match spec {
            BudgetSpec::Window(w) => Budget::Window(SlidingLog::new(w)),
            BudgetSpec::Daily(d) => Budget::Daily(DailyBudget::new(d)),
        }
    }
}

/// A budget and when it was last asked about, for idle eviction.
#[derive(Debug, Clone)]
struct Entry {
    /// The budget's state.
    budget: Budget,
    /// Latest tick any operation touched it.
    last_used: Tick,
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Every budget had a slot; all were spent at `now`.
    Granted,
    /// Nothing was spent; no earlier tick can succeed (the latest `next_free` over the
    /// window budgets; `Tick::MAX` = never, e.g. limit 0).
    NotBefore(Tick),
    /// Nothing was spent; a daily budget is out until its reset. Takes precedence over
    /// `NotBefore` because waiting for the window would not help.
    DailyExhausted(DailyExhausted),
    /// Nothing was spent; a shared store cannot be reached and `[store] on_failure =
    /// "fail_closed"` refuses calls until it can. `BudgetBook` never answers this.
    StoreUnavailable,
}

/// All budgets by key, created on first use from `Limits`.
#[derive(Debug, Clone)]
pub struct BudgetBook {
    /// Specs for budgets not created yet.
    limits: Limits,
    /// The live budgets; bounded by `evict_idle`. Looked up several times per call, so
    /// hashed with foldhash rather than SipHash.
    budgets: HashMap<BudgetKey, Entry, foldhash::fast::RandomState>,
}

impl BudgetBook {
    /// An empty book.
    pub fn new(limits: Limits) -> BudgetBook {
        BudgetBook {
            limits,
            budgets: HashMap::default(),
        }
    }

    /// The specs used for new budgets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the specs (a config reload) and applies them to every live budget in
    /// place at `unix_ms`: their sends and counts stay, so nothing already spent
    /// is forgotten and nothing waiting has to start over.
    pub fn set_limits(&mut self, limits: Limits, unix_ms: i64) {
        for (key, entry) in &mut self.budgets {
            match (&mut entry.budget, limits.spec_for(key)) {
                (Budget::Window(log), BudgetSpec::Window(spec)) => log.respec(spec),
                (Budget::Daily(day), BudgetSpec::Daily(spec)) => day.respec(spec, unix_ms),
                // A key's kind never changes; a mismatch cannot happen.
                _ => {}
            }
        }
        self.limits = limits;
    }

    /// Live budgets.
    pub fn len(&self) -> usize {
        self.budgets.len()
    }

    /// Whether no budget is live.
    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// The budget named `key`, creating it from `limits` if new, and marking it used.
    fn entry(&mut self, key: &BudgetKey, now: Tick) -> &mut Budget {
        let limits = &self.limits;
        let entry = self.budgets.entry(*key).or_insert_with(|| Entry {
            budget: Budget::new(limits.spec_for(key)),
            last_used: now,
        });
        entry.last_used = entry.last_used.max(now);
        &mut entry.budget
    }

    /// Spends one slot in every budget of `keys` at `now` (`unix_ms` for daily ones), or
    /// none. A key listed twice is spent once.
    pub fn reserve(&mut self, keys: &[BudgetKey], now: Tick, unix_ms: i64) -> Reservation {
        let mut not_before: Option<Tick> = None;
        for key in keys {
            match self.entry(key, now) {
                Budget::Window(log) => {
                    if let Err(t) = log.check(now) {
                        not_before = not_before.max(Some(t));
                    }
                }
                Budget::Daily(day) => {
                    if let Err(e) = day.check(unix_ms) {
                        return Reservation::DailyExhausted(e);
                    }
                }
            }
        }
        if let Some(t) = not_before {
            return Reservation::NotBefore(t);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                continue;
            }
            match self.entry(key, now) {
                Budget::Window(log) => log.commit(now),
                Budget::Daily(day) => day.commit(unix_ms),
            }
        }
        Reservation::Granted
    }

    /// How long until a call spending `keys`, with `ahead` calls queued before it that spend
    /// the same budgets, could be granted; `Duration::MAX` means never. A daily budget with
    /// nothing left answers `Err`; one that runs out within `ahead` calls waits for its reset.
    pub fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, DailyExhausted> {
        let mut wait = Duration::ZERO;
        for key in keys {
            let this = match (self.budgets.get(key), self.limits.spec_for(key)) {
                (Some(Entry { budget, .. }), _) => match budget {
                    Budget::Window(log) => log.estimate_wait(now, ahead),
                    Budget::Daily(day) => daily_wait(day, unix_ms, ahead)?,
                },
                (None, BudgetSpec::Window(spec)) => spec.idle_wait(ahead),
                (None, BudgetSpec::Daily(spec)) => {
                    daily_wait(&DailyBudget::new(spec), unix_ms, ahead)?
                }
            };
            wait = wait.max(this);
        }
        Ok(wait)
    }

    /// HubSpot answered 429 for window budget `key`: hold it full until `until`.
    /// Ignored for daily keys (use `mark_daily_exhausted`).
    pub fn block_until(&mut self, key: &BudgetKey, now: Tick, until: Tick) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.block_until(until);
        }
    }

    /// HubSpot reported `reported` requests left in window budget `key`; lower our view to
    /// match, never raise it. Ignored for daily keys.
    pub fn observe_remaining(&mut self, key: &BudgetKey, now: Tick, reported: u32) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.observe_remaining(now, reported);
        }
    }

    /// HubSpot counted `hub_used` calls in window budget `key`, in an answer received at
    /// `now`; what our log does not explain is left to the other client. Ignored for daily
    /// keys.
    pub fn observe_usage(&mut self, key: &BudgetKey, now: Tick, hub_used: u32, reported_max: u32) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.observe_usage(now, hub_used, reported_max);
        }
    }

    /// A send on window budget `key` admitted by `admitted` left only at `sent` (see
    /// `SlidingLog::observe_late_send`). Ignored for daily keys, which count, not time.
    pub fn observe_late_send(&mut self, key: &BudgetKey, admitted: Tick, sent: Tick) {
        if let Budget::Window(log) = self.entry(key, sent) {
            log.observe_late_send(admitted, sent);
        }
    }

    /// HubSpot answered 429 for window budget `key` at `now`. Ignored for daily keys.
    pub fn observe_rejection(&mut self, key: &BudgetKey, now: Tick) {
        if let Budget::Window(log) = self.entry(key, now) {
            log.observe_rejection(now);
        }
    }

    /// HubSpot answered 429 `DAILY` for `portal_id`: refuse until its local midnight.
    pub fn mark_daily_exhausted(&mut self, portal_id: u64, now: Tick, unix_ms: i64) {
        if let Budget::Daily(day) = self.entry(&BudgetKey::Daily { portal_id }, now) {
            day.mark_exhausted(unix_ms);
        }
    }

    /// HubSpot reported `reported` daily requests left for `portal_id`.
    pub fn observe_daily_remaining(
        &mut self,
        portal_id: u64,
        now: Tick,
        unix_ms: i64,
        reported: u64,
    ) {
        if let Budget::Daily(day) = self.entry(&BudgetKey::Daily { portal_id }, now) {
            day.observe_remaining(unix_ms, reported);
        }
    }

    /// Every live budget, in no particular order, for admin views and metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&BudgetKey, &Budget)> + '_ {
        self.budgets.iter().map(|(k, e)| (k, &e.budget))
    }

    /// The live budget named `key`, for admin views; `None` if not live.
    pub fn get(&self, key: &BudgetKey) -> Option<&Budget> {
        self.budgets.get(key).map(|e| &e.budget)
    }

    /// Forgets budgets untouched for `idle_ttl` whose state is indistinguishable from a
    /// fresh one, so eviction never changes an answer. Returns how many were evicted.
    ///
    /// A daily budget is only idle once its day is over (or nothing was spent): dropping a
    /// live count would hand the portal a second allowance.
    pub fn evict_idle(&mut self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        let before = self.budgets.len();
        self.budgets.retain(|_, e| {
            let quiet = e.last_used.saturating_add(idle_ttl) <= now;
            let idle = match &e.budget {
                Budget::Window(log) => log.is_idle(now),
                Budget::Daily(day) => day.is_idle(unix_ms),
            };
            !(quiet && idle)
        });
        before - self.budgets.len()
    }
}

/// The wait a daily budget imposes on the call with `ahead` calls before it.
fn daily_wait(day: &DailyBudget, unix_ms: i64, ahead: usize) -> Result<Duration, DailyExhausted> {
    day.check(unix_ms)?;
    let ahead = u64::try_from(ahead).unwrap_or(u64::MAX);
    if day.remaining(unix_ms) > ahead {
        return Ok(Duration::ZERO);
    }
    let reset = day.reset_at(unix_ms);
    let ms = u64::try_from(reset.saturating_sub(unix_ms)).unwrap_or(0);
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
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
        // Stated in the report and README: a live window budget costs its map slot plus
        // `capacity` ticks of log; keep these from growing unnoticed.
        assert!(size_of::<SlidingLog>() <= 80);
        assert!(size_of::<DailyBudget>() <= 40);
        assert!(size_of::<BudgetKey>() <= 24);
        assert!(size_of::<Entry>() <= 88);
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
}
