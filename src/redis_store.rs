//! Owns budgets shared by every replica through Redis: one atomic Lua script per send on
//! Redis's clock, lessons applied in Redis, and the degraded modes while Redis is away.
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
//! `{prefix}:{anon}:global` for anonymous calls. The `{…}` hash tag is the portal, so the
//! keys of one reservation sit in one Redis Cluster slot. Logs expire one span after their
//! last send, blocks when they end, daily hashes a minute after their day: idle keys go.
//! Specs travel in `ARGV` with every call, so replicas must share `[budgets]`; a reload
//! takes effect with the next call, and the keys' state carries over.
//!
//! # When Redis fails
//! Any error or timeout (`[store] command_timeout_ms`) flips the store to *degraded*. With
//! `on_failure = "fail_closed"` reservations answer `StoreUnavailable` (503). With
//! `"local_share"` a local `BudgetBook` whose limits are each budget's share
//! (`limit / replicas`, at least 1) answers, after a *quarantine*: sends made through Redis
//! before the failure are not known locally (other replicas' sends least of all), so a
//! window budget admits nothing until one span after the failure, when they have all
//! left. A prober pings Redis every `reconnect_interval_ms` while degraded (the connection
//! manager reconnects by itself); once Redis answers the store *rejoins*: for the longest
//! span plus two probe intervals and a timeout, a send needs a grant from Redis *and* from
//! the local share, because sends made during the outage are unknown to Redis (a restarted
//! Redis knows nothing at all); after that Redis alone decides. Replicas that notice the
//! return more than two probe intervals apart, or a replica cut off from a Redis the others
//! still reach, can exceed a window by the cut-off replicas' shares; `margin_slots` is the
//! knob for that. Daily counts during an outage are per replica (`daily_limit / replicas`
//! from the outage's start); HubSpot's `DAILY` 429 still stops them.
//!
//! # Estimates
//! `estimate_wait` answers from a local mirror: a `BudgetBook` with the full limits that
//! records this replica's own grants and, for each refusal, blocks the budget that refused
//! until the "not before" Redis gave. It cannot see other replicas' sends, so it
//! underestimates under shared load; a call it admits to the queue may then meet its
//! deadline in the queue (`DeadlineExpired`) instead of being refused on arrival.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::IntGauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::time::Instant;

use crate::config::StoreConfig;
use hubgate_engine::{
    BudgetBook, BudgetKey, BudgetSpec, DailyExhausted, DailySpec, Limits, Reservation, Tick,
    WindowSpec,
};
use crate::store::{BudgetStore, BudgetView, Lesson, MemoryStore, StoreFuture};

/// What a degraded store does with calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Serve each budget's share (`limit / replicas`) from memory.
    LocalShare,
    /// Refuse with 503.
    FailClosed,
}

/// How the store answers right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Redis answers every reservation.
    Shared,
    /// Redis failed at `failed_at` (caller's tick); the local share or a 503 answers.
    Degraded { failed_at: Tick },
    /// Redis is back; until `until`, a send needs Redis *and* the local share.
    Rejoining { failed_at: Tick, until: Instant },
}

/// Whether the store serves from Redis, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// Budgets are shared (or local by configuration).
    Healthy,
    /// Redis is unreachable and each replica serves its local share.
    DegradedLocalShare,
    /// Redis is unreachable and calls are refused with 503.
    DegradedFailClosed,
}

/// Settings of a Redis store, from `[store]`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// What to do while Redis is unreachable.
    pub on_failure: OnFailure,
    /// Replicas sharing the budgets; divides the local share.
    pub replicas: u32,
    /// Bound on one Redis command.
    pub command_timeout: Duration,
    /// Bound on one connection attempt.
    pub connect_timeout: Duration,
    /// Period of the prober while degraded.
    pub reconnect_interval: Duration,
    /// PEM CA bundle that alone is trusted for a `rediss://` URL; `None`: the public roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisSettings {
    /// The settings `[store]` describes (which must be valid).
    pub fn from_config(config: &StoreConfig) -> RedisSettings {
        RedisSettings {
            url: config.redis_url.clone(),
            key_prefix: config.key_prefix.clone(),
            on_failure: if config.on_failure == "fail_closed" {
                OnFailure::FailClosed
            } else {
                OnFailure::LocalShare
            },
            replicas: config.replicas.max(1),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            reconnect_interval: Duration::from_millis(config.reconnect_interval_ms),
            ca_file: (!config.ca_file.is_empty()).then(|| config.ca_file.clone().into()),
        }
    }
}

