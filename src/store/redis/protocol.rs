//! Talking to Redis: the two Lua scripts (a lane's reservations; one lesson) sent in one
//! round trip each on a multiplexed connection, bounded by `[store] command_timeout_ms`, what
//! their replies mean on the caller's clock, and what kind of failure an error is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hubgate_engine::{
    BudgetKey, BudgetSpec, DailyExhausted, Limits, Reservation, Tick, WindowSpec,
};
use redis::Script;

use super::keys::key_name;
use super::link::Link;
use super::settings::RedisSettings;
use crate::store::budget_store::Lesson;

/// How a Redis call failed, as far as the store's mode is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    /// No connection (refused, dropped, TLS, authentication): Redis is away.
    Unreachable,
    /// Redis is there but did not run the script: no answer in time, or a refusal of the
    /// whole server (OOM, READONLY after a failover, BUSY with a long script, LOADING).
    /// Often over in a moment, so it only counts as a failure once it lasts.
    Struggling,
    /// The script ran and failed on what a key holds (a wrong type, a value it cannot
    /// read): only the budgets of this call are unusable, not the store.
    KeyUnusable,
}

/// A failed Redis call: what kind of failure, and the message for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) trouble: Trouble,
    pub(super) message: String,
}

impl Failure {
    fn struggling(message: String) -> Failure {
        Failure {
            trouble: Trouble::Struggling,
            message,
        }
    }

    fn of(error: &redis::RedisError) -> Failure {
        let message = error.to_string();
        let trouble = match error.code() {
            Some("WRONGTYPE") => Trouble::KeyUnusable,
            // A Lua runtime error: the script met a value it cannot use.
            Some("ERR") if message.contains("user_script") => Trouble::KeyUnusable,
            Some(_) => Trouble::Struggling,
            None if error.is_timeout() => Trouble::Struggling,
            None => Trouble::Unreachable,
        };
        Failure { trouble, message }
    }
}

/// What follows the hash tag in the key the prober's reservation runs on: a window of one
/// send per millisecond, so every probe writes and none is ever refused for long.
const PROBE_KEY: &str = "live";

/// The connection and the scripts; every call reads the limits it is handed.
pub(super) struct Redis {
    /// Multiplexed connection (one node or a cluster) that reconnects by itself; clones are
    /// cheap handles.
    conn: Link,
    /// Key prefix from `[store] key_prefix`.
    prefix: String,
    command_timeout: Duration,
    /// The reservation script (EVALSHA, falling back to EVAL after a Redis restart).
    reserve_script: Script,
    /// The script applying one lesson.
    learn_script: Script,
    /// Reservation and lesson scripts sent to Redis, for benchmarks and tests.
    round_trips: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("round_trips", &self.round_trips)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A connection to `settings.url`, made lazily: a Redis that is down at start only makes
    /// the first reservation find it unreachable.
    pub(super) fn connect(settings: &RedisSettings) -> anyhow::Result<Redis> {
        let conn = settings.connection()?;
        Ok(Redis {
            conn,
            prefix: settings.key_prefix.clone(),
            command_timeout: settings.command_timeout,
            reserve_script: Script::new(include_str!("reserve.lua")),
            learn_script: Script::new(include_str!("learn.lua")),
            round_trips: AtomicU64::new(0),
        })
    }

