//! Which of a lane's waiters its driver reserves for in one round trip: the calls it would
//! serve one at a time, in that order (priority, the callers' turns and shares, the high
//! reserve), planned on a copy of the queue so that nothing leaves the queue before it is
//! granted.

use hubgate_engine::{CallerId, FairQueue, Priority, QueueTicket, Queued, Seat, Tick};

use super::lane::{LaneState, Waiter};
use super::shares::Shares;
use super::PacerInner;
use crate::hubspot::Keys;

/// A call the driver reserves for: its ticket in the lane and the budgets it spends.
pub(super) type Planned = (QueueTicket, Keys);

/// What a plan keeps of a waiter.
#[derive(Debug)]
struct Copied {
    keys: Keys,
    seat: Seat,
}

/// A waiter, real or in a plan's copy of the queue.
trait Asking {
    fn keys(&self) -> &Keys;
}

impl Asking for Waiter {
    fn keys(&self) -> &Keys {
        &self.keys
    }
}

impl Asking for Copied {
    fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// The calls to reserve for now, at most the store's batch limit for the first one's
/// budgets, in the order the driver would grant them one at a time: each next one is
/// chosen as if the ones before it had been granted (their callers' turns and shares
/// spent, the high reserve counted behind them). `Err`: none may go now; look again at
/// that tick.
pub(super) fn plan(
    inner: &PacerInner,
    state: &LaneState,
    (now, unix_ms): (Tick, i64),
) -> Result<Vec<Planned>, Tick> {
    let first = next(
        inner,
        state,
        (&state.queue, &state.shares),
        (now, unix_ms),
        0,
    )?;
    if let Some(until) = inner.store.known_wait(&first.item.keys, now) {
        return Err(state.queue.next_deadline().map_or(until, |d| d.min(until)));
    }
    let (ticket, seat) = (first.ticket, first.item.seat);
    let limit = inner.store.batch_limit(&first.item.keys);
    let mut batch = vec![(ticket, first.item.keys.clone())];
    if limit <= 1 || state.queue.len() <= 1 {
        return Ok(batch);
    }
    let mut queue = state.queue.shadow(limit, |waiter| Copied {
        keys: waiter.keys.clone(),
        seat: waiter.seat,
    });
    let mut shares = state.shares.clone();
    queue.take(ticket);
    shares.record(seat, now);
    while batch.len() < limit && !queue.is_empty() {
        let Ok(head) = next(inner, state, (&queue, &shares), (now, unix_ms), batch.len()) else {
            break;
        };
        let Some(head) = queue.take(head.ticket) else {
            break;
        };
        shares.record(head.item.seat, now);
        batch.push((head.ticket, head.item.keys));
    }
    Ok(batch)
}

/// The waiter that goes next with `planned` calls granted before it, or when to look
/// again: a fair head among the highest priority with waiters, unless every caller there
/// is at its share (then the share is held for an active caller between calls, or, if
/// there is none, the next in turn goes), and only once the high reserve allows it.
fn next<'q, T: Asking>(
    inner: &PacerInner,
    state: &LaneState,
    (queue, shares): (&'q FairQueue<T>, &Shares),
    (now, unix_ms): (Tick, i64),
    planned: usize,
) -> Result<&'q Queued<T>, Tick> {
    let top = queue.peek().map_or(Priority::Normal, |(_, p)| p);
    let waiting: Vec<(CallerId, u32)> = queue.waiting_callers(top).collect();
    let split = shares.split(top, &waiting);
    let fair = queue
        .peek_eligible(|c| {
            waiting
                .iter()
                .find(|(w, _)| *w == c)
                .is_some_and(|&(_, weight)| shares.allows(&split, c, weight))
        })
        .map(|(head, priority, _)| (head, priority));
    let chosen = match fair {
        Some(head) => Some(head),
        None if shares.idle_but_active(top, &waiting) => None,
        None => queue.peek(),
    };
    let until = match chosen {
        Some((head, priority)) => {
            let keys = head.item.keys();
            let hold = inner.reserve_wait_behind(state, priority, keys, (now, unix_ms), planned);
            if hold.is_zero() {
                return Ok(head);
            }
            now.saturating_add(hold)
        }
        None => shares.next_release().unwrap_or(now),
    };
    Err(queue.next_deadline().map_or(until, |d| d.min(until)))
}
