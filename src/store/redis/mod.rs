//! Owns budgets shared by every replica through Redis: one Lua script per lane's batch of
//! sends (each send atomic, in the lane's order) on Redis's clock, lessons applied in
//! Redis, and the degraded modes while Redis is away.
//!
//! # Batches
//! A lane hands `reserve_many` the calls it would send one at a time, in that order; the
//! script grants a prefix of them and says why the next waits, and a granted batch comes
//! back with what one more send would meet. Either "not before" is kept per budget
//! (`held`), so the lane sleeps until then or until HubSpot's count on the budget lands,
//! instead of asking Redis at once only to hear it: a burst from idle costs the probe's
//! round trip and one more, whether the probe left alone or at the head of a batch whose
//! rest it held back. With other replicas a batch takes at most this replica's share of
//! a window, and then its turn ends for a while (`turns`), which no lesson shortens.
//!
//! # Time
//! The pacer hands every store its own monotonic `Tick` (`now`). Replicas' ticks share no
//! epoch, so none of them is written to Redis: the scripts read `TIME` and every stored
//! timestamp is Redis-time microseconds (unix µs). A refusal comes back as a *delay*
//! (`not_before - redis_now`) and is turned into the caller's clock as
//! `now + elapsed_round_trip + delay`: the local instant at which Redis's clock will have
//! reached `not_before`, plus at most the request's half of the round trip. Waking there
//! never comes early (no second refused round trip, no polling storm); it can come up to
//! one round trip late, which on a LAN is well under a millisecond. Lessons carry local
//! ticks (`BlockUntil`) and are sent the same way, as a delay from `now`. Daily budgets
//! count on Redis's wall clock too (`TIME` in ms), so every replica agrees on when a
//! portal's day ends; `unix_ms` from the caller is only used by the local books.
//!
//! # Key layout
//! `{prefix}:{p<portal>}:burst:<app>` / `…:search` (list of send times, oldest first,
//! trimmed to the window's capacity) with `…:blk` beside each (Redis-time µs before which
//! the window counts as full: a 429's pause); `{prefix}:{p<portal>}:daily` (hash `day`,
//! `used`, `exhausted`); `{prefix}:{u<hash>}:burst` for unresolved credentials and
//! `{prefix}:{anon}:global` for anonymous calls; the prober's own window is
//! `{prefix}:{probe}:live` (in a cluster `{prefix}:{<tag>}:live` beside each degraded
//! slot's budgets). The `{…}` hash tag is the portal, so the keys of one reservation sit in
//! one Redis Cluster slot, which the cluster connection (`link`) routes the script to. Logs expire one span after their
//! last send, blocks when they end, daily hashes a minute after their day: idle keys go.
//! Specs travel in `ARGV` with every call, so replicas must share `[budgets]`; a reload
//! takes effect with the next call, and the keys' state carries over.
//!
//! # When Redis fails
//! Every mode below is a *shard's*: all of one Redis, or one slot of a cluster (a slot
//! lives on one master and fails over with it), so a dead master degrades its slots'
//! budgets alone and the prober brings each back through a key of its own tag.
//! A connection that fails (refused, dropped) flips the shard to *degraded* at once. Redis
//! that is reached but does not run the script (no answer within `[store]
//! command_timeout_ms`, OOM, READONLY after a failover, BUSY) is *struggling*: the call
//! tries again 50 ms later, and only a struggle lasting `degrade_after_ms` with no script
//! working in between degrades the store (its quarantine counting from the struggle's
//! start), so a Redis paused for 300 ms costs about 300 ms. A script that fails on what a
//! key holds (a wrong type planted at a budget's key) makes that call's budgets *unusable*:
//! they are answered like a degraded store's, after a quarantine from their first failure,
//! while every other budget stays shared, until a script on them works again.
//!
//! Degraded with `on_failure = "fail_closed"`, reservations answer `StoreUnavailable`
//! (503). With `"local_share"` a local `BudgetBook` whose limits are each budget's share
//! (`limit / replicas`, at least 1) answers, after a *quarantine*: sends made through Redis
//! before the failure are not known locally (other replicas' sends least of all), so a
//! window budget admits nothing until one span after the failure, when they have all
//! left. A prober runs the reservation script on a key of its own every
//! `reconnect_interval_ms` while degraded (the connection manager reconnects by itself; a
//! `PING` answers while scripts still fail); once the script works the store *rejoins*:
//! for the longest span plus two probe intervals and a timeout, a send needs a grant from
//! Redis *and* from the local share, because sends made during the outage are unknown to
//! Redis (a restarted Redis knows nothing at all); after that Redis alone decides.
//! Replicas that notice the return more than two probe intervals apart, or a replica cut
//! off from a Redis the others still reach, can exceed a window by the cut-off replicas'
//! shares; `margin_slots` is the knob for that. Daily counts during an outage are per
//! replica (`daily_limit / replicas` from the outage's start); HubSpot's `DAILY` 429 still
//! stops them.
//!
//! # Estimates
//! `estimate_wait` answers from a local mirror: a `BudgetBook` with the full limits that
//! records this replica's own grants and, for each refusal, blocks the budget that refused
//! until the "not before" Redis gave. It cannot see other replicas' sends, so it
//! underestimates under shared load; a call it admits to the queue may then meet its
//! deadline in the queue (`DeadlineExpired`) instead of being refused on arrival.

