//! What the Redis store does when Redis fails and when it comes back: the mode of each
//! shard (all of one Redis; one slot of a cluster), how long Redis may struggle before that
//! mode changes, the keys Redis cannot use, this replica's local books (a mirror for
//! estimates, a share that answers while degraded), the quarantine after a failure, and
//! readiness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hubgate_engine::{BudgetBook, BudgetKey, BudgetSpec, Limits, Reservation, Tick};
use prometheus::IntGauge;
use tokio::time::Instant;

use super::keys::{share_limits, Shard};
use super::protocol::{Failure, Trouble};
use super::settings::OnFailure;
use crate::store::budget_store::Lesson;

/// How the store answers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Redis answers every reservation.
    Shared,
    /// Redis failed at `failed_at` (caller's tick); the local share or a 503 answers.
    Degraded { failed_at: Tick },
    /// Redis is back; until `until`, a send needs Redis *and* the local share.
    Rejoining { failed_at: Tick, until: Instant },
}

/// What one failed Redis call means for the call that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The store is degraded since `failed_at`: the local share (or a 503) answers.
    Degraded { failed_at: Tick },
    /// Redis is struggling, not yet for `[store] degrade_after_ms`: try again shortly.
    TryAgain,
    /// This call's budgets cannot be used in Redis since `failed_at`; their local share
    /// answers for them while every other budget stays shared.
    KeysUnusable { failed_at: Tick },
}

/// Most budgets remembered as unusable in Redis; past it a newly failing key's
/// quarantine starts at each failure (longer, never shorter).
const MAX_UNUSABLE: usize = 4_096;

/// Whether the store serves from Redis, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// Budgets are shared (or local by configuration).
    Healthy,
    /// Redis is unreachable and each replica serves its local share.
    DegradedLocalShare,
    /// Redis is unreachable and calls are refused with 503.
    DegradedFailClosed,
    /// Some slots of a Redis Cluster are unreachable: their budgets serve local shares (or
    /// 503), every other budget is shared. Still ready: every replica sees the same
    /// cluster, so draining one helps no caller.
    SlotsDegraded,
}

/// Most shards remembered as failing; a cluster has 16384 slots, and only the slots of
/// budgets in use ever fail, so this bounds memory under any outage.
const MAX_FAILING_SHARDS: usize = 16_384;

/// A shard that is not plainly shared: struggling, degraded or rejoining.
#[derive(Debug)]
struct ShardState {
    mode: Mode,
    /// Since when Redis has failed without an answer that worked in between, while not
    /// degraded: a struggle shorter than `degrade_after` only delays calls.
    struggling_since: Option<Tick>,
    /// The hash tag the prober's key carries to reach this shard.
    tag: String,
}

/// The mode of each shard and this replica's books.
#[derive(Debug)]
pub(super) struct Local {
    /// Shards that are not plainly shared; every other shard is `Mode::Shared`.
    shards: HashMap<Shard, ShardState>,
    /// Full limits; this replica's grants and Redis's refusals, for `estimate_wait`.
    pub(super) mirror: BudgetBook,
    /// Each budget's share; answers while degraded and co-signs while rejoining.
    pub(super) share: BudgetBook,
    /// Budgets whose keys Redis cannot use (the script fails on their values), and since
    /// when; each is answered by its local share until a script on it works again.
    unusable: HashMap<BudgetKey, Tick>,
}

/// The failure state machine of one store.
#[derive(Debug)]
pub(super) struct Failover {
    /// Mode and local books; never held across an `.await`.
    local: Mutex<Local>,
    /// Mirrors `Mode::Degraded` for lock-free reads (readiness, metrics, the prober).
    degraded: AtomicBool,
    /// `hubgate_store_degraded`.
    gauge: IntGauge,
    on_failure: OnFailure,
    /// How long rejoining lasts beyond the longest span: two probe periods and a timeout.
    rejoin_margin: Duration,
    /// How long Redis may struggle before the store degrades.
    degrade_after: Duration,
}

impl Failover {
    pub(super) fn new(
        limits: Limits,
        replicas: u32,
        on_failure: OnFailure,
        (rejoin_margin, degrade_after): (Duration, Duration),
        gauge: IntGauge,
    ) -> Failover {
        gauge.set(0);
        Failover {
            local: Mutex::new(Local {
                shards: HashMap::new(),
                share: BudgetBook::new(share_limits(&limits, replicas)),
                mirror: BudgetBook::new(limits),
                unusable: HashMap::new(),
            }),
            degraded: AtomicBool::new(false),
            gauge,
            on_failure,
            rejoin_margin,
            degrade_after,
        }
    }