/// The store `[store]` asks for: memory, or Redis shared by replicas. Registers
/// `hubgate_store_degraded` either way (always 0 for memory); returns the store and a
/// readiness probe for `/readyz`. Must run inside the tokio runtime.
pub fn build_store(
    config: &StoreConfig,
    limits: Limits,
    degraded: IntGauge,
) -> anyhow::Result<(Arc<dyn BudgetStore>, Option<RedisStore>)> {
    if !config.is_redis() {
        return Ok((Arc::new(MemoryStore::new(limits)), None));
    }
    let store = RedisStore::new(RedisSettings::from_config(config), limits, degraded)?;
    Ok((Arc::new(store.clone()), Some(store)))
}

/// Budget state in Redis, shared by every replica; cloned handles share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Multiplexed connection that reconnects by itself; clones are cheap handles.
    conn: ConnectionManager,
    /// Key prefix from `[store] key_prefix`.
    prefix: String,
    /// The full limits: what Redis enforces, and what the mirror estimates with. Swapped
    /// whole by a reload; every script call reads them once.
    limits: arc_swap::ArcSwap<Limits>,
    /// Replicas sharing the budgets, to size the local share of reloaded limits.
    replicas: u32,
    on_failure: OnFailure,
    command_timeout: Duration,
    reconnect_interval: Duration,
    /// How long rejoining lasts beyond the longest span: two probe periods and a timeout.
    rejoin_margin: Duration,
    /// The reservation script (EVALSHA, falling back to EVAL after a Redis restart).
    reserve_script: Script,
    /// The script applying one lesson.
    learn_script: Script,
    /// Mode and local books; never held across an `.await`.
    local: Mutex<Local>,
    /// Mirrors `Mode::Degraded` for lock-free reads (readiness, metrics).
    degraded: AtomicBool,
    /// `hubgate_store_degraded`.
    gauge: IntGauge,
    /// Reservation and lesson scripts sent to Redis, for benchmarks and tests.
    round_trips: AtomicU64,
}

