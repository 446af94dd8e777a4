//! Budget state of a single gateway, in memory: one book behind one lock.

use std::sync::Mutex;
use std::time::Duration;

use hubgate_engine::{BudgetBook, BudgetKey, DailyExhausted, Limits, Reservation, Tick};

use super::budget_store::{apply_lesson, BudgetStore, BudgetView, Lesson, StoreFuture};

/// Budget state of a single gateway, in memory.
#[derive(Debug)]
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

    fn learn(&self, lesson: Lesson, now: Tick, unix_ms: i64) -> StoreFuture<'_, ()> {
        apply_lesson(&mut self.book(), lesson, now, unix_ms);
        Box::pin(std::future::ready(()))
    }

    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        self.book().evict_idle(now, unix_ms, idle_ttl)
    }

    fn set_limits(&self, limits: Limits, unix_ms: i64) {
        self.book().set_limits(limits, unix_ms);
    }

    fn len(&self) -> usize {
        self.book().len()
    }

    fn snapshot(&self, now: Tick, unix_ms: i64) -> Vec<BudgetView> {
        BudgetView::all(&self.book(), now, unix_ms)
    }

    fn keys(&self) -> Vec<BudgetKey> {
        self.book().iter().map(|(key, _)| *key).collect()
    }

    fn view(&self, key: &BudgetKey, now: Tick, unix_ms: i64) -> Option<BudgetView> {
        let book = self.book();
        book.get(key)
            .map(|budget| BudgetView::of(*key, budget, now, unix_ms))
    }
}
