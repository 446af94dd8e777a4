//! Where budget state lives: the store trait the pacer reserves through, and the
//! in-memory store of a single gateway.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::{BudgetBook, BudgetKey, DailyExhausted, Limits, Reservation, Tick};

/// A boxed future, so the trait stays object-safe for a network-backed store.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Budget state behind one atomic operation per send. A shared store (Redis) answers
/// `reserve` in one round trip; the in-memory store answers `try_reserve_now` at once.
pub trait BudgetStore: Send + Sync + 'static {
    /// All-or-nothing: one slot in every budget of `keys`, or nothing and the reason.
    fn reserve<'a>(
        &'a self,
        keys: &'a [BudgetKey],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Reservation>;

    /// The same as `reserve` when the store can answer without I/O; `None` when it cannot,
    /// and the caller must queue and let the lane's driver do the round trip.
    fn try_reserve_now(&self, keys: &[BudgetKey], now: Tick, unix_ms: i64) -> Option<Reservation>;

    /// How long a call spending `keys` with `ahead` calls before it would wait, from the
    /// store's (possibly local) view; `Err` when a daily budget has nothing left.
    fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, DailyExhausted>;

    /// Drops budgets idle for `idle_ttl`; returns how many.
    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize;

    /// How many budgets are held.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Budget state of a single gateway, in memory.
pub struct MemoryStore {
    /// One lock for every budget: a reservation touches up to three budgets of different
    /// owners (burst, search and daily keys cross owners), holds the lock for well under a
    /// microsecond (see BENCHMARKS.md), and never across an `.await`.
    book: Mutex<BudgetBook>,
}

impl MemoryStore {
    pub fn new(limits: Limits) -> MemoryStore {
        MemoryStore {
            book: Mutex::new(BudgetBook::new(limits)),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, BudgetBook> {
        // A panic while holding the lock cannot leave the book half-updated in a way that
        // breaks a limit (commits happen after all checks), so keep serving.
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the book under the lock (admin views, metrics).
    pub fn with_book<R>(&self, read: impl FnOnce(&BudgetBook) -> R) -> R {
        read(&self.book())
    }
}

impl BudgetStore for MemoryStore {
    fn reserve<'a>(
        &'a self,
        keys: &'a [BudgetKey],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Reservation> {
        let reservation = self.book().reserve(keys, now, unix_ms);
        Box::pin(std::future::ready(reservation))
    }

    fn try_reserve_now(&self, keys: &[BudgetKey], now: Tick, unix_ms: i64) -> Option<Reservation> {
        Some(self.book().reserve(keys, now, unix_ms))
    }

    fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, DailyExhausted> {
        self.book().estimate_wait(keys, now, unix_ms, ahead)
    }

    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        self.book().evict_idle(now, unix_ms, idle_ttl)
    }

    fn len(&self) -> usize {
        self.book().len()
    }
}
