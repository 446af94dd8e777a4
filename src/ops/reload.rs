//! Hot reload: re-reads the config file (on SIGHUP or `POST /admin/reload`), applies what a
//! running gateway can change in place, keeps the running value of what needs a restart,
//! and keeps the whole old config when the new file has any problem.
//!
//! What changes in place is listed by `LiveSettings` (`stack`): budgets, queues, lanes,
//! retries, callers, credentials, identity TTLs, classification; plus `[queue]
//! max_wait_ms` in the metrics, `[log] level` and `[server] shutdown_grace_ms`. Nothing is
//! rebuilt: queued calls stay queued and are judged by the new limits, calls in flight
//! finish. Everything under `NEEDS_RESTART` keeps its running value.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts};
use serde_json::{json, Value};

use super::metrics::Metrics;
use super::observe::Observer;
use super::telemetry::{self, LevelChange};
use crate::config::{Config, ConfigErrors};
use crate::proxy::stack::LiveSettings;

/// Keys (dotted paths; a table covers every key in it) a running gateway cannot change:
/// the sockets and connection bounds are set when listening starts, the upstream client,
/// the budget and install stores, the OAuth apps' credentials and the token broker are
/// built once, the replay buffer's size with the stack, metric series bounds are fixed at
/// registration, and the log format with the subscriber.
pub(crate) const NEEDS_RESTART: [&str; 21] = [
    "server.listen",
    "server.admin_listen",
    "server.max_body_bytes",
    "server.max_header_bytes",
    "server.header_read_timeout_ms",
    "server.body_idle_timeout_ms",
    "server.body_read_timeout_ms",
    "server.response_write_timeout_ms",
    "server.max_connections",
    "server.listen_backlog",
    "server.workers",
    "server.idle_timeout_ms",
    "server.h2_keep_alive_interval_ms",
    "server.h2_keep_alive_timeout_ms",
    "retry.max_buffered_bytes",
    "upstream",
    "store",
    "apps",
    "oauth",
    "metrics.max_owner_series",
    "log.format",
];

/// Reloads the gateway's config; clones share the running config and serialize reloads.
#[derive(Debug, Clone)]
pub(crate) struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The file the gateway was started from; `None` when it runs on built-in defaults.
    path: Option<PathBuf>,
    /// The config in force. Its lock is what makes reloads one at a time.
    running: tokio::sync::Mutex<Config>,
    live: LiveSettings,
    observer: Observer,
    metrics: ReloadMetrics,
}

/// How a reload ended.
#[derive(Debug)]
pub(crate) enum ReloadOutcome {
    /// The new file is in force, but for `needs_restart`, which keep their running values.
    Reloaded {
        /// Keys whose new value is in force.
        changed: Vec<String>,
        /// Keys whose new value waits for a restart.
        needs_restart: Vec<String>,
    },
    /// The new file has problems; the running config is unchanged.
    Invalid(ConfigErrors),
    /// The gateway runs on built-in defaults: there is no file to read again.
    NoFile,
}

impl Reloader {
    /// A reloader for a gateway started from `running` (read from `path`, if any).
    /// Registers the reload metrics, and counts the start as a successful load, as
    /// Prometheus does, so the alert has a value from the first scrape.
    pub(crate) fn new(
        path: Option<PathBuf>,
        running: Config,
        live: LiveSettings,
        observer: Observer,
        metrics: &Metrics,
    ) -> anyhow::Result<Reloader> {
        let reload_metrics = ReloadMetrics::register(metrics)?;
        reload_metrics.loaded();
        Ok(Reloader {
            inner: Arc::new(Inner {
                path,
                running: tokio::sync::Mutex::new(running),
                live,
                observer,
                metrics: reload_metrics,
            }),
        })
    }

    /// A copy of the config in force.
    pub(crate) async fn running(&self) -> Config {
        self.inner.running.lock().await.clone()
    }

    /// The digest `[admin] token_sha256` names in the config in force, if any: read at
    /// each mutating admin call, so a reload rotates the token.
    pub(crate) async fn admin_token_digest(&self) -> Option<[u8; 32]> {
        self.inner.running.lock().await.admin.token_digest()
    }