struct Local {
    mode: Mode,
    /// Full limits; this replica's grants and Redis's refusals, for `estimate_wait`.
    mirror: BudgetBook,
    /// Each budget's share; answers while degraded and co-signs while rejoining.
    share: BudgetBook,
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
        let client = match &settings.ca_file {
            None => redis::Client::open(settings.url.as_str()),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("[store] ca_file: reading {}: {e}", path.display())
                })?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(settings.url.as_str(), certificates)
            }
        }
        .map_err(|e| anyhow::anyhow!("[store] redis_url: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            // Reconnect attempts are cheap and the prober paces recovery; keep the manager's
            // own backoff short so a returning Redis is used at once.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(settings.reconnect_interval);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| anyhow::anyhow!("[store] redis_url: {e}"))?;
        let rejoin_margin = settings
            .reconnect_interval
            .saturating_mul(2)
            .saturating_add(settings.command_timeout);
        let share = share_limits(&limits, settings.replicas);
        gauge.set(0);
        let inner = Arc::new(Inner {
            conn,
            prefix: settings.key_prefix,
            limits: arc_swap::ArcSwap::from_pointee(limits.clone()),
            replicas: settings.replicas,
            on_failure: settings.on_failure,
            command_timeout: settings.command_timeout,
            reconnect_interval: settings.reconnect_interval,
            rejoin_margin,
            reserve_script: Script::new(RESERVE_LUA),
            learn_script: Script::new(LEARN_LUA),
            local: Mutex::new(Local {
                mode: Mode::Shared,
                mirror: BudgetBook::new(limits),
                share: BudgetBook::new(share),
            }),
            degraded: AtomicBool::new(false),
            gauge,
            round_trips: AtomicU64::new(0),
        });
        tokio::spawn(probe(Arc::downgrade(&inner)));
        Ok(RedisStore { inner })
    }

    /// Whether Redis is unreachable now, and what is done about it.
    pub fn health(&self) -> StoreHealth {
        if !self.inner.degraded.load(Ordering::Relaxed) {
            StoreHealth::Healthy
        } else if self.inner.on_failure == OnFailure::FailClosed {
            StoreHealth::DegradedFailClosed
        } else {
            StoreHealth::DegradedLocalShare
        }
    }

    /// Scripts sent to Redis so far (reservations and lessons).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        // Every step under the lock is a whole book operation; keep serving after a panic.
        self.local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The mode now, ending a finished rejoin (the local share is then forgotten).
    fn mode(&self, local: &mut Local) -> Mode {
        if let Mode::Rejoining { until, .. } = local.mode {
            if Instant::now() >= until {
                local.mode = Mode::Shared;
                local.share = BudgetBook::new(local.share.limits().clone());
            }
        }
        local.mode
    }

    /// Redis failed: go degraded (once per outage) and say so.
    fn fail(&self, now: Tick, error: &str) {
        let mut local = self.local();
        match local.mode {
            Mode::Degraded { .. } => return,
            // A failure while rejoining keeps the first failure's quarantine and the share's
            // record of the outage so far.
            Mode::Rejoining { failed_at, .. } => local.mode = Mode::Degraded { failed_at },
            Mode::Shared => {
                local.mode = Mode::Degraded { failed_at: now };
                local.share = BudgetBook::new(local.share.limits().clone());
            }
        }
        drop(local);
        self.degraded.store(true, Ordering::Relaxed);
        self.gauge.set(1);
        tracing::warn!(
            error,
            on_failure = ?self.on_failure,
            "Redis budget store unreachable; serving degraded until it answers again"
        );
    }

    /// How long rejoining lasts: the longest span plus two probe periods and a timeout.
    fn rejoin_for(&self) -> Duration {
        Duration::from_micros(max_span_micros(&self.limits.load()))
            .saturating_add(self.rejoin_margin)
    }

    /// Redis answered the prober: rejoin.
    fn resume(&self) {
        let mut local = self.local();
        if let Mode::Degraded { failed_at } = local.mode {
            local.mode = Mode::Rejoining {
                failed_at,
                until: Instant::now() + self.rejoin_for(),
            };
            drop(local);
            self.degraded.store(false, Ordering::Relaxed);
            self.gauge.set(0);
            tracing::info!("Redis budget store answers again; shared budgets resume");
        }
    }

    /// The local share's answer (quarantine first), or 503 when failing closed.
    fn local_answer(
        &self,
        local: &mut Local,
        keys: &[BudgetKey],
        now: Tick,
        unix_ms: i64,
        failed_at: Tick,
        fail_closed: bool,
    ) -> Reservation {
        if fail_closed {
            return Reservation::StoreUnavailable;
        }
        quarantine(&mut local.share, &self.limits.load(), keys, now, failed_at);
        local.share.reserve(keys, now, unix_ms)
    }

    async fn reserve(&self, keys: &[BudgetKey], now: Tick, unix_ms: i64) -> Reservation {
        let keys = dedup(keys);
        if keys.is_empty() {
            return Reservation::Granted;
        }
        {
            let mut local = self.local();
            match self.mode(&mut local) {
                Mode::Shared => {}
                Mode::Degraded { failed_at } => {
                    let fail_closed = self.on_failure == OnFailure::FailClosed;
                    return self.local_answer(
                        &mut local,
                        &keys,
                        now,
                        unix_ms,
                        failed_at,
                        fail_closed,
                    );
                }
                Mode::Rejoining { failed_at, .. } => {
                    // The local share co-signs; a slot it grants and Redis then refuses stays
                    // spent locally, which only errs on the safe side for the rest of the rejoin.
                    match self.local_answer(&mut local, &keys, now, unix_ms, failed_at, false) {
                        Reservation::Granted => {}
                        other => return other,
                    }
                }
            }
        }
        let started = Instant::now();
        match self.run_reserve(&keys).await {
            Ok(answer) => {
                let elapsed = started.elapsed();
                let mut local = self.local();
                let reservation = answer.into_reservation(now, elapsed);
                match reservation {
                    Reservation::Granted => {
                        local.mirror.reserve(&keys, now, unix_ms);
                    }
                    Reservation::NotBefore(t) => {
                        if let Some(key) = answer.refusing_key().and_then(|i| keys.get(i)) {
                            local.mirror.block_until(key, now, t);
                        }
                    }
                    Reservation::DailyExhausted(_) => {
                        for key in &keys {
                            if let BudgetKey::Daily { portal_id } = key {
                                local.mirror.mark_daily_exhausted(*portal_id, now, unix_ms);
                            }
                        }
                    }
                    Reservation::StoreUnavailable => {}
                }
                reservation
            }
            Err(error) => {
                self.fail(now, &error);
                let mut local = self.local();
                let failed_at = match local.mode {
                    Mode::Degraded { failed_at } | Mode::Rejoining { failed_at, .. } => failed_at,
                    Mode::Shared => now,
                };
                let fail_closed = self.on_failure == OnFailure::FailClosed;
                self.local_answer(&mut local, &keys, now, unix_ms, failed_at, fail_closed)
            }
        }
    }

    /// One script round trip, bounded by the command timeout.
    async fn run_reserve(&self, keys: &[BudgetKey]) -> Result<Answer, String> {
        let mut invocation = self.reserve_script.prepare_invoke();
        let limits = self.limits.load();
        invocation.arg(keys.len());
        for key in keys {
            let name = key_name(&self.prefix, key);
            match limits.spec_for(key) {
                BudgetSpec::Window(spec) => {
                    invocation
                        .key(name.clone())
                        .key(format!("{name}:blk"))
                        .arg("w")
                        .arg(spec.capacity())
                        .arg(spec.span_micros());
                }
                BudgetSpec::Daily(spec) => {
                    invocation
                        .key(name)
                        .arg("d")
                        .arg(spec.limit)
                        .arg(i64::from(spec.utc_offset_secs) * 1_000);
                }
            }
        }
        let mut conn = self.conn.clone();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Vec<i64> =
            bounded(self.command_timeout, invocation.invoke_async(&mut conn)).await?;
        Answer::parse(&reply)
            .ok_or_else(|| format!("unexpected reply from the reservation script: {reply:?}"))
    }

    async fn learn(&self, lesson: Lesson, now: Tick, unix_ms: i64) {
        let mode = {
            let mut local = self.local();
            apply_lesson(&mut local.mirror, lesson, now, unix_ms);
            let mode = self.mode(&mut local);
            if mode != Mode::Shared {
                apply_lesson(&mut local.share, lesson, now, unix_ms);
            }
            mode
        };
        if matches!(mode, Mode::Degraded { .. }) {
            return;
        }
        if let Err(error) = self.run_learn(lesson, now).await {
            self.fail(now, &error);
            apply_lesson(&mut self.local().share, lesson, now, unix_ms);
        }
    }

    async fn run_learn(&self, lesson: Lesson, now: Tick) -> Result<(), String> {
        let mut invocation = self.learn_script.prepare_invoke();
        match lesson {
            Lesson::BlockUntil { key, until } => {
                if matches!(key, BudgetKey::Daily { .. }) {
                    return Ok(());
                }
                // A block is a pause, never "forever": cap it at a day like the clock does.
                let delay = until
                    .as_micros()
                    .saturating_sub(now.as_micros())
                    .min(86_400_000_000);
                let name = key_name(&self.prefix, &key);
                invocation
                    .key(format!("{name}:blk"))
                    .arg("block")
                    .arg(delay);
            }
            Lesson::Remaining { key, remaining } => match self.limits.load().spec_for(&key) {
                BudgetSpec::Window(spec) => {
                    let name = key_name(&self.prefix, &key);
                    invocation
                        .key(name)
                        .arg("remaining")
                        .arg(spec.limit.min(WindowSpec::MAX_LIMIT))
                        .arg(spec.capacity())
                        .arg(spec.span_micros())
                        .arg(remaining.min(u64::from(u32::MAX)));
                }
                BudgetSpec::Daily(spec) => {
                    invocation
                        .key(key_name(&self.prefix, &key))
                        .arg("daily_remaining")
                        .arg(spec.limit)
                        .arg(i64::from(spec.utc_offset_secs) * 1_000)
                        .arg(remaining);
                }
            },
            // Redis keeps no estimate of another client's use: HubSpot's count becomes
            // placeholder sends there (what "remaining" does), which every replica sees;
            // the finer per-epoch estimate lives in each replica's mirror.
            Lesson::Usage { key, hub_used, max } => match self.limits.load().spec_for(&key) {
                BudgetSpec::Window(spec) => {
                    // What HubSpot says is left, against the configured limit: a lower
                    // `-Max` than configured leaves fewer slots, a higher one changes nothing.
                    invocation
                        .key(key_name(&self.prefix, &key))
                        .arg("remaining")
                        .arg(spec.limit.min(WindowSpec::MAX_LIMIT))
                        .arg(spec.capacity())
                        .arg(spec.span_micros())
                        .arg(max.saturating_sub(hub_used));
                }
                BudgetSpec::Daily(_) => return Ok(()),
            },
            // The 429 also arrives as "remaining 0" (see `pace`), which Redis applies.
            Lesson::Rejected { .. } => return Ok(()),
            // Redis's log is on Redis's clock: the two instants go as "this long ago", and
            // the script moves the newest send at or before the admission, as the engine
            // does.
            Lesson::SentLate {
                key,
                admitted,
                sent,
            } => match self.limits.load().spec_for(&key) {
                BudgetSpec::Window(spec) => {
                    invocation
                        .key(key_name(&self.prefix, &key))
                        .arg("late")
                        .arg(now.as_micros().saturating_sub(admitted.as_micros()))
                        .arg(now.as_micros().saturating_sub(sent.as_micros()))
                        .arg(spec.span_micros());
                }
                BudgetSpec::Daily(_) => return Ok(()),
            },
            Lesson::DailyExhausted { portal_id } => {
                let key = BudgetKey::Daily { portal_id };
                let offset = match self.limits.load().spec_for(&key) {
                    BudgetSpec::Daily(spec) => i64::from(spec.utc_offset_secs) * 1_000,
                    BudgetSpec::Window(_) => 0,
                };
                invocation
                    .key(key_name(&self.prefix, &key))
                    .arg("daily_exhausted")
                    .arg(0)
                    .arg(offset);
            }
        }
        let mut conn = self.conn.clone();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let _: i64 = bounded(self.command_timeout, invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// `PING` through the manager (which reconnects on demand), bounded.
    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let pong: String = bounded(
            self.command_timeout,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    }
}

/// Awaits a Redis call for at most `limit`, folding both failures into a message.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms ([store] command_timeout_ms)",
            limit.as_millis()
        )),
    }
}