    pub(super) fn local(&self) -> MutexGuard<'_, Local> {
        // Every step under the lock is a whole book operation; keep serving after a panic.
        self.local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn fails_closed(&self) -> bool {
        self.on_failure == OnFailure::FailClosed
    }

    pub(super) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub(super) fn health(&self) -> StoreHealth {
        if !self.is_degraded() {
            StoreHealth::Healthy
        } else if self.fails_closed() {
            StoreHealth::DegradedFailClosed
        } else {
            StoreHealth::DegradedLocalShare
        }
    }

    /// The shard's mode now, ending a finished rejoin (once no shard is degraded or
    /// rejoining, the local share is forgotten).
    pub(super) fn mode(&self, local: &mut Local, shard: Shard) -> Mode {
        let Some(state) = local.shards.get_mut(&shard) else {
            return Mode::Shared;
        };
        if let Mode::Rejoining { until, .. } = state.mode {
            if Instant::now() >= until {
                state.mode = Mode::Shared;
                if state.struggling_since.is_none() {
                    local.shards.remove(&shard);
                }
                if local.all_shared() {
                    local.share = BudgetBook::new(local.share.limits().clone());
                }
                return Mode::Shared;
            }
        }
        state.mode
    }

    /// What a failed call on `shard` (reached through `tag`) means: Redis away degrades
    /// the shard at once; Redis struggling degrades it once that has lasted
    /// `degrade_after` (the quarantine then counts from the struggle's start), and until
    /// then the call tries again; a key Redis cannot use makes only `keys` unusable.
    pub(super) fn failed(
        &self,
        now: Tick,
        (shard, tag): (Shard, &str),
        keys: &[BudgetKey],
        failure: &Failure,
    ) -> Verdict {
        let message = failure.message.as_str();
        match failure.trouble {
            Trouble::Unreachable => Verdict::Degraded {
                failed_at: self.fail((shard, tag), now, message),
            },
            Trouble::Struggling => {
                let since = {
                    let mut local = self.local();
                    let Some(state) = local.state(shard, tag) else {
                        // Too many failing shards to track one more: it degrades at once.
                        drop(local);
                        return Verdict::Degraded {
                            failed_at: self.fail((shard, tag), now, message),
                        };
                    };
                    if let Mode::Degraded { failed_at } = state.mode {
                        return Verdict::Degraded { failed_at };
                    }
                    *state.struggling_since.get_or_insert(now)
                };
                if now.saturating_duration_since(since) >= self.degrade_after {
                    Verdict::Degraded {
                        failed_at: self.fail((shard, tag), since, message),
                    }
                } else {
                    tracing::debug!(error = message, "Redis budget store slow; trying again");
                    Verdict::TryAgain
                }
            }
            Trouble::KeyUnusable => {
                let mut local = self.local();
                let mut failed_at = now;
                for key in keys {
                    if local.unusable.len() >= MAX_UNUSABLE && !local.unusable.contains_key(key) {
                        continue;
                    }
                    let since = *local.unusable.entry(*key).or_insert_with(|| {
                        tracing::warn!(
                            error = message,
                            budget = ?key,
                            "Redis cannot use this budget's key; its local share answers for it until a script on it works"
                        );
                        now
                    });
                    failed_at = failed_at.min(since);
                }
                Verdict::KeysUnusable { failed_at }
            }
        }
    }

    /// Redis failed on `shard`: degrade it (once per outage) and say so. Returns the tick
    /// the outage began at.
    fn fail(&self, (shard, tag): (Shard, &str), now: Tick, error: &str) -> Tick {
        let mut local = self.local();
        let fresh_outage = local.all_shared();
        let Some(state) = local.state(shard, tag) else {
            // Untracked: answered as degraded since now, every time (a longer quarantine).
            return now;
        };
        state.struggling_since = None;
        let failed_at = match state.mode {
            Mode::Degraded { failed_at } => return failed_at,
            // A failure while rejoining keeps the first failure's quarantine and the share's
            // record of the outage so far.
            Mode::Rejoining { failed_at, .. } => failed_at,
            Mode::Shared => now,
        };
        state.mode = Mode::Degraded { failed_at };
        // The share is kept while another shard still relies on it.
        if fresh_outage {
            local.share = BudgetBook::new(local.share.limits().clone());
        }
        let degraded_shards = local.degraded_shards().len();
        drop(local);
        self.degraded.store(true, Ordering::Relaxed);
        self.gauge.set(1);
        tracing::warn!(
            error,
            on_failure = ?self.on_failure,
            ?shard,
            degraded_shards,
            "Redis budget store unreachable; serving degraded until it answers again"
        );
        failed_at
    }

