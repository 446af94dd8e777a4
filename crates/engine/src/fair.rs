//! Owns the waiting calls of one owner's lane when several callers share it: strict
//! priority between `high`, `normal` and `low`, and deficit round robin between callers
//! within a priority, so a caller with 100 calls in flight and one with 1 get equal turns.
//!
//! Each call costs one turn. A caller at the front of its priority's ring sends up to its
//! weight in calls, then goes to the back; a caller with nothing left leaves the ring. A
//! retry re-enters at the very front (it already waited its turn once). Deadlines and
//! tickets work as in [`super::queue`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

#[cfg(test)]
use super::queue::RejectReason;
use super::queue::{refuse, QueueTicket, Queued, Rejected};
use super::time::Tick;

/// Which of a lane's three service classes a call waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Served before anything else, and may use a reserved share of each window.
    High,
    Normal,
    /// Only sent when nothing of higher priority waits.
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    fn index(self) -> usize {
        self as usize
    }

    /// The `lane` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// A caller, named by its hash (the pacer hashes `X-Hubgate-Caller` or the peer address).
pub type CallerId = u64;

/// Who a call belongs to and how it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    pub priority: Priority,
    pub caller: CallerId,
    /// Turns per round relative to the other callers of the same priority (at least 1).
    pub weight: u32,
}

/// Tickets from `push` count up from here and those from `push_front` count down, so
/// every caller's deque stays sorted by ticket and removal is a binary search.
const TICKET_MIDDLE: u64 = 1 << 63;

#[derive(Debug)]
struct Class<T> {
    /// Waiting calls per caller, in sending order.
    callers: HashMap<CallerId, VecDeque<Queued<T>>>,
    /// Callers with calls waiting, in turn order; the front one is being served.
    ring: VecDeque<CallerId>,
    /// Sends left in the front caller's current turn.
    credit: u32,
    /// Each caller's weight, as last given.
    weights: HashMap<CallerId, u32>,
}

impl<T> Class<T> {
    fn new() -> Self {
        Class {
            callers: HashMap::new(),
            ring: VecDeque::new(),
            credit: 0,
            weights: HashMap::new(),
        }
    }

    fn weight(&self, caller: CallerId) -> u32 {
        self.weights.get(&caller).copied().unwrap_or(1).max(1)
    }

    /// The front caller's turn is over: it goes to the back (or leaves when empty), and
    /// the next one starts a turn of its weight.
    fn next_turn(&mut self, rotate: bool) {
        if let Some(front) = self.ring.pop_front() {
            if rotate {
                self.ring.push_back(front);
            }
        }
        self.credit = self.ring.front().map_or(0, |&c| self.weight(c));
    }

    fn len_of(&self, caller: CallerId) -> usize {
        self.callers.get(&caller).map_or(0, VecDeque::len)
    }
}

/// The waiting calls of one lane.
#[derive(Debug)]
pub struct FairQueue<T> {
    /// Most waiters `push` admits, over all priorities and callers.
    max_depth: usize,
    classes: [Class<T>; 3],
    /// Where each waiter is, for removal by ticket.
    seats: HashMap<QueueTicket, (Priority, CallerId, Tick)>,
    /// (deadline, ticket) of every waiter, for expiry and the next timer.
    deadlines: BTreeSet<(Tick, QueueTicket)>,
    next_back: u64,
    next_front: u64,
}

impl<T> FairQueue<T> {
    pub fn new(max_depth: usize) -> FairQueue<T> {
        FairQueue {
            max_depth,
            classes: [Class::new(), Class::new(), Class::new()],
            seats: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_back: TICKET_MIDDLE,
            next_front: TICKET_MIDDLE - 1,
        }
    }

    /// Changes how many waiters `push` admits; waiters beyond a lowered bound stay.
    pub fn set_max_depth(&mut self, max_depth: usize) {
        self.max_depth = max_depth;
    }

