//! Turns at asking HubSpot about a token: lookups wait in line per caller, callers take
//! turns round robin, and turns are handed out at `[identity] introspection_per_second`.
//!
//! A caller flooding hubgate with tokens HubSpot has never seen fills only its own line, so
//! another caller's first lookup is served within a turn or two instead of racing the flood
//! for each free slot. A line holds at most what the pace serves within
//! `introspection_timeout_ms`; a lookup that finds its caller's line full is not queued (it
//! could only time out) and its call goes on as unproven.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use governor::clock::Clock as _;
use governor::DefaultDirectRateLimiter;
use tokio::sync::oneshot;

/// The lines of lookups waiting for their turn.
#[derive(Debug, Default)]
pub(super) struct Turns {
    state: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    /// Each caller's lookups, oldest first; a caller is here only while it has some.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// Callers with lookups waiting, in the order they get their next turn.
    order: VecDeque<Arc<str>>,
    /// Whether a task is handing out turns; it ends when every line is empty.
    dispatching: bool,
    /// The pace, as the latest lookup's settings give it (a reload changes it in place).
    pace: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Turns {
    /// Joins `caller`'s line; the receiver fires when it is this lookup's turn. `None` when
    /// the line already holds `line_limit` lookups.
    pub(super) fn join(
        self: &Arc<Self>,
        caller: &str,
        line_limit: usize,
        pace: &Arc<DefaultDirectRateLimiter>,
    ) -> Option<oneshot::Receiver<()>> {
        let mut lines = lock(&self.state);
        lines.pace = Some(pace.clone());
        let (turn, receiver) = oneshot::channel();
        match lines.waiting.get_mut(caller) {
            Some(line) => {
                line.retain(|w| !w.is_closed());
                if line.len() >= line_limit {
                    return None;
                }
                line.push_back(turn);
            }
            None => {
                let caller: Arc<str> = Arc::from(caller);
                lines.waiting.insert(caller.clone(), VecDeque::from([turn]));
                lines.order.push_back(caller);
            }
        }
        if !lines.dispatching {
            lines.dispatching = true;
            tokio::spawn(dispatch(self.clone()));
        }
        Some(receiver)
    }

    /// The next lookup's turn, round robin between callers; `None` when nobody waits
    /// (and then the dispatcher is marked gone, under the same lock).
    fn next(&self) -> Option<oneshot::Sender<()>> {
        let mut lines = lock(&self.state);
        while let Some(caller) = lines.order.pop_front() {
            let Some(line) = lines.waiting.get_mut(&caller) else {
                continue;
            };
            let turn = std::iter::from_fn(|| line.pop_front()).find(|w| !w.is_closed());
            if line.is_empty() {
                lines.waiting.remove(&caller);
            } else {
                lines.order.push_back(caller);
            }
            if turn.is_some() {
                return turn;
            }
        }
        lines.dispatching = false;
        None
    }

    fn pace(&self) -> Option<Arc<DefaultDirectRateLimiter>> {
        lock(&self.state).pace.clone()
    }
}

/// Hands out turns at the pace until every line is empty.
async fn dispatch(turns: Arc<Turns>) {
    loop {
        if let Some(pace) = turns.pace() {
            paced(&pace).await;
        }
        let Some(turn) = turns.next() else { return };
        // A lookup that timed out meanwhile frees its turn for the next one.
        if turn.send(()).is_err() {
            continue;
        }
    }
}

/// Waits for the pace on tokio's timer.
async fn paced(pace: &DefaultDirectRateLimiter) {
    while let Err(not_until) = pace.check() {
        tokio::time::sleep(not_until.wait_time_from(pace.clock().now())).await;
    }
}

fn lock(state: &Mutex<Lines>) -> MutexGuard<'_, Lines> {
    // The lines stay consistent between statements; a panic elsewhere must not stop lookups.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
