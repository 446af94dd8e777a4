//! One owner's lane: the queue of calls of one kind waiting for the same window, its
//! driver's state, and how a verdict reaches a waiting call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hubgate_engine::{BudgetKey, FairQueue, QueueTicket, Reservation, Seat, Tick};
use tokio::sync::{oneshot, Notify};
use tower::retry::budget::TpsBudget;

use super::shares::{FairWindows, Shares};
use crate::hubspot::Keys;
use crate::pace::clock::Clock;

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The owner's queue already holds `[queue] max_depth_per_owner` calls; `drain` is
    /// about how long until it has room again.
    QueueFull { depth: usize, drain: Duration },
    /// The estimated wait exceeds the call's deadline, so it was refused on arrival.
    DeadlineUnmeetable {
        estimate: Duration,
        deadline: Duration,
    },
    /// The call's deadline passed while it waited; `retry_after` is the wait a new call
    /// would face now.
    DeadlineExpired {
        waited: Duration,
        retry_after: Duration,
    },
    /// A daily budget has nothing left until its reset.
    DailyExhausted { resets_at_unix_ms: i64 },
    /// The shared budget store is unreachable and `[store] on_failure = "fail_closed"`.
    StoreUnavailable,
}

/// A call's verdict as its lane's driver delivers it.
pub(super) type Verdict = Result<Admission, Refusal>;

/// A call let through: how long it waited, and the tick its budgets were reserved at,
/// which is where their logs stamped its send. Its answer's lessons must start from that
/// stamp and no later one: a later tick could find the send of a call admitted after it
/// and already answered, and move that one instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub waited: Duration,
    pub at: Tick,
}

/// What waits in a lane.
#[derive(Debug)]
pub(super) struct Waiter {
    /// The budgets the call spends.
    pub(super) keys: Keys,
    /// Its caller and weight, to count its send against the caller's share.
    pub(super) seat: Seat,
    /// Where the verdict goes; the caller's future holds the receiver.
    pub(super) reply: oneshot::Sender<Verdict>,
    /// When the call arrived, for `X-Hubgate-Queue-Ms`.
    pub(super) arrived: Tick,
}

/// Lanes split an owner's calls by the window they wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum LaneKind {
    /// Calls spending a burst-like window (burst, unidentified, anonymous).
    Burst,
    /// CRM searches, which spend the portal's search window.
    Search,
    /// OAuth token calls, which spend the token window and nothing else.
    Token,
    /// Calls spending no window (exempt ones with only a daily budget).
    Other,
}

impl LaneKind {
    pub(super) const ALL: [LaneKind; 3] = [LaneKind::Burst, LaneKind::Search, LaneKind::Other];

    /// The window this kind's callers split.
    pub(super) fn fair_window(self, windows: &FairWindows) -> (u32, Duration) {
        match self {
            LaneKind::Burst => windows.burst,
            LaneKind::Search => windows.search,
            LaneKind::Token => windows.token,
            LaneKind::Other => (0, Duration::ZERO),
        }
    }

    pub(super) fn of(keys: &Keys) -> LaneKind {
        if keys.iter().any(|k| matches!(k, BudgetKey::Search { .. })) {
            LaneKind::Search
        } else if keys.contains(&BudgetKey::Token) {
            LaneKind::Token
        } else if keys.iter().any(|k| !matches!(k, BudgetKey::Daily { .. })) {
            LaneKind::Burst
        } else {
            LaneKind::Other
        }
    }
}

/// One owner's queue of one kind and the state of its driver.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) state: Mutex<LaneState>,
    /// Wakes the driver early: a new waiter may carry an earlier deadline or a higher
    /// priority, or the head left.
    pub(super) wake: Notify,
    /// First tries deposit, retries withdraw: retries stay a share of recent traffic.
    /// Replaced when a reload changes the budget's terms.
    pub(super) retry_budget: ArcSwap<TpsBudget>,
}

#[derive(Debug)]
pub(super) struct LaneState {
    pub(super) queue: FairQueue<Waiter>,
    /// Whether a driver task owns this lane now; at most one does.
    pub(super) driving: bool,
    /// When the lane was last used, for idle eviction.
    pub(super) idle_since: Tick,
    /// When a `high` call last asked; while that is recent, other calls leave the
    /// high reserve free.
    pub(super) last_high: Option<Tick>,
    /// Each caller's recent sends, so callers active together split the window.
    pub(super) shares: Shares,
}

/// Removes a waiter whose caller went away before its verdict. It owns its `Arc<Lane>`:
/// a borrowed lane held across the await trips rustc's higher-ranked `Send` check when
/// the future is boxed further up (rust-lang/rust#64552).
#[derive(Debug)]
pub(super) struct LeaveOnDrop {
    pub(super) lane: Arc<Lane>,
    pub(super) ticket: Option<QueueTicket>,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let mut state = lock(&self.lane.state);
            let was_head = state.queue.peek().map(|(q, _)| q.ticket) == Some(ticket);
            state.queue.remove(ticket);
            if was_head {
                self.lane.wake.notify_one();
            }
        }
    }
}

/// Delivers the head's verdict, or returns when to try again (the store's "not before",
/// or an earlier deadline in the queue).
pub(super) fn settle(
    state: &mut LaneState,
    ticket: QueueTicket,
    reservation: Reservation,
    reserved_at: Tick,
    clock: &Clock,
) -> Option<Tick> {
    let verdict = match reservation {
        Reservation::NotBefore(not_before) => {
            return Some(
                state
                    .queue
                    .next_deadline()
                    .map_or(not_before, |d| d.min(not_before)),
            );
        }
        Reservation::Granted => Ok(clock.now()),
        Reservation::DailyExhausted(e) => Err(Refusal::DailyExhausted {
            resets_at_unix_ms: e.resets_at_unix_ms,
        }),
        Reservation::StoreUnavailable => Err(Refusal::StoreUnavailable),
    };
    // When the ticket is gone, its caller left while the slot was being reserved: the
    // slot stays spent (the safe side of the limit) and the next waiter gets its turn.
    if let Some(head) = state.queue.take(ticket) {
        if verdict.is_ok() {
            state.shares.record(head.item.seat, clock.now());
        }
        let verdict = verdict.map(|sent| Admission {
            waited: sent.saturating_duration_since(head.item.arrived),
            at: reserved_at,
        });
        let _ = head.item.reply.send(verdict);
    }
    None
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Lane state stays consistent across a panic (each step is a whole queue operation).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