    pub fn len(&self) -> usize {
        self.seats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    /// Waiters of one priority.
    pub fn len_of(&self, priority: Priority) -> usize {
        self.classes[priority.index()]
            .callers
            .values()
            .map(VecDeque::len)
            .sum()
    }

    /// How many calls would be sent before a new call of `seat`: everything of higher
    /// priority, its caller's own queue, and from each other caller of its priority about
    /// as many as it gets turns (weight-scaled) in the meantime.
    pub fn ahead_of(&self, seat: Seat) -> usize {
        let higher: usize = Priority::ALL
            .iter()
            .filter(|p| **p < seat.priority)
            .map(|p| self.len_of(*p))
            .sum();
        let class = &self.classes[seat.priority.index()];
        let own = class.len_of(seat.caller);
        let rounds = (own as u64 + 1).div_ceil(u64::from(seat.weight.max(1)));
        let others: usize = class
            .callers
            .iter()
            .filter(|(c, _)| **c != seat.caller)
            .map(|(c, q)| {
                let turns = rounds.saturating_mul(u64::from(class.weight(*c)));
                q.len().min(usize::try_from(turns).unwrap_or(usize::MAX))
            })
            .sum();
        higher + own + others
    }

    /// Queues a call behind its caller's earlier ones, unless the lane is full or the
    /// estimated wait (for `ahead_of(seat)` calls ahead) already passes `deadline`.
    pub fn push(
        &mut self,
        item: T,
        seat: Seat,
        deadline: Tick,
        now: Tick,
        estimated_wait: Duration,
    ) -> Result<QueueTicket, Rejected<T>> {
        if let Some(reason) = refuse(self.len(), self.max_depth, deadline, now, estimated_wait) {
            return Err(Rejected { reason, item });
        }
        let ticket = QueueTicket::from_raw(self.next_back);
        self.next_back += 1;
        self.insert(item, seat, ticket, deadline, now, false);
        Ok(ticket)
    }

    /// Queues a retry at the very front of its priority: it already waited its turn.
    pub fn push_front(
        &mut self,
        item: T,
        seat: Seat,
        deadline: Tick,
        enqueued_at: Tick,
    ) -> QueueTicket {
        let ticket = QueueTicket::from_raw(self.next_front);
        self.next_front = self.next_front.saturating_sub(1);
        self.insert(item, seat, ticket, deadline, enqueued_at, true);
        ticket
    }

    fn insert(
        &mut self,
        item: T,
        seat: Seat,
        ticket: QueueTicket,
        deadline: Tick,
        enqueued_at: Tick,
        front: bool,
    ) {
        let class = &mut self.classes[seat.priority.index()];
        class.weights.insert(seat.caller, seat.weight.max(1));
        let queue = class.callers.entry(seat.caller).or_default();
        let was_idle = queue.is_empty();
        let queued = Queued {
            ticket,
            item,
            deadline,
            enqueued_at,
        };
        if front {
            queue.push_front(queued);
            // Serve it next: its caller's turn starts (again) now.
            class.ring.retain(|&c| c != seat.caller);
            class.ring.push_front(seat.caller);
            class.credit = class.credit.max(1);
        } else {
            queue.push_back(queued);
            if was_idle {
                class.ring.push_back(seat.caller);
                if class.ring.len() == 1 {
                    class.credit = seat.weight.max(1);
                }
            }
        }
        self.seats
            .insert(ticket, (seat.priority, seat.caller, deadline));
        self.deadlines.insert((deadline, ticket));
    }

    /// The call that goes next among callers `eligible` allows: the highest priority with
    /// an eligible waiter, and within it the first eligible caller in turn order.
    pub fn peek_eligible(
        &self,
        eligible: impl Fn(CallerId) -> bool,
    ) -> Option<(&Queued<T>, Priority, CallerId)> {
        Priority::ALL.iter().find_map(|&p| {
            let class = &self.classes[p.index()];
            class
                .ring
                .iter()
                .find(|&&c| eligible(c))
                .and_then(|&caller| class.callers.get(&caller)?.front().map(|q| (q, p, caller)))
        })
    }

    /// Callers with calls waiting at `priority`, and their weights.
    pub fn waiting_callers(
        &self,
        priority: Priority,
    ) -> impl Iterator<Item = (CallerId, u32)> + '_ {
        let class = &self.classes[priority.index()];
        class.ring.iter().map(move |&c| (c, class.weight(c)))
    }

    /// The call that goes next: the highest priority with waiters, and within it the
    /// caller whose turn it is.
    pub fn peek(&self) -> Option<(&Queued<T>, Priority)> {
        Priority::ALL.iter().find_map(|&p| {
            let class = &self.classes[p.index()];
            let caller = class.ring.front()?;
            class.callers.get(caller)?.front().map(|q| (q, p))
        })
    }

    /// Takes the call `ticket` because it is being sent: it uses up one of its caller's
    /// turns.
    pub fn take(&mut self, ticket: QueueTicket) -> Option<Queued<T>> {
        self.detach(ticket, true)
    }

