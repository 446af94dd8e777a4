//! How an owner's callers split a window: each caller's recent sends, the share of the
//! window each active caller may use, and the slots kept for `high` calls.

use std::time::Duration;

use hubgate_engine::{BudgetKey, CallerId, Priority, Seat, Tick};

use crate::hubspot::Keys;

/// The active callers of one priority, for splitting a window between them.
#[derive(Debug)]
pub(super) struct Split {
    pub(super) total_weight: u64,
    pub(super) callers: usize,
}

/// Each caller's sends within the lane's window. Deficit round robin alone orders the
/// waiting calls, but a caller with one call in flight is not waiting when a window's
/// slots free up all at once; its share is kept for it while it is active (sent within
/// the window), and given to the others once it is not.
#[derive(Debug, Clone)]
pub(super) struct Shares {
    /// The lane's window: capacity and length (capacity 0: no sharing, e.g. exempt calls).
    pub(super) window: (u32, Duration),
    callers: std::collections::HashMap<CallerId, CallerSends, foldhash::fast::RandomState>,
}

#[derive(Debug, Clone)]
struct CallerSends {
    sends: std::collections::VecDeque<Tick>,
    weight: u32,
    /// Callers share with callers of their own priority; higher ones are served first anyway.
    priority: Priority,
}

impl Shares {
    pub(super) fn new(window: (u32, Duration)) -> Shares {
        Shares {
            window,
            callers: std::collections::HashMap::default(),
        }
    }

    pub(super) fn prune(&mut self, now: Tick) {
        let span = self.window.1;
        self.callers.retain(|_, c| {
            while c
                .sends
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= span)
            {
                c.sends.pop_front();
            }
            !c.sends.is_empty()
        });
    }

    pub(super) fn record(&mut self, seat: Seat, now: Tick) {
        if self.window.0 == 0 {
            return;
        }
        let entry = self
            .callers
            .entry(seat.caller)
            .or_insert_with(|| CallerSends {
                sends: std::collections::VecDeque::new(),
                weight: seat.weight,
                priority: seat.priority,
            });
        entry.weight = seat.weight.max(1);
        entry.priority = seat.priority;
        entry.sends.push_back(now);
    }

    /// How the window splits between the active callers of `priority`: those that sent
    /// within it and those `waiting` (which includes whoever is asking, each caller once:
    /// a queue's ring of callers, or the one asking). Worked out once per decision, then
    /// asked per caller with `allows`; counted in place, without building a set per call.
    pub(super) fn split(&self, priority: Priority, waiting: &[(CallerId, u32)]) -> Split {
        let mut split = Split {
            total_weight: 0,
            callers: 0,
        };
        for sends in self.callers.values().filter(|s| s.priority == priority) {
            split.total_weight += u64::from(sends.weight.max(1));
            split.callers += 1;
        }
        for &(caller, weight) in waiting {
            if self
                .callers
                .get(&caller)
                .is_none_or(|s| s.priority != priority)
            {
                split.total_weight += u64::from(weight.max(1));
                split.callers += 1;
            }
        }
        split
    }

    /// Whether `caller` may send now without taking the share of another active caller.
    pub(super) fn allows(&self, split: &Split, caller: CallerId, weight: u32) -> bool {
        let limit = self.window.0;
        if limit == 0 || split.callers <= 1 {
            return true;
        }
        let share =
            (u64::from(limit) * u64::from(weight.max(1)) / split.total_weight.max(1)).max(1);
        let sent = self.callers.get(&caller).map_or(0, |c| c.sends.len()) as u64;
        sent < share
    }

    /// Callers of `priority` active in the window that have nothing waiting: their share
    /// is being kept.
    pub(super) fn idle_but_active(&self, priority: Priority, waiting: &[(CallerId, u32)]) -> bool {
        self.callers
            .iter()
            .any(|(c, s)| s.priority == priority && !waiting.iter().any(|(w, _)| w == c))
    }

    /// When the next caller's oldest send leaves the window.
    pub(super) fn next_release(&self) -> Option<Tick> {
        self.callers
            .values()
            .filter_map(|c| c.sends.front())
            .min()
            .map(|t| t.saturating_add(self.window.1))
    }
}

/// The share of each window kept for `high` calls, in slots.
#[derive(Debug, Clone, Copy, Default)]
pub struct HighReserve {
    /// Slots of a burst-like window kept free for `high` calls.
    pub burst_slots: usize,
    /// Slots of a search window kept free for `high` calls.
    pub search_slots: usize,
    /// How long after the last `high` call the reserve is kept; after that it is given
    /// to the other calls (work-conserving).
    pub memory: Duration,
}

/// The windows callers share, per lane kind: capacity and length.
#[derive(Debug, Clone, Copy, Default)]
pub struct FairWindows {
    pub burst: (u32, Duration),
    pub search: (u32, Duration),
    pub token: (u32, Duration),
}

impl HighReserve {
    pub(super) fn slots_for(&self, keys: &Keys) -> usize {
        keys.iter()
            .map(|k| match k {
                BudgetKey::Search { .. } => self.search_slots,
                // Every token call keeps an app's access alive: none is held back for another.
                BudgetKey::Daily { .. } | BudgetKey::Token => 0,
                _ => self.burst_slots,
            })
            .max()
            .unwrap_or(0)
    }
}