mod failover;
mod keys;
mod link;
mod protocol;
mod settings;
mod turns;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use hubgate_engine::{BudgetKey, DailyExhausted, Limits, Reservation, Tick};
use prometheus::IntGauge;
use tokio::time::Instant;

pub use failover::StoreHealth;
pub use link::Link;
pub use settings::{OnFailure, RedisSettings};

use crate::store::budget_store::{BudgetStore, BudgetView, Lesson, StoreFuture};
use failover::{apply_local_lesson, quarantine, Failover, Mode, Verdict};
use keys::{dedup, max_span_micros, shard_of, Shard};
use protocol::Redis;

/// Most reservations a lane sends in one script call: past HubSpot's largest burst window
/// (190 per 10 s), so a burst from idle never needs a second batch for want of room, and
/// small enough that one script stays well under a millisecond of Redis's time.
const MAX_BATCH: usize = 256;

/// Most budgets held at once; past it the holds are forgotten (a lane then asks Redis).
const MAX_HELD: usize = 4_096;

/// How soon a call whose script found Redis struggling tries again.
const TRY_AGAIN_AFTER: Duration = Duration::from_millis(50);

/// Budget state in Redis, shared by every replica; cloned handles share one connection.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: Redis,
    failover: Failover,
    /// The full limits: what Redis enforces, and what the mirror estimates with. Swapped
    /// whole by a reload; every script call reads them once.
    limits: arc_swap::ArcSwap<Limits>,
    /// Budgets Redis said wait until a tick: the refusal that ended a batch, or after a
    /// granted one what one more send would meet (a probe just sent holds the rest until
    /// its answer), so a lane woken by an arrival does not ask at once only to hear it.
    /// Dropped when this replica's reading of HubSpot's count on the budget lands (it may
    /// free a slot sooner). Another replica's lessons do not drop it: a slot they free
    /// sooner (its probe answered) is met at the hold's end, when the lane asks anyway.
    held: Mutex<HashMap<BudgetKey, Tick>>,
    /// Budgets whose lane took a replica's share in a batch granted whole, until its turn
    /// ends (see `turns`): no lesson ends it early, so the others get theirs.
    turn_ends: Mutex<HashMap<BudgetKey, Tick>>,
    /// Replicas sharing the budgets, to size the local share of reloaded limits.
    replicas: u32,
    reconnect_interval: Duration,
}

impl RedisStore {
    /// A store on `settings.url`; connects lazily, so a Redis that is down at start only
    /// makes the first reservation find it degraded. Starts the prober on the current
    /// runtime; it ends when the last handle is dropped.
    pub fn new(
        settings: RedisSettings,
        limits: Limits,
        gauge: IntGauge,
    ) -> anyhow::Result<RedisStore> {
        let redis = Redis::connect(&settings)?;
        let rejoin_margin = settings
            .reconnect_interval
            .saturating_mul(2)
            .saturating_add(settings.command_timeout);
        let failover = Failover::new(
            limits.clone(),
            settings.replicas,
            settings.on_failure,
            (rejoin_margin, settings.degrade_after),
            gauge,
        );
        let inner = Arc::new(Inner {
            redis,
            failover,
            limits: arc_swap::ArcSwap::from_pointee(limits),
            held: Mutex::default(),
            turn_ends: Mutex::default(),
            replicas: settings.replicas,
            reconnect_interval: settings.reconnect_interval,
        });
        tokio::spawn(probe(Arc::downgrade(&inner)));
        Ok(RedisStore { inner })
    }

    /// Whether Redis is unreachable now, and what is done about it.
    pub fn health(&self) -> StoreHealth {
        match self.inner.failover.health() {
            StoreHealth::Healthy => StoreHealth::Healthy,
            _ if self.inner.redis.is_cluster() => StoreHealth::SlotsDegraded,
            degraded => degraded,
        }
    }