/// While degraded, checks Redis every `reconnect_interval` and rejoins once it answers;
/// while shared it only reads a flag. Ends when the store is dropped.
async fn probe(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => inner.reconnect_interval,
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.degraded.load(Ordering::Relaxed) {
            continue;
        }
        match inner.ping().await {
            Ok(()) => inner.resume(),
            Err(error) => tracing::debug!(error, "Redis budget store still unreachable"),
        }
    }
}

/// What the reservation script said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Granted,
    /// Refused; `delay_us` from Redis's now (`None` = never), and the index of the budget
    /// that refused latest.
    NotBefore {
        delay_us: Option<u64>,
        index: usize,
    },
    /// A daily budget is spent until this unix time (ms, Redis's clock).
    Daily {
        resets_at_unix_ms: i64,
    },
}

impl Answer {
    /// `[1]`, `[2, delay_us | -1, index]` or `[3, reset_ms]`; anything else is `None`.
    fn parse(reply: &[i64]) -> Option<Answer> {
        match *reply {
            [1] => Some(Answer::Granted),
            [2, delay, index] => Some(Answer::NotBefore {
                delay_us: u64::try_from(delay).ok(),
                index: usize::try_from(index).ok()?.checked_sub(1)?,
            }),
            [3, reset] => Some(Answer::Daily {
                resets_at_unix_ms: reset,
            }),
            _ => None,
        }
    }

