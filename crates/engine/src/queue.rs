//! Owns the bounded FIFO of calls waiting for one quota owner, with per-call deadlines.
//!
//! The queue decides admission (depth, deadline already unmeetable) and gives each waiter
//! a ticket so a caller that disconnects leaves without spending budget. It does not pace:
//! the caller pops the head when `BudgetBook::reserve` grants it.
//!
//! # Growing into fairness and priority lanes
//! Deficit round robin between callers and priority lanes go on top, not inside: an
//! owner's scheduler keeps one `OwnerQueue` per (lane, caller) and picks whose head goes
//! next (lanes by reserve share, callers within a lane by deficit and weight), while each
//! `OwnerQueue` stays a plain FIFO with deadlines and tickets. Depth limits then apply to
//! the scheduler's total, and the wait estimate uses the waiter's position in the
//! interleaved order (about `position × active callers` for equal weights) instead of
//! `len()`. Retries re-enter with `push_front`, whose tickets sort before every other,
//! so the head-of-lane rule costs nothing extra.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::time::Tick;

/// Names one waiter, to `remove` it when its caller goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueTicket(u64);

impl QueueTicket {
    /// A ticket from another queue's numbering (`fair` shares the scheme).
    pub(crate) const fn from_raw(raw: u64) -> QueueTicket {
        QueueTicket(raw)
    }
}

/// Why a call was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The owner already has `max_depth` waiters (503 at once).
    QueueFull,
    /// The estimated wait already passes the deadline (429 with the estimate as
    /// `Retry-After`).
    DeadlineUnmeetable {
        /// The wait that was estimated; `Duration::MAX` means never.
        estimate: Duration,
    },
}

/// A call that was not queued, handed back to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected<T> {
    /// Why it was refused.
    pub reason: RejectReason,
    /// The call itself, so the caller can answer it.
    pub item: T,
}

/// A waiting call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued<T> {
    /// Its name in the queue.
    pub ticket: QueueTicket,
    /// The call.
    pub item: T,
    /// When it stops being worth sending.
    pub deadline: Tick,
    /// When it entered, for `X-Hubgate-Queue-Ms`.
    pub enqueued_at: Tick,
}

/// Why a new waiter may not join a queue of `len` (of at most `max_depth`): full, or its
/// estimated wait already passes its deadline. `None`: it may.
pub(crate) fn refuse(
    len: usize,
    max_depth: usize,
    deadline: Tick,
    now: Tick,
    estimated_wait: Duration,
) -> Option<RejectReason> {
    if len >= max_depth {
        return Some(RejectReason::QueueFull);
    }
    if estimated_wait == Duration::MAX || now.saturating_add(estimated_wait) > deadline {
        return Some(RejectReason::DeadlineUnmeetable {
            estimate: estimated_wait,
        });
    }
    None
}

/// Tickets from `push` count up from here and those from `push_front` count down, so the
/// deque stays sorted by ticket and `remove` can binary-search it.
const TICKET_MIDDLE: u64 = 1 << 63;

/// Bounded FIFO of one owner's waiting calls.
#[derive(Debug, Clone)]
pub struct OwnerQueue<T> {
    /// Most waiters `push` admits.
    max_depth: usize,
    /// Ticket for the next `push`.
    next_back: u64,
    /// Ticket for the next `push_front`.
    next_front: u64,
    /// The waiters in sending order; tickets ascending.
    items: VecDeque<Queued<T>>,
    /// (deadline, ticket) of every waiter, so expiry and the next timer are O(log n) even
    /// though per-call deadlines make the FIFO unsorted by deadline.
    deadlines: BTreeSet<(Tick, QueueTicket)>,
}

