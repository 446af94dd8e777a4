//! Turns at asking HubSpot about a token: lookups wait in line per caller, callers take
//! turns round robin, and turns are handed out at `[identity] introspection_per_second`.
//!
//! A caller flooding hubgate with tokens HubSpot has never seen fills only its own line, so
//! another caller's first lookup is served within a turn or two instead of racing the flood
//! for each free slot. A line holds at most what the pace serves within
//! `introspection_timeout_ms`; a lookup that finds its caller's line full is not queued (it
//! could only time out) and its call goes on as unproven.
//!
//! A name a caller only claims (`X-Hubgate-Caller` without a caller key) gets a line of
//! its own for at most `LINES_PER_PEER` names per peer address; beyond that, its lookups
//! wait in the peer's one line. A client inventing a name per call would otherwise get a
//! turn per call and push every other caller's lookup back behind its whole flood.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(test)]
use std::time::Duration;

use governor::clock::Clock as _;
use governor::DefaultDirectRateLimiter;
use tokio::sync::oneshot;

/// Lines one peer address may hold for names it claims; beyond it they share one.
const LINES_PER_PEER: usize = 16;

/// Whose line a lookup waits in: a caller's `name`, and the peer address it only claims
/// that name from (`None` for a name a caller key proves, or a peer's own line).
#[derive(Debug, Clone, Copy)]
pub struct TurnLine<'a> {
    pub name: &'a str,
    pub claimed_from: Option<&'a str>,
}

/// The lines of lookups waiting for their turn.
#[derive(Debug, Default)]
pub(super) struct Turns {
    state: Mutex<Lines>,
}

#[derive(Debug)]
struct Line {
    lookups: VecDeque<oneshot::Sender<()>>,
    /// The peer this line counts against, for a claimed name.
    claimed_from: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Lines {
    /// Each caller's lookups, oldest first; a caller is here only while it has some.
    waiting: HashMap<Arc<str>, Line>,
    /// Lines held per peer address for names claimed from it.
    claimed_per_peer: HashMap<Arc<str>, usize>,
    /// Callers with lookups waiting, in the order they get their next turn.
    order: VecDeque<Arc<str>>,
    /// Whether a task is handing out turns; it ends when every line is empty.
    dispatching: bool,
    /// The pace, as the latest lookup's settings give it (a reload changes it in place).
    pace: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Turns {
    /// Joins `line`; the receiver fires when it is this lookup's turn. `None` when the
    /// line already holds `line_limit` lookups.
    pub(super) fn join(
        self: &Arc<Self>,
        line: TurnLine<'_>,
        line_limit: usize,
        pace: &Arc<DefaultDirectRateLimiter>,
    ) -> Option<oneshot::Receiver<()>> {
        let mut lines = lock(&self.state);
        lines.pace = Some(pace.clone());
        let (turn, receiver) = oneshot::channel();
        let key = match line.claimed_from {
            Some(peer)
                if !lines.waiting.contains_key(line.name)
                    && lines.claimed_per_peer.get(peer).copied().unwrap_or(0) >= LINES_PER_PEER =>
            {
                TurnLine {
                    name: peer,
                    claimed_from: None,
                }
            }
            _ => line,
        };
        match lines.waiting.get_mut(key.name) {
            Some(waiting) => {
                waiting.lookups.retain(|w| !w.is_closed());
                if waiting.lookups.len() >= line_limit {
                    return None;
                }
                waiting.lookups.push_back(turn);
            }
            None => {
                let name: Arc<str> = Arc::from(key.name);
                let claimed_from = key.claimed_from.map(Arc::<str>::from);
                if let Some(peer) = &claimed_from {
                    *lines.claimed_per_peer.entry(peer.clone()).or_default() += 1;
                }
                let waiting = Line {
                    lookups: VecDeque::from([turn]),
                    claimed_from,
                };
                lines.waiting.insert(name.clone(), waiting);
                lines.order.push_back(name);
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
            let turn = std::iter::from_fn(|| line.lookups.pop_front()).find(|w| !w.is_closed());
            if line.lookups.is_empty() {
                let claimed_from = lines.waiting.remove(&caller).and_then(|l| l.claimed_from);
                if let Some(peer) = claimed_from {
                    let held = lines.claimed_per_peer.entry(peer.clone()).or_default();
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        lines.claimed_per_peer.remove(&peer);
                    }
                }
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
pub(super) async fn paced(pace: &DefaultDirectRateLimiter) {
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

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use governor::{Quota, RateLimiter};

    use super::*;

    /// Joins `count` lines, one claimed name each, from `peer`; each pushes its name into
    /// `served` when its turn comes.
    fn flood(
        turns: &Arc<Turns>,
        pace: &Arc<DefaultDirectRateLimiter>,
        peer: &str,
        names: impl Iterator<Item = String>,
        served: &Arc<Mutex<Vec<String>>>,
    ) {
        for name in names {
            let line = TurnLine {
                name: &name,
                claimed_from: Some(peer),
            };
            let Some(turn) = turns.join(line, 100, pace) else {
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                if turn.await.is_ok() {
                    lock_served(&served).push(name);
                }
            });
        }
    }

    fn lock_served(served: &Mutex<Vec<String>>) -> MutexGuard<'_, Vec<String>> {
        served.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[tokio::test]
    async fn names_invented_per_lookup_share_their_peers_line_beyond_a_few() {
        // No burst, so each turn is served (and recorded) before the next is handed out.
        let pace = Arc::new(RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(400).unwrap()).allow_burst(NonZeroU32::MIN),
        ));
        let turns = Arc::new(Turns::default());
        let served = Arc::new(Mutex::new(Vec::new()));
        flood(
            &turns,
            &pace,
            "10.0.0.1",
            (0..300).map(|i| format!("junk-{i}")),
            &served,
        );
        flood(
            &turns,
            &pace,
            "10.0.0.2",
            std::iter::once("billing-sync".to_string()),
            &served,
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while !lock_served(&served).iter().any(|n| n == "billing-sync") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the other peer's lookup got a turn");
        let ahead = lock_served(&served)
            .iter()
            .position(|n| n == "billing-sync")
            .unwrap();
        // One peer's invented names hold its 16 (LINES_PER_PEER) lines and one shared line, so
        // the other peer's lookup waits a round of those, not behind all 300.
        assert!(ahead <= 17, "{ahead} lookups went first");
    }
}
