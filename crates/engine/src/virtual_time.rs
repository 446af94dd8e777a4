//! Owns a deterministic virtual-time driver of queues and book, for tests and benchmarks.
//!
//! It plays the proxy's part without sockets: calls arrive, are admitted or rejected with
//! the book's estimate, wait in their owner's queue, and leave whenever the book grants
//! them. Virtual time jumps straight to the next event (an arrival, a `NotBefore`, a
//! deadline), exactly as the proxy's timers would fire, so there is no polling and
//! thousands of windows run in milliseconds.

use std::time::Duration;

use super::book::{BudgetBook, BudgetKey, Limits, Reservation};
use super::queue::{OwnerQueue, RejectReason};
use super::time::Tick;

/// One call arriving at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrives.
    pub at: Tick,
    /// Index of the owner queue it waits in.
    pub owner: usize,
    /// Budgets it spends.
    pub keys: Vec<BudgetKey>,
    /// How long it may wait (its deadline is `at + max_wait`).
    pub max_wait: Duration,
}

/// What became of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still waiting when the run ended (its budgets never free up, e.g. limit 0).
    Waiting,
    /// Sent at this tick.
    Sent(Tick),
    /// Refused on arrival.
    Rejected(RejectReason),
    /// Its deadline passed in the queue at this tick.
    Expired(Tick),
    /// A daily budget was out (on arrival or at the head of the queue) at this tick.
    DailyExhausted(Tick),
}

/// The record of one run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Fate of each arrival, by index into the input.
    pub fates: Vec<Fate>,
    /// Estimated wait given on admission, by arrival index (`None` if refused).
    pub estimates: Vec<Option<Duration>>,
    /// Arrival indices in the order they were sent.
    pub send_order: Vec<usize>,
    /// How many times virtual time advanced: one per event, never a polling step.
    pub steps: usize,
    /// The book at the end, for inspecting budgets.
    pub book: BudgetBook,
}

impl RunRecord {
    /// Send ticks, in send order, of the calls that spent `key`.
    pub fn send_times(&self, arrivals: &[Arrival], key: &BudgetKey) -> Vec<Tick> {
        self.send_order
            .iter()
            .filter(|&&i| arrivals[i].keys.contains(key))
            .filter_map(|&i| match self.fates[i] {
                Fate::Sent(t) => Some(t),
                _ => None,
            })
            .collect()
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Budget specs.
    pub limits: Limits,
    /// `[queue] max_depth_per_owner`.
    pub max_depth: usize,
    /// Wall-clock unix time (ms) at `Tick::ZERO`, for daily budgets.
    pub unix_ms_at_zero: i64,
}

/// Wall-clock time at `now`.
fn unix_ms(cfg: &RunConfig, now: Tick) -> i64 {
    let ms = i64::try_from(now.as_micros() / 1_000).unwrap_or(i64::MAX);
    cfg.unix_ms_at_zero.saturating_add(ms)
}

/// Runs `arrivals` (any order; equal ticks keep input order) to completion.
pub fn run(cfg: &RunConfig, arrivals: &[Arrival]) -> RunRecord {
    let mut book = BudgetBook::new(cfg.limits.clone());
    let owners = arrivals.iter().map(|a| a.owner + 1).max().unwrap_or(0);
    let mut queues: Vec<OwnerQueue<usize>> = (0..owners)
        .map(|_| OwnerQueue::new(cfg.max_depth))
        .collect();
    let mut order: Vec<usize> = (0..arrivals.len()).collect();
    order.sort_by_key(|&i| arrivals[i].at);
    let mut fates = vec![Fate::Waiting; arrivals.len()];
    let mut estimates = vec![None; arrivals.len()];
    let mut send_order = Vec::new();
    let mut next_arrival = 0;
    let mut steps = 0;
    let Some(&first) = order.first() else {
        return RunRecord {
            fates,
            estimates,
            send_order,
            steps,
            book,
        };
    };
    let mut now = arrivals[first].at;
    let mut wakes: Vec<Option<Tick>> = vec![None; owners];
    loop {
        steps += 1;
        let wall = unix_ms(cfg, now);
        let mut run = Run {
            book: &mut book,
            arrivals,
            fates: &mut fates,
            send_order: &mut send_order,
            now,
            wall,
        };
        // Calls already waiting go before calls arriving at the same tick.
        for (q, wake) in queues.iter_mut().zip(&mut wakes) {
            *wake = run.drain(q);
        }
        while let Some(&id) = order.get(next_arrival) {
            let a = &arrivals[id];
            if a.at > now {
                break;
            }
            next_arrival += 1;
            let q = &mut queues[a.owner];
            match run.book.estimate_wait(&a.keys, now, wall, q.len()) {
                Err(_) => run.fates[id] = Fate::DailyExhausted(now),
                Ok(wait) => match q.push(id, now.saturating_add(a.max_wait), now, wait) {
                    Ok(_) => estimates[id] = Some(wait),
                    Err(rejected) => run.fates[id] = Fate::Rejected(rejected.reason),
                },
            }
            // Like the proxy: a call that finds its budgets free goes at once.
            wakes[a.owner] = run.drain(q);
        }
        for q in &mut queues {
            for id in q.expire(now) {
                fates[id] = Fate::Expired(now);
            }
        }
        let next = [
            order.get(next_arrival).map(|&i| arrivals[i].at),
            wakes.iter().flatten().min().copied(),
            queues.iter().filter_map(|q| q.next_deadline()).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) if t > now => now = t,
            _ => break,
        }
    }
    RunRecord {
        fates,
        estimates,
        send_order,
        steps,
        book,
    }
}

/// The state one step of `run` works on.
struct Run<'a> {
    /// The budgets.
    book: &'a mut BudgetBook,
    /// The input, for each call's keys.
    arrivals: &'a [Arrival],
    /// Fate of each call, filled in as they leave.
    fates: &'a mut [Fate],
    /// Sent calls in order.
    send_order: &'a mut Vec<usize>,
    /// The virtual time of this step.
    now: Tick,
    /// Wall-clock time of this step.
    wall: i64,
}

impl Run<'_> {
    /// Sends from the head of `q` while the book grants; returns when to try again
    /// (`None`: queue empty, or its head can never go and waits for its deadline).
    fn drain(&mut self, q: &mut OwnerQueue<usize>) -> Option<Tick> {
        while let Some(head) = q.front() {
            let id = head.item;
            match self
                .book
                .reserve(&self.arrivals[id].keys, self.now, self.wall)
            {
                Reservation::Granted => {
                    self.fates[id] = Fate::Sent(self.now);
                    self.send_order.push(id);
                }
                Reservation::DailyExhausted(_) => self.fates[id] = Fate::DailyExhausted(self.now),
                Reservation::NotBefore(t) => return (t != Tick::MAX).then_some(t),
                Reservation::StoreUnavailable => return None,
            }
            q.pop_front();
        }
        None
    }
}