    fn refusing_key(&self) -> Option<usize> {
        match self {
            Answer::NotBefore { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// Onto the caller's clock: the round trip has passed since `now`, then the delay.
    fn into_reservation(self, now: Tick, elapsed: Duration) -> Reservation {
        match self {
            Answer::Granted => Reservation::Granted,
            Answer::NotBefore { delay_us: None, .. } => Reservation::NotBefore(Tick::MAX),
            Answer::NotBefore {
                delay_us: Some(delay),
                ..
            } => Reservation::NotBefore(now.saturating_add(elapsed).saturating_add_micros(delay)),
            Answer::Daily { resets_at_unix_ms } => {
                Reservation::DailyExhausted(DailyExhausted { resets_at_unix_ms })
            }
        }
    }
}

impl BudgetStore for RedisStore {
    fn reserve<'a>(
        &'a self,
        keys: &'a [BudgetKey],
        now: Tick,
        unix_ms: i64,
    ) -> StoreFuture<'a, Reservation> {
        Box::pin(self.inner.reserve(keys, now, unix_ms))
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
        let inner = &self.inner;
        let mut local = inner.local();
        match inner.mode(&mut local) {
            // Queue it; the reservation answers 503 at once.
            Mode::Degraded { .. } if inner.on_failure == OnFailure::FailClosed => {
                Ok(Duration::ZERO)
            }
            Mode::Degraded { failed_at } => {
                quarantine(&mut local.share, &inner.limits.load(), keys, now, failed_at);
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

    fn set_limits(&self, limits: Limits, unix_ms: i64) {
        let inner = &self.inner;
        let mut local = inner.local();
        local
            .share
            .set_limits(share_limits(&limits, inner.replicas), unix_ms);
        local.mirror.set_limits(limits.clone(), unix_ms);
        inner.limits.store(Arc::new(limits));
    }

    fn evict_idle(&self, now: Tick, unix_ms: i64, idle_ttl: Duration) -> usize {
        let mut local = self.inner.local();
        local.share.evict_idle(now, unix_ms, idle_ttl);
        local.mirror.evict_idle(now, unix_ms, idle_ttl)
    }

    fn snapshot(&self, now: Tick, unix_ms: i64) -> Vec<BudgetView> {
        // This replica's view: its own grants and what Redis refused it. The shared truth
        // is in Redis; reading every key there at each scrape would cost a round trip per
        // budget, so the admin API and metrics show the local mirror.
        let local = self.inner.local();
        local
            .mirror
            .iter()
            .map(|(key, budget)| BudgetView::of(*key, budget, now, unix_ms))
            .collect()
    }

    fn len(&self) -> usize {
        self.inner.local().mirror.len()
    }
}

/// The Redis key of a budget (window logs get `:blk` appended for their block).
pub fn key_name(prefix: &str, key: &BudgetKey) -> String {
    match *key {
        BudgetKey::Burst { app_id, portal_id } => {
            format!("{prefix}:{{p{portal_id}}}:burst:{app_id}")
        }
        BudgetKey::Search { portal_id } => format!("{prefix}:{{p{portal_id}}}:search"),
        BudgetKey::Daily { portal_id } => format!("{prefix}:{{p{portal_id}}}:daily"),
        BudgetKey::Unidentified { credential_hash } => {
            format!("{prefix}:{{u{credential_hash:016x}}}:burst")
        }
        BudgetKey::Global => format!("{prefix}:{{anon}}:global"),
    }
}

/// `keys` without repeats, first occurrence kept: a key listed twice is spent once.
fn dedup(keys: &[BudgetKey]) -> Vec<BudgetKey> {
    let mut out: Vec<BudgetKey> = Vec::with_capacity(keys.len());
    for key in keys {
        if !out.contains(key) {
            out.push(*key);
        }
    }
    out
}

/// Holds every window budget of `keys` full until one span after `failed_at`: the sends
/// made through Redis before then are unknown here. Idempotent (blocks never shorten).
fn quarantine(
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

/// Each budget's share for one of `replicas`: `limit / replicas`, at least 1 (a limit of
/// 0 stays 0), slot margins divided alike.
pub fn share_limits(limits: &Limits, replicas: u32) -> Limits {
    let n = replicas.max(1);
    let window = |spec: WindowSpec| {
        if spec.limit == 0 {
            return spec;
        }
        let limit = (spec.limit / n).max(1);
        WindowSpec {
            limit,
            margin_slots: (spec.margin_slots / n).min(limit - 1),
            ..spec
        }
    };
    let daily = |spec: DailySpec| DailySpec {
        limit: if spec.limit == 0 {
            0
        } else {
            (spec.limit / u64::from(n)).max(1)
        },
        ..spec
    };
    Limits {
        burst: window(limits.burst),
        search: window(limits.search),
        unidentified: window(limits.unidentified),
        global: window(limits.global),
        daily: daily(limits.daily),
        window_overrides: limits
            .window_overrides
            .iter()
            .map(|(k, v)| (*k, window(*v)))
            .collect(),
        daily_overrides: limits
            .daily_overrides
            .iter()
            .map(|(k, v)| (*k, daily(*v)))
            .collect(),
    }
}

/// The longest span of any window budget, microseconds.
fn max_span_micros(limits: &Limits) -> u64 {
    [
        limits.burst,
        limits.search,
        limits.unidentified,
        limits.global,
    ]
    .iter()
    .chain(limits.window_overrides.values())
    .map(WindowSpec::span_micros)
    .max()
    .unwrap_or(0)
}

/// A lesson applied to this replica's local books.
fn apply_lesson(book: &mut BudgetBook, lesson: Lesson, now: Tick, unix_ms: i64) {
    match lesson {
        // Not in the local books: to one replica, the other replicas' sends look like
        // another client's, and its local share already leaves room for them. Redis, which
        // holds every replica's sends, gets HubSpot's count instead (see `run_learn`).
        Lesson::Usage { .. } | Lesson::Rejected { .. } => {}
        lesson => crate::store::apply_lesson(book, lesson, now, unix_ms),
    }
}

/// One reservation, "check all, then commit all" (see `engine::book`), on Redis's clock.
///
/// KEYS: per window budget its log and its block key; per daily budget its hash.
/// ARGV[1]: number of budgets; then per window `w, capacity, span_us`, per daily
/// `d, limit, offset_ms`. Returns `{1}` granted, `{2, delay_us | -1, index}` not before,
/// `{3, reset_unix_ms}` daily budget spent. Timestamps are written with `%d`: Lua's
/// default number formatting would round 16-digit microseconds.
const RESERVE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local DAY = 86400000
local function fmt(x) return string.format('%d', x) end
local n = tonumber(ARGV[1])
local b = {}
local k, a = 1, 2
for i = 1, n do
  if ARGV[a] == 'w' then
    b[i] = {w = true, log = KEYS[k], blk = KEYS[k + 1], cap = tonumber(ARGV[a + 1]), span = tonumber(ARGV[a + 2])}
    k = k + 2
  else
    b[i] = {w = false, key = KEYS[k], limit = tonumber(ARGV[a + 1]), offset = tonumber(ARGV[a + 2])}
    k = k + 1
  end
  a = a + 3
end
local worst, worst_i, never = -1, 0, false
for i = 1, n do
  local x = b[i]
  if x.w then
    if x.cap <= 0 then
      never = true
      worst_i = i
    else
      local eff = now
      local last = redis.call('LINDEX', x.log, -1)
      if last then
        last = tonumber(last)
        if last > eff then eff = last end
      end
      x.eff = eff
      local free = eff
      local blk = redis.call('GET', x.blk)
      if blk then
        blk = tonumber(blk)
        if blk > free then free = blk end
      end
      local len = redis.call('LLEN', x.log)
      if len >= x.cap then
        local oldest = tonumber(redis.call('LINDEX', x.log, len - x.cap))
        if oldest + x.span > free then free = oldest + x.span end
      end
      if free > eff and not never and free > worst then
        worst = free
        worst_i = i
      end
    end
  else
    local h = redis.call('HMGET', x.key, 'day', 'used', 'exhausted')
    local day = tonumber(h[1])
    local used = tonumber(h[2]) or 0
    local exhausted = h[3] == '1'
    local today = math.floor((now_ms + x.offset) / DAY)
    local stale = (day == nil) or (today > day)
    local current = today
    if day and day > current then current = day end
    local left
    if (not stale) and exhausted then
      left = 0
    elseif x.limit == 0 then
      left = 1
    elseif stale then
      left = x.limit
    else
      left = x.limit - used
    end
    if left <= 0 then
      return {3, (current + 1) * DAY - x.offset}
    end
    if stale then
      x.day, x.used, x.exhausted = today, 0, '0'
    else
      x.day, x.used, x.exhausted = day, used, h[3] or '0'
    end
  end
end
if never then return {2, -1, worst_i} end
if worst >= 0 then return {2, worst - now, worst_i} end
for i = 1, n do
  local x = b[i]
  if x.w then
    local len = redis.call('RPUSH', x.log, fmt(x.eff))
    if len > x.cap then redis.call('LTRIM', x.log, len - x.cap, -1) end
    redis.call('PEXPIRE', x.log, math.floor(x.span / 1000) + 1000)
  else
    redis.call('HSET', x.key, 'day', fmt(x.day), 'used', fmt(x.used + 1), 'exhausted', x.exhausted)
    local reset = (x.day + 1) * DAY - x.offset
    redis.call('PEXPIRE', x.key, math.max(reset - now_ms, 0) + 60000)
  end
end
return {1}
"#;

/// One lesson on Redis's clock. KEYS[1]: the block key (`block`), the log (`remaining`,
/// `late`) or the daily hash. ARGV: op, then `delay_us` | `limit, capacity, span_us,
/// reported` | `admitted_ago_us, sent_ago_us, span_us` | `limit, offset_ms, reported` |
/// `0, offset_ms`.
const LEARN_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local DAY = 86400000
local function fmt(x) return string.format('%d', x) end
local op = ARGV[1]
if op == 'block' then
  local delay = tonumber(ARGV[2])
  local untl = now + delay
  local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
  if untl > cur then
    redis.call('SET', KEYS[1], fmt(untl), 'PX', math.floor(delay / 1000) + 1000)
  end
  return 1
end
if op == 'remaining' then
  local limit, cap, span, reported = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local hub_used = math.min(math.max(limit - reported, 0), cap)
  local log = redis.call('LRANGE', KEYS[1], 0, -1)
  local eff = now
  if #log > 0 and tonumber(log[#log]) > eff then eff = tonumber(log[#log]) end
  local used = 0
  for i = 1, #log do
    if tonumber(log[i]) + span > eff then used = used + 1 end
  end
  if hub_used > used and cap > 0 then
    for i = used + 1, hub_used do redis.call('RPUSH', KEYS[1], fmt(eff)) end
    local len = redis.call('LLEN', KEYS[1])
    if len > cap then redis.call('LTRIM', KEYS[1], len - cap, -1) end
    redis.call('PEXPIRE', KEYS[1], math.floor(span / 1000) + 1000)
  end
  return 1
end
if op == 'late' then
  local admitted, sent, span = now - tonumber(ARGV[2]), now - tonumber(ARGV[3]), tonumber(ARGV[4])
  local log = redis.call('LRANGE', KEYS[1], 0, -1)
  local at = nil
  for i = #log, 1, -1 do
    if tonumber(log[i]) <= admitted then at = i break end
  end
  if at == nil or tonumber(log[at]) >= sent then return 0 end
  table.remove(log, at)
  local to = #log + 1
  for i = 1, #log do
    if tonumber(log[i]) > sent then to = i break end
  end
  table.insert(log, to, fmt(sent))
  redis.call('DEL', KEYS[1])
  for i = 1, #log, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(log, i, math.min(i + 999, #log)))
  end
  redis.call('PEXPIRE', KEYS[1], math.floor(span / 1000) + 1000)
  return 1
end
local limit, offset = tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'day', 'used', 'exhausted')
local day = tonumber(h[1])
local used = tonumber(h[2]) or 0
local exhausted = h[3] or '0'
local today = math.floor((now_ms + offset) / DAY)
if day == nil or today > day then
  day, used, exhausted = today, 0, '0'
end
if op == 'daily_exhausted' then
  exhausted = '1'
elseif op == 'daily_remaining' and limit > 0 then
  used = math.max(used, limit - tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'day', fmt(day), 'used', fmt(used), 'exhausted', exhausted)
redis.call('PEXPIRE', KEYS[1], math.max((day + 1) * DAY - offset - now_ms, 0) + 60000)
return 1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_or_are_refused_without_panicking() {
        assert_eq!(Answer::parse(&[1]), Some(Answer::Granted));
        assert_eq!(
            Answer::parse(&[2, 500, 2]),
            Some(Answer::NotBefore {
                delay_us: Some(500),
                index: 1
            })
        );
        assert_eq!(
            Answer::parse(&[2, -1, 1]),
            Some(Answer::NotBefore {
                delay_us: None,
                index: 0
            })
        );
        assert_eq!(
            Answer::parse(&[3, 86_400_000]),
            Some(Answer::Daily {
                resets_at_unix_ms: 86_400_000
            })
        );
        for bad in [&[][..], &[2, 5, 0], &[2, 5, -3], &[9], &[1, 1]] {
            assert_eq!(Answer::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn not_before_lands_on_the_callers_clock_after_the_round_trip() {
        let answer = Answer::NotBefore {
            delay_us: Some(1_000),
            index: 0,
        };
        assert_eq!(
            answer.into_reservation(Tick(10_000), Duration::from_micros(300)),
            Reservation::NotBefore(Tick(11_300))
        );
    }

    #[test]
    fn keys_of_one_portal_share_a_hash_tag() {
        let burst = key_name(
            "hg",
            &BudgetKey::Burst {
                app_id: 1,
                portal_id: 7,
            },
        );
        let daily = key_name("hg", &BudgetKey::Daily { portal_id: 7 });
        assert_eq!(burst, "hg:{p7}:burst:1");
        assert_eq!(daily, "hg:{p7}:daily");
    }

    #[test]
    fn shares_divide_limits_but_never_below_one() {
        let limits = Limits {
            burst: WindowSpec::new(110, Duration::from_secs(10)).with_margins(Duration::ZERO, 5),
            global: WindowSpec::new(2, Duration::from_secs(1)),
            daily: DailySpec {
                limit: 1_000,
                utc_offset_secs: 0,
            },
            ..Limits::default()
        };
        let share = share_limits(&limits, 3);
        assert_eq!(share.burst.limit, 36);
        assert_eq!(share.burst.capacity(), 35);
        assert_eq!(share.global.limit, 1);
        assert_eq!(share.global.capacity(), 1);
        assert_eq!(share.daily.limit, 333);
        assert_eq!(share_limits(&limits, 1).burst, limits.burst);
    }
}