    /// Scripts sent to Redis so far (reservations and lessons).
    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// One script round trip for a lane's reservations, bounded by the command timeout:
    /// each all-or-nothing, in order, up to the first refused.
    pub(super) async fn reserve(
        &self,
        asks: &[Vec<BudgetKey>],
        limits: &Limits,
    ) -> Result<Reply, Failure> {
        let mut invocation = self.reserve_script.prepare_invoke();
        invocation.arg(asks.len());
        for keys in asks {
            invocation.arg(keys.len());
            for key in keys {
                let name = key_name(&self.prefix, key);
                match limits.spec_for(key) {
                    BudgetSpec::Window(spec) => {
                        invocation
                            .key(name.clone())
                            .key(format!("{name}:blk"))
                            .key(format!("{name}:out"))
                            .arg("w")
                            .arg(spec.capacity())
                            .arg(spec.span_micros())
                            .arg(u8::from(spec.learn_first));
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
        }
        let mut conn = self.conn.clone();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: Vec<i64> =
            bounded(self.command_timeout, invocation.invoke_async(&mut conn)).await?;
        Reply::parse(&reply, asks.len()).ok_or_else(|| {
            Failure::struggling(format!(
                "unexpected reply from the reservation script: {reply:?}"
            ))
        })
    }

    /// Applies one lesson in Redis; `now` is the caller's tick the lesson's instants are
    /// relative to.
    pub(super) async fn learn(
        &self,
        lesson: Lesson,
        now: Tick,
        limits: &Limits,
    ) -> Result<(), Failure> {
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
            Lesson::Remaining { key, remaining } => match limits.spec_for(&key) {
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
            // Another client's use is estimated on Redis, against the log every replica
            // writes, and kept in the log's `:out` hash that each reservation reads: what
            // one replica learns, all of them use.
            Lesson::Usage {
                key,
                hub_used,
                max,
                admitted,
            } => match limits.spec_for(&key) {
                BudgetSpec::Window(spec) => {
                    let name = key_name(&self.prefix, &key);
                    invocation
                        .key(name.clone())
                        .key(format!("{name}:out"))
                        .arg("usage")
                        .arg(spec.limit.min(WindowSpec::MAX_LIMIT))
                        .arg(spec.capacity())
                        .arg(spec.span_micros())
                        .arg(hub_used)
                        .arg(max)
                        .arg(now.as_micros().saturating_sub(admitted.as_micros()));
                }
                BudgetSpec::Daily(_) => return Ok(()),
            },
            Lesson::Rejected { key } => match limits.spec_for(&key) {
                BudgetSpec::Window(spec) => {
                    let name = key_name(&self.prefix, &key);
                    invocation
                        .key(name.clone())
                        .key(format!("{name}:out"))
                        .arg("rejected")
                        .arg(spec.capacity())
                        .arg(spec.span_micros());
                }
                BudgetSpec::Daily(_) => return Ok(()),
            },
            // Redis's log is on Redis's clock: the two instants go as "this long ago", and
            // the script moves the newest send at or before where the send is held, as the
            // engine does. Redis keeps no answer delay, so the admission is not sent.
            Lesson::ArrivedBy {
                key, held_at, by, ..
            } => match limits.spec_for(&key) {
                BudgetSpec::Window(spec) => {
                    invocation
                        .key(key_name(&self.prefix, &key))
                        .arg("late")
                        .arg(now.as_micros().saturating_sub(held_at.as_micros()))
                        .arg(now.as_micros().saturating_sub(by.as_micros()))
                        .arg(spec.span_micros());
                }
                BudgetSpec::Daily(_) => return Ok(()),
            },
            Lesson::DailyExhausted { portal_id } => {
                let key = BudgetKey::Daily { portal_id };
                let offset = match limits.spec_for(&key) {
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

    /// Whether budgets live in a cluster, each slot failing on its own.
    pub(super) fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The reservation script on a key of its own under hash tag `tag` (so on the node
    /// that tag's budgets live on), bounded: whether Redis runs scripts that write, which a
    /// `PING` cannot tell (it answers while OOM, read-only or BUSY).
    pub(super) async fn probe(&self, tag: &str) -> Result<(), Failure> {
        let name = format!("{}:{{{tag}}}:{PROBE_KEY}", self.prefix);
        let mut invocation = self.reserve_script.prepare_invoke();
        invocation
            .key(name.clone())
            .key(format!("{name}:blk"))
            .key(format!("{name}:out"))
            .arg(1)
            .arg(1)
            .arg("w")
            .arg(1)
            .arg(1_000)
            .arg(0);
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            bounded(self.command_timeout, invocation.invoke_async(&mut conn)).await?;
        match Reply::parse(&reply, 1) {
            Some(_) => Ok(()),
            None => Err(Failure::struggling(format!(
                "unexpected reply from the reservation script: {reply:?}"
            ))),
        }
    }
}

/// Awaits a Redis call for at most `limit`; no answer in time is Redis struggling.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::of(&e)),
        Err(_) => Err(Failure::struggling(format!(
            "no answer within {} ms ([store] command_timeout_ms)",
            limit.as_millis()
        ))),
    }
}

/// What the reservation script said about a batch: how many of its first reservations
/// were granted, and the refusal after them. When all were granted, the refusal (if any)
/// is what one more reservation like the last would meet now: a hint, nothing was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) granted: usize,
    pub(super) refusal: Option<Answer>,
}

impl Reply {
    /// `[granted]` when that is every one of `asked`, else `[granted, …]` with the refusal
    /// after it (see `Answer::parse`); anything else is `None`.
    pub(super) fn parse(reply: &[i64], asked: usize) -> Option<Reply> {
        let (&granted, refusal) = reply.split_first()?;
        let granted = usize::try_from(granted).ok().filter(|&g| g <= asked)?;
        let refusal = match refusal {
            [] if granted == asked => None,
            [] => return None,
            refusal => Some(Answer::parse(refusal)?),
        };
        Some(Reply { granted, refusal })
    }
}

/// Why the reservation script refused (or would refuse) a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Refused; `delay_us` from Redis's now (`None` = never), and the index of the budget
    /// that refused latest.
    NotBefore { delay_us: Option<u64>, index: usize },
    /// A daily budget is spent until this unix time (ms, Redis's clock).
    Daily { resets_at_unix_ms: i64 },
}

impl Answer {
    /// `[2, delay_us | -1, index]` or `[3, reset_ms]`; anything else is `None`.
    pub(super) fn parse(reply: &[i64]) -> Option<Answer> {
        match *reply {
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

    pub(super) fn refusing_key(&self) -> Option<usize> {
        match self {
            Answer::NotBefore { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// Onto the caller's clock: the round trip has passed since `now`, then the delay.
    pub(super) fn into_reservation(self, now: Tick, elapsed: Duration) -> Reservation {
        match self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_or_are_refused_without_panicking() {
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
        for bad in [&[][..], &[1], &[2, 5, 0], &[2, 5, -3], &[9], &[1, 1]] {
            assert_eq!(Answer::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn batch_replies_parse_or_are_refused_without_panicking() {
        assert_eq!(
            Reply::parse(&[3], 3),
            Some(Reply {
                granted: 3,
                refusal: None
            })
        );
        assert_eq!(
            Reply::parse(&[1, 2, 500, 1], 4),
            Some(Reply {
                granted: 1,
                refusal: Some(Answer::NotBefore {
                    delay_us: Some(500),
                    index: 0
                })
            })
        );
        assert_eq!(
            Reply::parse(&[0, 3, 86_400_000], 1),
            Some(Reply {
                granted: 0,
                refusal: Some(Answer::Daily {
                    resets_at_unix_ms: 86_400_000
                })
            })
        );
        // All granted, and what one more like the last would meet.
        assert_eq!(
            Reply::parse(&[1, 2, 500, 1], 1),
            Some(Reply {
                granted: 1,
                refusal: Some(Answer::NotBefore {
                    delay_us: Some(500),
                    index: 0
                })
            })
        );
        for (bad, asked) in [
            (&[][..], 1),
            (&[2], 3),
            (&[4], 3),
            (&[-1], 1),
            (&[0, 1], 2),
            (&[0, 9], 2),
            (&[0, 2, 5, 0], 2),
        ] {
            assert_eq!(Reply::parse(bad, asked), None, "{bad:?} of {asked}");
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
}