    /// Scripts sent to Redis so far (reservations and lessons).
    pub fn round_trips(&self) -> u64 {
        self.inner.redis.round_trips()
    }
}

impl Inner {
    /// A lane's reservations in one script call: each all-or-nothing, in order, up to the
    /// first refused (see `BudgetStore::reserve_many`).
    async fn reserve_many(
        &self,
        asks: &[&[BudgetKey]],
        now: Tick,
        unix_ms: i64,
    ) -> Vec<Reservation> {
        let mut asks: Vec<Vec<BudgetKey>> = asks.iter().map(|keys| dedup(keys)).collect();
        if asks.iter().all(Vec::is_empty) {
            return vec![Reservation::Granted; asks.len()];
        }
        let limits = self.limits.load_full();
        // A lane's asks are one owner's budgets, under one hash tag: one shard.
        let Some(first) = asks.iter().find_map(|keys| keys.first()) else {
            return vec![Reservation::Granted; asks.len()];
        };
        let (shard, tag) = self.shard_of(first);
        // What the local share refused while it co-signs: the answer to the ask after the
        // last one Redis is asked for.
        let mut cosign_refusal = None;
        {
            let failover = &self.failover;
            let mut local = failover.local();
            match failover.mode(&mut local, shard) {
                Mode::Shared => {}
                Mode::Degraded { failed_at } => {
                    return local.answer_each(
                        &limits,
                        &asks,
                        (now, unix_ms),
                        failed_at,
                        failover.fails_closed(),
                    );
                }
                Mode::Rejoining { failed_at, .. } => {
                    // The local share co-signs; a slot it grants and Redis then refuses stays
                    // spent locally, which only errs on the safe side for the rest of the rejoin.
                    let cosigned =
                        local.answer_each(&limits, &asks, (now, unix_ms), failed_at, false);
                    if cosigned.last() != Some(&Reservation::Granted) {
                        cosign_refusal = cosigned.last().copied();
                        asks.truncate(cosigned.len() - 1);
                    }
                    if asks.is_empty() {
                        return cosigned;
                    }
                }
            }
        }
        let started = Instant::now();
        match self.redis.reserve(&asks, &limits).await {
            Ok(reply) => {
                let elapsed = started.elapsed();
                let mut local = self.failover.local();
                let mut answers = vec![Reservation::Granted; reply.granted];
                for keys in &asks[..reply.granted] {
                    local.script_ran(shard, keys);
                    local.mirror.reserve(keys, now, unix_ms);
                }
                if reply.granted == asks.len() {
                    self.end_turn(&asks, &limits, now.saturating_add(elapsed));
                }
                let Some(answer) = reply.refusal else {
                    answers.extend(cosign_refusal);
                    return answers;
                };
                let reservation = answer.into_reservation(now, elapsed);
                let Some(keys) = asks.get(reply.granted) else {
                    // All granted, and one more like the last would wait: say so to the
                    // lane before it asks.
                    if let (Reservation::NotBefore(t), Some(keys)) = (reservation, asks.last()) {
                        self.hold(answer.refusing_key().and_then(|i| keys.get(i)), t);
                    }
                    answers.extend(cosign_refusal);
                    return answers;
                };
                local.script_ran(shard, keys);
                match reservation {
                    Reservation::NotBefore(t) => {
                        let key = answer.refusing_key().and_then(|i| keys.get(i));
                        if let Some(key) = key {
                            local.mirror.block_until(key, now, t);
                        }
                        // Held like a granted batch's look-ahead, which says the same: were
                        // it not, an arrival that woke the lane meanwhile would send it
                        // straight back to Redis to hear this again (a probe's refused
                        // followers, once more before the probe's answer lands).
                        self.hold(key, t);
                    }
                    Reservation::DailyExhausted(_) => {
                        for key in keys {
                            if let BudgetKey::Daily { portal_id } = key {
                                local.mirror.mark_daily_exhausted(*portal_id, now, unix_ms);
                            }
                        }
                    }
                    Reservation::Granted | Reservation::StoreUnavailable => {}
                }
                answers.push(reservation);
                answers
            }
            // A failed batch is one failed script: every ask in it is answered as a single
            // reservation's failure would be, over the budgets of them all.
            Err(failure) => {
                match self
                    .failover
                    .failed(now, (shard, &tag), &dedup(&asks.concat()), &failure)
                {
                    Verdict::Degraded { failed_at } | Verdict::KeysUnusable { failed_at } => {
                        let fail_closed = self.failover.fails_closed();
                        self.failover.local().answer_each(
                            &limits,
                            &asks,
                            (now, unix_ms),
                            failed_at,
                            fail_closed,
                        )
                    }
                    Verdict::TryAgain => vec![Reservation::NotBefore(
                        now.saturating_add(started.elapsed())
                            .saturating_add(TRY_AGAIN_AFTER),
                    )],
                }
            }
        }
    }