    /// Removes the call `ticket` without sending it (its caller went away).
    pub fn remove(&mut self, ticket: QueueTicket) -> Option<T> {
        self.detach(ticket, false).map(|q| q.item)
    }

    fn detach(&mut self, ticket: QueueTicket, sent: bool) -> Option<Queued<T>> {
        let (priority, caller, deadline) = self.seats.remove(&ticket)?;
        self.deadlines.remove(&(deadline, ticket));
        let class = &mut self.classes[priority.index()];
        let queue = class.callers.get_mut(&caller)?;
        let index = queue.binary_search_by_key(&ticket, |q| q.ticket).ok()?;
        let queued = queue.remove(index)?;
        let emptied = queue.is_empty();
        if emptied {
            class.callers.remove(&caller);
            class.weights.remove(&caller);
        }
        let is_front = class.ring.front() == Some(&caller);
        if is_front {
            if sent {
                class.credit = class.credit.saturating_sub(1);
            }
            if emptied {
                class.next_turn(false);
            } else if class.credit == 0 {
                class.next_turn(true);
            }
        } else if emptied {
            class.ring.retain(|&c| c != caller);
        }
        Some(queued)
    }

    /// Removes and returns every call whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Tick) -> Vec<T> {
        let mut gone = Vec::new();
        while let Some(&(deadline, ticket)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            match self.remove(ticket) {
                Some(item) => gone.push(item),
                None => {
                    self.deadlines.pop_first();
                }
            }
        }
        gone
    }

    /// The earliest deadline of any waiter.
    pub fn next_deadline(&self) -> Option<Tick> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// A copy of the turn order with each waiter's item mapped by `f`, keeping each
    /// caller's first `per_caller` waiters: what a lane plans a batch on, so that taking
    /// from the copy gives the order `take` would give here, one call at a time, for the
    /// first `per_caller` calls. The queue itself is not touched.
    pub fn shadow<U>(&self, per_caller: usize, mut f: impl FnMut(&T) -> U) -> FairQueue<U> {
        let mut seats = HashMap::new();
        let mut deadlines = BTreeSet::new();
        let classes = std::array::from_fn(|i| {
            let (class, priority) = (&self.classes[i], Priority::ALL[i]);
            let callers = class
                .callers
                .iter()
                .map(|(&caller, queue)| {
                    let copied: VecDeque<Queued<U>> = queue
                        .iter()
                        .take(per_caller.max(1))
                        .map(|q| {
                            seats.insert(q.ticket, (priority, caller, q.deadline));
                            deadlines.insert((q.deadline, q.ticket));
                            Queued {
                                ticket: q.ticket,
                                item: f(&q.item),
                                deadline: q.deadline,
                                enqueued_at: q.enqueued_at,
                            }
                        })
                        .collect();
                    (caller, copied)
                })
                .collect();
            Class {
                callers,
                ring: class.ring.clone(),
                credit: class.credit,
                weights: class.weights.clone(),
            }
        });
        FairQueue {
            max_depth: self.max_depth,
            classes,
            seats,
            deadlines,
            next_back: self.next_back,
            next_front: self.next_front,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(priority: Priority, caller: CallerId, weight: u32) -> Seat {
        Seat {
            priority,
            caller,
            weight,
        }
    }

    fn fill(q: &mut FairQueue<u32>, s: Seat, n: u32) {
        for i in 0..n {
            q.push(i, s, Tick::MAX, Tick::ZERO, Duration::ZERO).unwrap();
        }
    }

    /// Sends `n` calls in the queue's order and returns whose they were.
    fn drain(q: &mut FairQueue<u32>, n: usize) -> Vec<(Priority, CallerId)> {
        let mut order = Vec::new();
        for _ in 0..n {
            let Some((head, priority)) = q.peek() else {
                break;
            };
            let ticket = head.ticket;
            let (_, caller, _) = q.seats[&ticket];
            q.take(ticket).unwrap();
            order.push((priority, caller));
        }
        order
    }

    #[test]
    fn a_caller_with_many_waiting_and_one_with_few_take_equal_turns() {
        let mut q = FairQueue::new(1_000);
        fill(&mut q, seat(Priority::Normal, 1, 1), 100);
        fill(&mut q, seat(Priority::Normal, 2, 1), 3);
        let order: Vec<CallerId> = drain(&mut q, 8).into_iter().map(|(_, c)| c).collect();
        assert_eq!(order, [1, 2, 1, 2, 1, 2, 1, 1]);
    }

    #[test]
    fn weights_scale_the_turns() {
        let mut q = FairQueue::new(1_000);
        fill(&mut q, seat(Priority::Normal, 1, 3), 30);
        fill(&mut q, seat(Priority::Normal, 2, 1), 30);
        let order = drain(&mut q, 40);
        let ones = order.iter().filter(|(_, c)| *c == 1).count();
        assert_eq!(ones, 30, "3:1 weights give 30 of 40 turns");
    }

    #[test]
    fn priorities_are_strict_and_retries_go_first() {
        let mut q = FairQueue::new(1_000);
        fill(&mut q, seat(Priority::Low, 3, 1), 2);
        fill(&mut q, seat(Priority::Normal, 2, 1), 2);
        fill(&mut q, seat(Priority::High, 1, 1), 1);
        q.push_front(9, seat(Priority::Normal, 4, 1), Tick::MAX, Tick::ZERO);
        let order = drain(&mut q, 6);
        assert_eq!(
            order,
            [
                (Priority::High, 1),
                (Priority::Normal, 4),
                (Priority::Normal, 2),
                (Priority::Normal, 2),
                (Priority::Low, 3),
                (Priority::Low, 3)
            ]
        );
    }

    #[test]
    fn a_shadow_serves_in_the_queues_order_and_leaves_the_queue_alone() {
        let mut q = FairQueue::new(1_000);
        fill(&mut q, seat(Priority::Normal, 1, 2), 20);
        fill(&mut q, seat(Priority::Normal, 2, 1), 3);
        fill(&mut q, seat(Priority::Low, 3, 1), 5);
        drain(&mut q, 3);
        let mut shadow = q.shadow(12, |item| *item + 100);
        let planned = drain(&mut shadow, 12);
        assert_eq!(q.len(), 25, "planning takes nothing from the queue");
        assert_eq!(drain(&mut q, 12), planned);
    }

    #[test]
    fn removal_expiry_and_depth() {
        let mut q = FairQueue::new(3);
        let a = q
            .push(
                1,
                seat(Priority::Normal, 1, 1),
                Tick::from_millis(10),
                Tick::ZERO,
                Duration::ZERO,
            )
            .unwrap();
        q.push(
            2,
            seat(Priority::Normal, 2, 1),
            Tick::from_millis(50),
            Tick::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        q.push(
            3,
            seat(Priority::Normal, 2, 1),
            Tick::from_millis(5),
            Tick::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        let full = q.push(
            4,
            seat(Priority::Normal, 3, 1),
            Tick::MAX,
            Tick::ZERO,
            Duration::ZERO,
        );
        assert_eq!(full.unwrap_err().reason, RejectReason::QueueFull);
        assert_eq!(q.next_deadline(), Some(Tick::from_millis(5)));
        assert_eq!(q.expire(Tick::from_millis(6)), vec![3]);
        assert_eq!(q.remove(a), Some(1));
        assert_eq!(q.len(), 1);
        assert_eq!(q.peek().unwrap().0.item, 2);
        let late = q.push(
            5,
            seat(Priority::Normal, 1, 1),
            Tick::from_millis(10),
            Tick::ZERO,
            Duration::from_millis(20),
        );
        assert!(matches!(
            late.unwrap_err().reason,
            RejectReason::DeadlineUnmeetable { .. }
        ));
    }

    #[test]
    fn ahead_of_counts_higher_priorities_and_others_turns() {
        let mut q = FairQueue::new(1_000);
        fill(&mut q, seat(Priority::High, 9, 1), 2);
        fill(&mut q, seat(Priority::Normal, 1, 1), 100);
        fill(&mut q, seat(Priority::Normal, 2, 1), 1);
        // A new call of caller 2 goes after 2 high, its own 1, and 2 of caller 1's.
        assert_eq!(q.ahead_of(seat(Priority::Normal, 2, 1)), 2 + 1 + 2);
        // A new call of a third caller: 2 high, then one turn each of callers 1 and 2.
        assert_eq!(q.ahead_of(seat(Priority::Normal, 3, 1)), 2 + 1 + 1);
        // A new high call waits for one turn of the high caller already waiting.
        assert_eq!(q.ahead_of(seat(Priority::High, 3, 1)), 1);
    }
}