    /// Redis ran the prober's script on `shard`: rejoin, co-signing with the local share for
    /// `span` (the longest window) plus the rejoin margin.
    pub(super) fn resume(&self, shard: Shard, span: Duration) {
        let mut local = self.local();
        let Some(state) = local.shards.get_mut(&shard) else {
            return;
        };
        if let Mode::Degraded { failed_at } = state.mode {
            state.mode = Mode::Rejoining {
                failed_at,
                until: Instant::now() + span.saturating_add(self.rejoin_margin),
            };
            let still_degraded = !local.degraded_shards().is_empty();
            drop(local);
            if !still_degraded {
                self.degraded.store(false, Ordering::Relaxed);
                self.gauge.set(0);
            }
            tracing::info!(
                ?shard,
                "Redis budget store answers again; shared budgets resume"
            );
        }
    }

    /// The degraded shards and the tags that reach them, for the prober.
    pub(super) fn degraded_shards(&self) -> Vec<(Shard, String)> {
        self.local().degraded_shards()
    }

    /// Takes on reloaded limits: the mirror's are the full limits, the share's a replica's.
    pub(super) fn set_limits(&self, limits: &Limits, replicas: u32, unix_ms: i64) {
        let mut local = self.local();
        local
            .share
            .set_limits(share_limits(limits, replicas), unix_ms);
        local.mirror.set_limits(limits.clone(), unix_ms);
    }
}

impl Local {
    /// The state of a shard that is failing or about to, made on first use; `None` once
    /// `MAX_FAILING_SHARDS` others are tracked.
    fn state(&mut self, shard: Shard, tag: &str) -> Option<&mut ShardState> {
        if self.shards.len() >= MAX_FAILING_SHARDS && !self.shards.contains_key(&shard) {
            return None;
        }
        Some(self.shards.entry(shard).or_insert_with(|| ShardState {
            mode: Mode::Shared,
            struggling_since: None,
            tag: tag.to_owned(),
        }))
    }

    /// Whether no shard is degraded or rejoining (so no one relies on the local share).
    fn all_shared(&self) -> bool {
        self.shards.values().all(|state| state.mode == Mode::Shared)
    }

    fn degraded_shards(&self) -> Vec<(Shard, String)> {
        self.shards
            .iter()
            .filter(|(_, state)| matches!(state.mode, Mode::Degraded { .. }))
            .map(|(shard, state)| (*shard, state.tag.clone()))
            .collect()
    }

    /// Redis ran a script on `keys` of `shard`: its struggle is over, and these keys are
    /// usable.
    pub(super) fn script_ran(&mut self, shard: Shard, keys: &[BudgetKey]) {
        if let Some(state) = self.shards.get_mut(&shard) {
            state.struggling_since = None;
            if state.mode == Mode::Shared {
                self.shards.remove(&shard);
            }
        }
        if !self.unusable.is_empty() {
            for key in keys {
                if self.unusable.remove(key).is_some() {
                    tracing::info!(budget = ?key, "Redis can use this budget's key again");
                }
            }
        }
    }

    /// The local share's answer (quarantine first), or 503 when failing closed.
    pub(super) fn answer(
        &mut self,
        limits: &Limits,
        keys: &[BudgetKey],
        (now, unix_ms): (Tick, i64),
        failed_at: Tick,
        fail_closed: bool,
    ) -> Reservation {
        if fail_closed {
            return Reservation::StoreUnavailable;
        }
        quarantine(&mut self.share, limits, keys, now, failed_at);
        self.share.reserve(keys, now, unix_ms)
    }
}

impl Local {
    /// `answer` for each of a lane's `asks` in order, up to the first it does not grant.
    pub(super) fn answer_each(
        &mut self,
        limits: &Limits,
        asks: &[Vec<BudgetKey>],
        at: (Tick, i64),
        failed_at: Tick,
        fail_closed: bool,
    ) -> Vec<Reservation> {
        let mut answers = Vec::with_capacity(asks.len());
        for keys in asks {
            let answer = self.answer(limits, keys, at, failed_at, fail_closed);
            answers.push(answer);
            if answer != Reservation::Granted {
                break;
            }
        }
        answers
    }
}

/// Holds every window budget of `keys` full until one span after `failed_at`: the sends
/// made through Redis before then are unknown here. Idempotent (blocks never shorten).
pub(super) fn quarantine(
    book: &mut BudgetBook,
    limits: &Limits,
    keys: &[BudgetKey],
    now: Tick,
    failed_at: Tick,
) {
    for key in keys {
        if let BudgetSpec::Window(spec) = limits.spec_for(key) {
            book.block_until(
                key,
                now,
                failed_at.saturating_add_micros(spec.span_micros()),
            );
        }
    }
}