    /// A batch granted whole took a replica's share of a window: the lane leaves the rest
    /// to the other replicas for its turn's gap from `now`.
    fn end_turn(&self, asks: &[Vec<BudgetKey>], limits: &Limits, now: Tick) {
        let Some(turn) = asks
            .first()
            .and_then(|keys| turns::turn_of(keys, limits, self.replicas))
        else {
            return;
        };
        if asks.len() >= turn.share {
            let mut turn_ends = lock(&self.turn_ends);
            if turn_ends.len() >= MAX_HELD {
                turn_ends.clear();
            }
            turn_ends.insert(turn.key, now.saturating_add(turn.gap));
        }
    }

    /// Redis said one more reservation on `key` would wait until `t`: the lane asks again
    /// only then, or once a lesson about the key may have freed a slot sooner.
    fn hold(&self, key: Option<&BudgetKey>, t: Tick) {
        if let (Some(key), true) = (key, t != Tick::MAX) {
            let mut held = lock(&self.held);
            if held.len() >= MAX_HELD {
                held.clear();
            }
            held.insert(*key, t);
        }
    }

    async fn learn(&self, lesson: Lesson, now: Tick, unix_ms: i64) {
        let (shard, tag) = self.shard_of(&lesson_key(lesson));
        let mode = {
            let mut local = self.failover.local();
            apply_local_lesson(&mut local.mirror, lesson, now, unix_ms);
            let mode = self.failover.mode(&mut local, shard);
            if mode != Mode::Shared {
                apply_local_lesson(&mut local.share, lesson, now, unix_ms);
            }
            mode
        };
        if matches!(mode, Mode::Degraded { .. }) {
            return;
        }
        let limits = self.limits.load_full();
        if let Err(failure) = self.redis.learn(lesson, now, &limits).await {
            // A lesson is not sent again: while Redis struggles it is lost to Redis, as a
            // timed-out one may already have been applied.
            self.failover.failed(now, (shard, &tag), &[], &failure);
            apply_local_lesson(&mut self.failover.local().share, lesson, now, unix_ms);
        }
        // Only once Redis has it: the lane woken after it must meet the lesson there. Only
        // HubSpot's count can free a slot sooner (it answers a probe, and may lower another
        // client's share); every other lesson moves "not before" later, and dropping the
        // hold on one (a probe's `ArrivedBy` lands just before its `Usage`) would let an
        // arrival send the lane to Redis to be refused while the probe is still unanswered.
        if matches!(lesson, Lesson::Usage { .. }) {
            lock(&self.held).remove(&lesson_key(lesson));
        }
    }

    /// Where `key` lives: all of one Redis, or its slot of a cluster.
    fn shard_of(&self, key: &BudgetKey) -> (Shard, String) {
        shard_of(key, self.redis.is_cluster())
    }

    /// How long rejoining co-signs with the local share: the longest span (the margin on
    /// top is the failover's).
    fn longest_span(&self) -> Duration {
        Duration::from_micros(max_span_micros(&self.limits.load()))
    }
}

/// The budget a lesson is about.
fn lesson_key(lesson: Lesson) -> BudgetKey {
    match lesson {
        Lesson::BlockUntil { key, .. }
        | Lesson::Remaining { key, .. }
        | Lesson::Usage { key, .. }
        | Lesson::Rejected { key }
        | Lesson::ArrivedBy { key, .. } => key,
        Lesson::DailyExhausted { portal_id } => BudgetKey::Daily { portal_id },
    }
}