    /// Reads the file again and applies it; waits for a reload already running. Logs the
    /// outcome (every problem of an invalid file, every key that needs a restart) and
    /// updates the reload metrics.
    pub(crate) async fn reload(&self) -> ReloadOutcome {
        let inner = &self.inner;
        let mut running = inner.running.lock().await;
        let Some(path) = inner.path.clone() else {
            tracing::warn!(
                "config reload asked for, but hubgate runs on built-in defaults: there is no \
                 file to read; restart it with --config PATH"
            );
            return ReloadOutcome::NoFile;
        };
        // A config file is small; reading it on a blocking thread keeps a slow disk from
        // stalling the runtime.
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Config::load(&path)).await
        };
        let new = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                for problem in errors.lines() {
                    tracing::error!(problem = %problem, "config reload refused; the running config stays");
                }
                inner.metrics.failed();
                return ReloadOutcome::Invalid(errors);
            }
            Err(join) => {
                inner.metrics.failed();
                return ReloadOutcome::Invalid(ConfigErrors::of_file(
                    &path,
                    format!("reading the file failed: {join}"),
                ));
            }
        };
        let (effective, changed, needs_restart) = match merge(&running, &new) {
            Ok(merged) => merged,
            Err(e) => {
                inner.metrics.failed();
                return ReloadOutcome::Invalid(ConfigErrors::of_file(&path, e));
            }
        };
        if let Err(e) = inner.live.apply(&effective) {
            inner.metrics.failed();
            return ReloadOutcome::Invalid(ConfigErrors::of_file(&path, format!("{e:#}")));
        }
        inner
            .observer
            .set_max_wait(Duration::from_millis(effective.queue.max_wait_ms));
        if effective.log.level != running.log.level {
            match telemetry::set_level(&effective.log.level) {
                LevelChange::Applied | LevelChange::NotInstalled => {}
                LevelChange::OverriddenByEnv => tracing::warn!(
                    "[log] level changed, but RUST_LOG is set and still decides what is logged"
                ),
            }
        }
        *running = effective;
        drop(running);
        inner.metrics.succeeded();
        for key in &needs_restart {
            tracing::warn!(key = %key, "config reload: this key needs a restart; its running value stays");
        }
        tracing::info!(
            file = %path.display(),
            changed = ?changed,
            needs_restart = ?needs_restart,
            "config reloaded"
        );
        ReloadOutcome::Reloaded {
            changed,
            needs_restart,
        }
    }
}

impl ReloadOutcome {
    /// The admin API's answer: status and JSON body.
    pub(crate) fn to_json(&self) -> (http::StatusCode, Value) {
        use http::StatusCode;
        match self {
            ReloadOutcome::Reloaded {
                changed,
                needs_restart,
            } => (
                StatusCode::OK,
                json!({"status": "reloaded", "changed": changed, "needs_restart": needs_restart}),
            ),
            ReloadOutcome::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "status": "error",
                    "message": format!(
                        "the config file has {} problem(s); nothing was changed and the running config stays in force: fix every problem listed and reload again",
                        errors.problems.len()
                    ),
                    "category": "VALIDATION_ERROR",
                    "problems": errors.lines(),
                }),
            ),
            ReloadOutcome::NoFile => (
                StatusCode::CONFLICT,
                json!({
                    "status": "error",
                    "message": "hubgate runs on built-in defaults (started without --config and with no ./config.toml), so there is no file to reload; restart it with --config PATH",
                    "category": "HUBGATE_NO_CONFIG_FILE",
                }),
            ),
        }
    }
}

/// The config to run after a reload from `running` to `new`: `new`, with every key under
/// `NEEDS_RESTART` kept at its running value. Also returns the keys that changed, split
/// into those now in force and those waiting for a restart.
fn merge(running: &Config, new: &Config) -> Result<(Config, Vec<String>, Vec<String>), String> {
    let running_value = to_value(running)?;
    let mut new_value = to_value(new)?;
    let mut changed = Vec::new();
    diff("", &running_value, &new_value, &mut changed);
    let (needs_restart, changed): (Vec<String>, Vec<String>) =
        changed.into_iter().partition(|key| needs_restart(key));
    for key in NEEDS_RESTART {
        let pointer = format!("/{}", key.replace('.', "/"));
        if let (Some(slot), Some(kept)) = (
            new_value.pointer_mut(&pointer),
            running_value.pointer(&pointer),
        ) {
            *slot = kept.clone();
        }
    }
    let effective: Config = serde_json::from_value(new_value)
        .map_err(|e| format!("keeping the running values of restart-only keys: {e}"))?;
    Ok((effective, changed, needs_restart))
}

fn to_value(config: &Config) -> Result<Value, String> {
    serde_json::to_value(config).map_err(|e| format!("comparing configs: {e}"))
}