/// A lesson applied to this replica's local books.
pub(super) fn apply_local_lesson(book: &mut BudgetBook, lesson: Lesson, now: Tick, unix_ms: i64) {
    match lesson {
        // Not in the local books: to one replica, the other replicas' sends look like
        // another client's, and its local share already leaves room for them. Redis, which
        // holds every replica's sends, judges HubSpot's count instead (see `protocol`).
        Lesson::Usage { .. } | Lesson::Rejected { .. } => {}
        lesson => crate::store::budget_store::apply_lesson(book, lesson, now, unix_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: BudgetKey = BudgetKey::Burst {
        app_id: 1,
        portal_id: 10,
    };
    const OTHER: BudgetKey = BudgetKey::Burst {
        app_id: 2,
        portal_id: 20,
    };

    /// All of one Redis.
    const WHOLE: (Shard, &str) = (super::super::keys::WHOLE, "probe");

    fn slot(n: u16) -> Shard {
        Shard::new(n).unwrap()
    }

    fn failover() -> Failover {
        Failover::new(
            Limits::default(),
            1,
            OnFailure::LocalShare,
            (Duration::from_secs(1), Duration::from_secs(1)),
            IntGauge::new("g", "g").unwrap(),
        )
    }

    fn failure(trouble: Trouble) -> Failure {
        Failure {
            trouble,
            message: "test".into(),
        }
    }

    fn at_ms(ms: u64) -> Tick {
        Tick::from_millis(ms)
    }

    #[test]
    fn a_struggle_degrades_only_once_it_lasts_and_counts_from_its_start() {
        let store = failover();
        let slow = failure(Trouble::Struggling);
        assert_eq!(
            store.failed(at_ms(0), WHOLE, &[OWN], &slow),
            Verdict::TryAgain
        );
        assert_eq!(
            store.failed(at_ms(900), WHOLE, &[OWN], &slow),
            Verdict::TryAgain
        );
        // A script that works in between ends the struggle.
        store.local().script_ran(WHOLE.0, &[OWN]);
        assert_eq!(
            store.failed(at_ms(1_500), WHOLE, &[OWN], &slow),
            Verdict::TryAgain
        );
        assert!(!store.is_degraded());
        assert_eq!(
            store.failed(at_ms(2_500), WHOLE, &[OWN], &slow),
            Verdict::Degraded {
                failed_at: at_ms(1_500)
            }
        );
        assert!(store.is_degraded());
    }

    #[test]
    fn an_unreachable_redis_degrades_at_once() {
        let store = failover();
        assert_eq!(
            store.failed(at_ms(7), WHOLE, &[OWN], &failure(Trouble::Unreachable)),
            Verdict::Degraded {
                failed_at: at_ms(7)
            }
        );
        assert_eq!(store.health(), StoreHealth::DegradedLocalShare);
    }

    #[test]
    fn an_unusable_key_is_its_budgets_alone_until_a_script_on_it_works() {
        let store = failover();
        let bad_key = failure(Trouble::KeyUnusable);
        assert_eq!(
            store.failed(at_ms(10), WHOLE, &[OWN], &bad_key),
            Verdict::KeysUnusable {
                failed_at: at_ms(10)
            }
        );
        assert_eq!(
            store.failed(at_ms(50), WHOLE, &[OWN], &bad_key),
            Verdict::KeysUnusable {
                failed_at: at_ms(10)
            },
            "the quarantine counts from the first failure"
        );
        assert!(!store.is_degraded());
        store.local().script_ran(WHOLE.0, &[OTHER]);
        assert_eq!(store.local().unusable.len(), 1);
        store.local().script_ran(WHOLE.0, &[OWN]);
        assert!(store.local().unusable.is_empty());
    }

    #[test]
    fn a_failing_slot_degrades_alone_and_the_store_is_healthy_once_every_slot_rejoins() {
        let store = failover();
        let gone = failure(Trouble::Unreachable);
        assert_eq!(
            store.failed(at_ms(5), (slot(7140), "p7"), &[OWN], &gone),
            Verdict::Degraded {
                failed_at: at_ms(5)
            }
        );
        assert_eq!(
            store.mode(&mut store.local(), slot(7140)),
            Mode::Degraded {
                failed_at: at_ms(5)
            }
        );
        assert_eq!(store.mode(&mut store.local(), slot(99)), Mode::Shared);
        store.failed(at_ms(6), (slot(99), "p20"), &[OTHER], &gone);
        assert_eq!(store.degraded_shards().len(), 2);
        store.resume(slot(7140), Duration::ZERO);
        assert!(store.is_degraded(), "slot 99 is still degraded");
        assert!(matches!(
            store.mode(&mut store.local(), slot(7140)),
            Mode::Rejoining { .. }
        ));
        store.resume(slot(99), Duration::ZERO);
        assert!(!store.is_degraded());
        assert_eq!(store.health(), StoreHealth::Healthy);
        assert!(store.degraded_shards().is_empty());
    }
}