/// While degraded, runs the reservation script on the probe key every `reconnect_interval`
/// and rejoins once it works; while shared it only reads a flag. Ends when the store is
/// dropped.
async fn probe(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => inner.reconnect_interval,
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.failover.is_degraded() {
            continue;
        }
        // Each degraded slot of a cluster is probed through its own tag, all at once: a
        // master's slots come back together when its replica is promoted, and a round
        // lasts one command timeout however many slots it held.
        let mut probes = tokio::task::JoinSet::new();
        for (shard, tag) in inner.failover.degraded_shards() {
            let inner = inner.clone();
            probes.spawn(async move {
                match inner.redis.probe(&tag).await {
                    Ok(()) => inner.failover.resume(shard, inner.longest_span()),
                    Err(failure) => tracing::debug!(
                        error = failure.message,
                        ?shard,
                        "Redis budget store still cannot run its script"
                    ),
                }
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

impl BudgetStore for RedisStore {
    fn reserve<'a>(
        &'a self,
        keys: &'a [BudgetKey],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            let answers = self.inner.reserve_many(&[keys], now, unix_ms).await;
            answers.first().copied().unwrap_or(Reservation::Granted)
        })
    }

    fn reserve_many<'a>(
        &'a self,
        asks: &'a [&'a [BudgetKey]],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Vec<Reservation>> {
        Box::pin(self.inner.reserve_many(asks, now, unix_ms))
    }

    fn batch_limit(&self, keys: &[BudgetKey]) -> usize {
        let inner = &self.inner;
        turns::turn_of(keys, &inner.limits.load(), inner.replicas)
            .map_or(MAX_BATCH, |turn| turn.share.min(MAX_BATCH))
    }

    fn known_wait(&self, keys: &[BudgetKey], now: Tick) -> Option<Tick> {
        if self.inner.failover.is_degraded() {
            return None;
        }
        let (held, turn_ends) = (lock(&self.inner.held), lock(&self.inner.turn_ends));
        keys.iter()
            .flat_map(|key| [held.get(key), turn_ends.get(key)])
            .flatten()
            .copied()
            .filter(|&t| t > now)
            .max()
    }

    fn try_reserve_now(&self, _: &[BudgetKey], _: Tick, _: i64) -> Option<Reservation> {
        // Every answer needs the round trip; the lane's driver does it.
        None
    }

    fn estimate_wait(
        &self,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        ahead: usize,
    ) -> Result<Duration, DailyExhausted> {
        let failover = &self.inner.failover;
        let Some(first) = keys.first() else {
            return Ok(Duration::ZERO);
        };
        let (shard, _) = self.inner.shard_of(first);
        let mut local = failover.local();
        match failover.mode(&mut local, shard) {
            // Queue it; the reservation answers 503 at once.
            Mode::Degraded { .. } if failover.fails_closed() => Ok(Duration::ZERO),
            Mode::Degraded { failed_at } => {
                quarantine(
                    &mut local.share,
                    &self.inner.limits.load(),
                    keys,
                    now,
                    failed_at,
                );
                local.share.estimate_wait(keys, now, unix_ms, ahead)
            }
            Mode::Shared | Mode::Rejoining { .. } => {
                local.mirror.estimate_wait(keys, now, unix_ms, ahead)
            }
        }
    }

    fn learn(&self, lesson: Lesson, now: Tick, unix_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.inner.learn(lesson, now, unix_ms))
    }

    fn learns_locally(&self) -> bool {
        false
    }

    /// Redis stamps a send at its own `TIME` while the script runs, somewhere between the
    /// ask and its answer: the answer's arrival is the first local tick surely not before
    /// it, and errs late only by the reply's way back.
    fn stamp_tick(&self, _asked_at: Tick, answered_at: Tick) -> Tick {
        answered_at
    }

    fn set_limits(&self, limits: Limits, unix_ms: i64) {
        let inner = &self.inner;
        inner.failover.set_limits(&limits, inner.replicas, unix_ms);
        lock(&inner.held).clear();
        lock(&inner.turn_ends).clear();
        inner.limits.store(Arc::new(limits));
    }

    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        lock(&self.inner.held).retain(|_, t| *t > now);
        lock(&self.inner.turn_ends).retain(|_, t| *t > now);
        let mut local = self.inner.failover.local();
        local.share.evict_idle(now, unix_ms, idle_ttl);
        local.mirror.evict_idle(now, unix_ms, idle_ttl)
    }

    fn snapshot(&self, now: Tick, unix_ms: i64) -> Vec<BudgetView> {
        // This replica's view: its own grants and what Redis refused it. The shared truth
        // is in Redis; reading every key there at each scrape would cost a round trip per
        // budget, so the admin API and metrics show the local mirror.
        BudgetView::all(&self.inner.failover.local().mirror, now, unix_ms)
    }

    fn len(&self) -> usize {
        self.inner.failover.local().mirror.len()
    }

    fn keys(&self) -> Vec<BudgetKey> {
        let local = self.inner.failover.local();
        local.mirror.iter().map(|(key, _)| *key).collect()
    }

    fn view(&self, key: &BudgetKey, now: Tick, unix_ms: i64) -> Option<BudgetView> {
        let local = self.inner.failover.local();
        local
            .mirror
            .get(key)
            .map(|budget| BudgetView::of(*key, budget, now, unix_ms))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A map of hints: consistent after any panic, and worth keeping.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