/// Whether a change of `key` waits for a restart.
fn needs_restart(key: &str) -> bool {
    NEEDS_RESTART.iter().any(|restart| {
        key == *restart
            || key
                .strip_prefix(restart)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Collects the dotted paths where `old` and `new` differ: tables key by key, lists
/// element by element when their lengths match (else the list as a whole). Only paths,
/// never values: a value may be a token.
fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(&join(key), x, y, out),
                    _ => out.push(join(key)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&join(&i.to_string()), x, y, out);
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// `hubgate_config_*`, named after Prometheus's own reload metrics.
#[derive(Debug)]
struct ReloadMetrics {
    last_successful: IntGauge,
    last_success_timestamp: Gauge,
    reloads: IntCounterVec,
}

impl ReloadMetrics {
    fn register(metrics: &Metrics) -> anyhow::Result<ReloadMetrics> {
        let last_successful = IntGauge::new(
            "hubgate_config_last_reload_successful",
            "Whether the last config reload succeeded (1) or the new file was refused and the old config kept (0).",
        )?;
        let last_success_timestamp = Gauge::new(
            "hubgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (start or reload).",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "hubgate_config_reloads_total",
                "Config reloads asked for (SIGHUP or POST /admin/reload), by result.",
            ),
            &["result"],
        )?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        metrics.register(Box::new(last_successful.clone()))?;
        metrics.register(Box::new(last_success_timestamp.clone()))?;
        metrics.register(Box::new(reloads.clone()))?;
        Ok(ReloadMetrics {
            last_successful,
            last_success_timestamp,
            reloads,
        })
    }

    /// The start's load: in force, but not a reload.
    fn loaded(&self) {
        self.last_successful.set(1);
        let now = crate::pace::clock::wall_now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success_timestamp.set(now.as_secs_f64());
    }

    fn succeeded(&self) {
        self.loaded();
        self.reloads.with_label_values(&["success"]).inc();
    }

    fn failed(&self) {
        self.last_successful.set(0);
        self.reloads.with_label_values(&["failure"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_split_and_restart_keys_keep_their_running_values() {
        let running = Config::default();
        let mut new = Config::default();
        new.budgets.burst_limit = 50;
        new.server.listen = "127.0.0.1:1".into();
        new.upstream.base_url = "http://127.0.0.1:2".into();
        new.metrics.max_owner_series = 7;
        new.log.format = "json".into();
        new.log.level = "debug".into();
        new.callers.push(crate::config::CallerConfig {
            name: "sync".into(),
            weight: 2,
            max_rps: None,
            key_sha256: None,
            priorities: crate::config::default_priorities(),
            portals: Vec::new(),
        });
        let (effective, changed, needs_restart) = merge(&running, &new).unwrap();
        assert_eq!(changed, ["budgets.burst_limit", "callers", "log.level"]);
        assert_eq!(
            needs_restart,
            [
                "log.format",
                "metrics.max_owner_series",
                "server.listen",
                "upstream.base_url"
            ]
        );
        assert_eq!(effective.budgets.burst_limit, 50);
        assert_eq!(effective.log.level, "debug");
        assert_eq!(effective.callers.len(), 1);
        assert_eq!(effective.server.listen, running.server.listen);
        assert_eq!(effective.upstream.base_url, running.upstream.base_url);
        assert_eq!(effective.metrics.max_owner_series, 1000);
        assert_eq!(effective.log.format, "text");
    }

    #[test]
    fn every_restart_key_exists_in_the_config() {
        let value = to_value(&Config::default()).unwrap();
        for key in NEEDS_RESTART {
            let pointer = format!("/{}", key.replace('.', "/"));
            assert!(
                value.pointer(&pointer).is_some(),
                "{key} is not a config key"
            );
        }
        assert!(needs_restart("store.redis_url"));
        assert!(!needs_restart("server.shutdown_grace_ms"));
        assert!(!needs_restart("upstreams"));
    }

    #[test]
    fn list_elements_are_compared_one_by_one_and_values_never_reported() {
        let old = json!({"callers": [{"name": "a", "weight": 1}], "credentials": [{"token": "pat-secret"}]});
        let new = json!({"callers": [{"name": "a", "weight": 3}], "credentials": [{"token": "pat-other"}]});
        let mut out = Vec::new();
        diff("", &old, &new, &mut out);
        assert_eq!(out, ["callers.0.weight", "credentials.0.token"]);
    }
}