impl<T> OwnerQueue<T> {
    /// An empty queue admitting at most `max_depth` waiters (0 refuses every push).
    pub fn new(max_depth: usize) -> OwnerQueue<T> {
        OwnerQueue {
            max_depth,
            next_back: TICKET_MIDDLE,
            next_front: TICKET_MIDDLE - 1,
            items: VecDeque::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Waiters now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Most waiters `push` admits.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Queues `item` at the back, unless the queue is full or `now + estimated_wait`
    /// (the book's estimate with `len()` calls ahead) is past `deadline`.
    pub fn push(
        &mut self,
        item: T,
        deadline: Tick,
        now: Tick,
        estimated_wait: Duration,
    ) -> Result<QueueTicket, Rejected<T>> {
        if let Some(reason) = refuse(
            self.items.len(),
            self.max_depth,
            deadline,
            now,
            estimated_wait,
        ) {
            return Err(Rejected { reason, item });
        }
        let ticket = QueueTicket(self.next_back);
        self.next_back = self.next_back.saturating_add(1);
        self.insert(Queued {
            ticket,
            item,
            deadline,
            enqueued_at: now,
        });
        Ok(ticket)
    }

    /// Puts a call back at the head (a retry after a 429 keeps its place), ignoring depth:
    /// it was admitted once, so the extra waiters are bounded by the calls in flight.
    pub fn push_front(&mut self, item: T, deadline: Tick, enqueued_at: Tick) -> QueueTicket {
        let ticket = QueueTicket(self.next_front);
        self.next_front = self.next_front.saturating_sub(1);
        self.insert(Queued {
            ticket,
            item,
            deadline,
            enqueued_at,
        });
        ticket
    }

    /// Adds a waiter at the end its ticket sorts to.
    fn insert(&mut self, queued: Queued<T>) {
        self.deadlines.insert((queued.deadline, queued.ticket));
        if self.items.front().is_none_or(|f| f.ticket > queued.ticket) {
            self.items.push_front(queued);
        } else {
            self.items.push_back(queued);
        }
    }

    /// The next call to send.
    pub fn front(&self) -> Option<&Queued<T>> {
        self.items.front()
    }

    /// Takes the next call to send (after `reserve` granted it).
    pub fn pop_front(&mut self) -> Option<Queued<T>> {
        let queued = self.items.pop_front()?;
        self.deadlines.remove(&(queued.deadline, queued.ticket));
        Some(queued)
    }

    /// Where `ticket` waits (0 = head), for re-estimating its wait.
    pub fn position(&self, ticket: QueueTicket) -> Option<usize> {
        self.items.binary_search_by_key(&ticket, |q| q.ticket).ok()
    }

    /// Takes a waiter out (its caller went away); it spends nothing.
    pub fn remove(&mut self, ticket: QueueTicket) -> Option<T> {
        let at = self.position(ticket)?;
        let queued = self.items.remove(at)?;
        self.deadlines.remove(&(queued.deadline, queued.ticket));
        Some(queued.item)
    }

    /// Takes out every waiter whose deadline is `<= now`, earliest deadline first. Call it
    /// after sending what can go at `now`, so a call whose deadline is now still goes.
    pub fn expire(&mut self, now: Tick) -> Vec<T> {
        let mut gone = Vec::new();
        while let Some(&(deadline, ticket)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(item) = self.remove(ticket) {
                gone.push(item);
            } else {
                // Unreachable while both indexes agree; drop the stray entry rather than spin.
                self.deadlines.pop_first();
            }
        }
        gone
    }

    /// The earliest deadline of any waiter: when the owner's timer must next fire to
    /// `expire`, besides the book's `NotBefore`.
    pub fn next_deadline(&self) -> Option<Tick> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// The waiters in sending order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Queued<T>> + '_ {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: Tick = Tick(1_000_000);

    #[test]
    fn full_queue_rejects_and_returns_the_item() {
        let mut q = OwnerQueue::new(2);
        q.push("a", FAR, Tick(0), Duration::ZERO).unwrap();
        q.push("b", FAR, Tick(0), Duration::ZERO).unwrap();
        assert_eq!(
            q.push("c", FAR, Tick(0), Duration::ZERO),
            Err(Rejected {
                reason: RejectReason::QueueFull,
                item: "c"
            })
        );
        let mut none = OwnerQueue::new(0);
        assert!(none.push(1, FAR, Tick(0), Duration::ZERO).is_err());
    }

    #[test]
    fn unmeetable_deadline_rejects_at_once() {
        let mut q = OwnerQueue::new(10);
        let est = Duration::from_micros(101);
        assert_eq!(
            q.push(1, Tick(100), Tick(0), est),
            Err(Rejected {
                reason: RejectReason::DeadlineUnmeetable { estimate: est },
                item: 1
            })
        );
        // Exactly meeting the deadline is fine.
        assert!(q
            .push(2, Tick(100), Tick(0), Duration::from_micros(100))
            .is_ok());
        // "Never" is unmeetable even without a deadline.
        assert!(q.push(3, Tick::MAX, Tick(0), Duration::MAX).is_err());
        // A deadline already past.
        assert!(q.push(4, Tick(5), Tick(6), Duration::ZERO).is_err());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn expire_takes_passed_deadlines_in_deadline_order_and_keeps_fifo() {
        let mut q = OwnerQueue::new(10);
        q.push("late", Tick(300), Tick(0), Duration::ZERO).unwrap();
        q.push("early", Tick(100), Tick(0), Duration::ZERO).unwrap();
        q.push("mid", Tick(200), Tick(0), Duration::ZERO).unwrap();
        q.push("last", Tick(400), Tick(0), Duration::ZERO).unwrap();
        assert_eq!(q.next_deadline(), Some(Tick(100)));
        assert!(q.expire(Tick(99)).is_empty());
        assert_eq!(q.expire(Tick(200)), vec!["early", "mid"]);
        assert_eq!(q.next_deadline(), Some(Tick(300)));
        assert_eq!(q.pop_front().map(|x| x.item), Some("late"));
        assert_eq!(q.next_deadline(), Some(Tick(400)));
        assert_eq!(q.expire(Tick::MAX), vec!["last"]);
        assert_eq!(q.next_deadline(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn remove_leaves_the_others_in_order() {
        let mut q = OwnerQueue::new(10);
        let a = q.push('a', FAR, Tick(0), Duration::ZERO).unwrap();
        let b = q.push('b', FAR, Tick(1), Duration::ZERO).unwrap();
        let c = q.push('c', Tick(50), Tick(2), Duration::ZERO).unwrap();
        assert_eq!(q.position(c), Some(2));
        assert_eq!(q.remove(b), Some('b'));
        assert_eq!(q.remove(b), None);
        assert_eq!(q.position(c), Some(1));
        assert_eq!(q.remove(c), Some('c'));
        assert_eq!(q.next_deadline(), Some(FAR));
        let head = q.pop_front().unwrap();
        assert_eq!(
            (head.ticket, head.item, head.enqueued_at),
            (a, 'a', Tick(0))
        );
        assert!(q.pop_front().is_none());
    }

    #[test]
    fn push_front_goes_before_everyone_and_can_be_removed() {
        let mut q = OwnerQueue::new(1);
        q.push(1, FAR, Tick(0), Duration::ZERO).unwrap();
        let r1 = q.push_front(0, FAR, Tick(0));
        let r2 = q.push_front(-1, FAR, Tick(0));
        assert_eq!(q.iter().map(|x| x.item).collect::<Vec<_>>(), [-1, 0, 1]);
        assert_eq!(q.remove(r1), Some(0));
        assert_eq!(q.position(r2), Some(0));
    }
}
