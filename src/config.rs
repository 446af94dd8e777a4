//! The gateway's configuration: the TOML schema, its defaults, and validation that names
//! the file, line and key of every problem.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::{Deserialize, Serialize};

use crate::callers::{CallerConfig, InboundConfig};
use crate::classify::{default_exemptions, ExemptRule};
use hubgate_engine::{BudgetKey, DailySpec, Limits, WindowSpec};
use crate::identity::{validate_credentials, IdentityConfig, StaticCredential};
use crate::retry::RetryConfig;

/// Everything `config.toml` can say. Field docs mirror the commented `config.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub budgets: BudgetsConfig,
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    pub lanes: LanesConfig,
    /// Callers known by name: keys, weights for fair sharing, optional rate caps.
    pub callers: Vec<CallerConfig>,
    /// Who may call: off by default; when on, only callers presenting a known key.
    pub inbound: InboundConfig,
    pub identity: IdentityConfig,
    /// Private-app tokens known in advance, resolved without asking HubSpot.
    pub credentials: Vec<StaticCredential>,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// Where budget state lives: this process, or Redis shared by every replica.
    pub store: StoreConfig,
}

/// What `/metrics` exports.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Owners (`app_id`, `portal_id` label pairs) given series of their own in each
    /// per-owner metric; the rest are summed under `app_id="other", portal_id="other"`, so
    /// a flood of owners cannot flood Prometheus.
    pub max_owner_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_owner_series: 1000,
        }
    }
}

/// The listeners callers and operators connect to, and the bounds on what callers send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address callers use as their HubSpot base URL.
    pub listen: String,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Largest total size of request headers (names + values) accepted; larger get 431.
    pub max_header_bytes: usize,
    /// A caller must finish sending request headers within this time.
    pub header_read_timeout_ms: u64,
    /// A caller's request body may pause at most this long while hubgate reads it; past
    /// it: 408, and nothing more of the call is sent upstream.
    pub body_idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body_bytes: 256 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            body_idle_timeout_ms: 30_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

/// Where calls are forwarded and how the pooled client behaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// HubSpot's API base URL (or the simulator's); `http://` is allowed for tests.
    pub base_url: String,
    /// Extra PEM bundle of CAs to trust besides the webpki roots; empty for none.
    pub ca_file: String,
    /// Time allowed to open a TCP (and TLS) connection to the upstream; past it: 502.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending a call until the upstream's response headers arrive,
    /// upload included; past it: 504.
    pub response_timeout_ms: u64,
    /// An upstream response body may pause at most this long once its headers came; past
    /// it the caller's response is cut off (its body ends early), so it never hangs.
    pub body_idle_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout_ms: u64,
    /// At most this many idle connections are kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: "https://api.hubapi.com".into(),
            ca_file: String::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 60_000,
            body_idle_timeout_ms: 30_000,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 256,
        }
    }
}

/// HubSpot's budgets as hubgate paces them: defaults for every owner, per-owner
/// overrides, safety margins, and which calls are exempt.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BudgetsConfig {
    /// Calls per (app, portal) per burst window.
    pub burst_limit: u32,
    /// Length of the rolling burst window.
    pub burst_window_ms: u64,
    /// Extra spacing so sends that leave hubgate `burst_window_ms` apart still arrive at
    /// HubSpot a full window apart when network latency varies.
    pub burst_margin_ms: u64,
    /// CRM search calls per portal per search window.
    pub search_limit: u32,
    pub search_window_ms: u64,
    /// The search window's counterpart of `burst_margin_ms`.
    pub search_margin_ms: u64,
    /// Slots left unused in every window, for callers outside hubgate or clock drift.
    pub margin_slots: u32,
    /// Calls per portal per day; 0 = no daily limit.
    pub daily_limit: u64,
    /// Where the daily budget resets at midnight: "UTC" or a fixed offset like "-05:00".
    pub time_zone: String,
    /// Calls without any credential (e.g. `/oauth/v1/token`) share this many per window.
    pub anonymous_limit: u32,
    pub anonymous_window_ms: u64,
    /// Owners (queues and budgets) unused this long are forgotten.
    pub idle_ttl_ms: u64,
    /// Calls that skip the burst window (and the daily budget when `daily = true`).
    /// Setting this list replaces HubSpot's default list.
    pub exempt: Vec<ExemptRule>,
    /// Per-owner overrides.
    pub owners: Vec<OwnerBudget>,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            burst_limit: 110,
            burst_window_ms: 10_000,
            burst_margin_ms: 100,
            search_limit: 5,
            search_window_ms: 1_000,
            search_margin_ms: 50,
            margin_slots: 0,
            daily_limit: 0,
            time_zone: "UTC".into(),
            anonymous_limit: 10,
            anonymous_window_ms: 1_000,
            idle_ttl_ms: 300_000,
            exempt: default_exemptions(),
            owners: Vec::new(),
        }
    }
}

/// Limits of one owner (`app_id` + `portal_id`) or one portal (`portal_id` alone, for
/// the portal-wide daily budget and time zone).
#[derive(Debug, Clone, Deserialize, Serialize)]

pub struct OwnerBudget {
    #[serde(default)]
    pub app_id: Option<u64>,
    pub portal_id: u64,
    #[serde(default)]
    pub burst_limit: Option<u32>,
    #[serde(default)]
    pub daily_limit: Option<u64>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Priority lanes (`X-Hubgate-Priority: high | normal | low`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LanesConfig {
    /// Share of each window (percent) kept free for `high` calls while they keep coming;
    /// when none has come for a window, the share goes to the others.
    pub high_reserve_percent: u32,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            high_reserve_percent: 20,
        }
    }
}

/// How calls wait for budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Longest a call may wait for budget; `X-Hubgate-Deadline-Ms` can only lower it.
    pub max_wait_ms: u64,
    /// Calls waiting per owner beyond which new ones get 503 at once.
    pub max_depth_per_owner: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_wait_ms: 30_000,
            max_depth_per_owner: 10_000,
        }
    }
}

impl BudgetsConfig {
    /// The engine's limits. The config must be valid (`Config::validate`).
    pub fn limits(&self) -> Limits {
        let margin_slots = self.margin_slots;
        let window = |limit: u32, window_ms: u64, margin_ms: u64| {
            WindowSpec::new(limit, Duration::from_millis(window_ms))
                .with_margins(Duration::from_millis(margin_ms), margin_slots)
        };
        let burst = window(self.burst_limit, self.burst_window_ms, self.burst_margin_ms);
        let default_offset = parse_utc_offset(&self.time_zone).unwrap_or(0);
        let mut limits = Limits {
            burst,
            search: window(
                self.search_limit,
                self.search_window_ms,
                self.search_margin_ms,
            ),
            unidentified: burst,
            // The anonymous window is about a second long, like search, so it takes search's margin.
            global: window(
                self.anonymous_limit,
                self.anonymous_window_ms,
                self.search_margin_ms,
            ),
            daily: DailySpec {
                limit: self.daily_limit,
                utc_offset_secs: default_offset,
            },
            ..Limits::default()
        };
        for owner in &self.owners {
            if let (Some(app_id), Some(burst_limit)) = (owner.app_id, owner.burst_limit) {
                limits.window_overrides.insert(
                    BudgetKey::Burst {
                        app_id,
                        portal_id: owner.portal_id,
                    },
                    window(burst_limit, self.burst_window_ms, self.burst_margin_ms),
                );
            }
            if owner.daily_limit.is_some() || owner.time_zone.is_some() {
                limits.daily_overrides.insert(
                    owner.portal_id,
                    DailySpec {
                        limit: owner.daily_limit.unwrap_or(self.daily_limit),
                        utc_offset_secs: owner
                            .time_zone
                            .as_deref()
                            .and_then(|tz| parse_utc_offset(tz).ok())
                            .unwrap_or(default_offset),
                    },
                );
            }
        }
        limits
    }

    fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        for (key, limit) in [
            ("budgets.burst_limit", self.burst_limit),
            ("budgets.search_limit", self.search_limit),
            ("budgets.anonymous_limit", self.anonymous_limit),
        ] {
            if limit == 0 {
                bad(
                    key,
                    "must be at least 1: a budget of 0 would hold every call until its deadline"
                        .into(),
                );
            } else if self.margin_slots >= limit {
                bad(
                    "budgets.margin_slots",
                    format!("must be smaller than {key} ({limit}), or no call could ever be sent"),
                );
            }
        }
        for (key, ms) in [
            ("budgets.burst_window_ms", self.burst_window_ms),
            ("budgets.search_window_ms", self.search_window_ms),
            ("budgets.anonymous_window_ms", self.anonymous_window_ms),
            ("budgets.idle_ttl_ms", self.idle_ttl_ms),
        ] {
            if ms == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if let Err(e) = parse_utc_offset(&self.time_zone) {
            bad("budgets.time_zone", e);
        }
        for (i, rule) in self.exempt.iter().enumerate() {
            if let Some(problem) = rule.problem() {
                bad(&format!("budgets.exempt.{i}.path"), problem);
            }
            if let Some(method) = &rule.method {
                if method.parse::<http::Method>().is_err() || method.is_empty() {
                    bad(
                        &format!("budgets.exempt.{i}.method"),
                        format!("'{method}' is not an HTTP method"),
                    );
                }
            }
        }
        for (i, owner) in self.owners.iter().enumerate() {
            if owner.burst_limit.is_some() && owner.app_id.is_none() {
                bad(
                    &format!("budgets.owners.{i}.burst_limit"),
                    "a burst limit belongs to an (app, portal): add app_id".into(),
                );
            }
            if owner.burst_limit == Some(0) {
                bad(
                    &format!("budgets.owners.{i}.burst_limit"),
                    "must be at least 1".into(),
                );
            }
            if let Some(tz) = &owner.time_zone {
                if let Err(e) = parse_utc_offset(tz) {
                    bad(&format!("budgets.owners.{i}.time_zone"), e);
                }
            }
        }
    }
}

/// "UTC", "Z", or a fixed offset "+05:30" / "-08:00" (optionally prefixed "UTC"), in
/// seconds east of UTC. Named zones (with daylight saving) are not supported yet.
pub fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let fail = || {
        format!("'{text}' is not a time zone hubgate understands; use \"UTC\" or a fixed offset like \"-05:00\" or \"+05:30\"")
    };
    let trimmed = text.trim();
    let rest = trimmed.strip_prefix("UTC").unwrap_or(trimmed);
    if rest.is_empty() || rest == "Z" {
        return Ok(0);
    }
    let (sign, digits) = match rest.as_bytes()[0] {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return Err(fail()),
    };
    let (hours, minutes) = digits.split_once(':').ok_or_else(fail)?;
    let hours: i32 = hours.parse().map_err(|_| fail())?;
    let minutes: i32 = minutes.parse().map_err(|_| fail())?;
    if hours > 14 || minutes >= 60 || hours < 0 || minutes < 0 {
        return Err(fail());
    }
    Ok(sign * (hours * 3600 + minutes * 60))
}

/// How hubgate logs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: String,
    /// A `tracing` filter such as `info` or `hubgate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// The upstream base URL split into what the forwarder needs.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the base URL without a trailing slash (usually empty).
    pub base_path: String,
}

impl UpstreamTarget {
    pub fn parse(base_url: &str) -> Result<UpstreamTarget, String> {
        let uri: Uri = base_url.parse().map_err(|e| {
            format!("'{base_url}' is not a URL ({e}); use e.g. https://api.hubapi.com")
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            format!(
                "'{base_url}' has no scheme; use https://api.hubapi.com or http://127.0.0.1:8081"
            )
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("'{base_url}' must start with http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("'{base_url}' has no host"))?;
        if uri.query().is_some() {
            return Err(format!("'{base_url}' must not carry a query string"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamTarget {
            scheme,
            authority,
            base_path,
        })
    }

    /// The host name without port, as compared against absolute-form request targets.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    pub fn display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// One thing wrong with a config file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `server.listen`; empty for syntax errors.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// One problem that concerns the file as a whole.
    pub fn of_file(file: &Path, message: String) -> ConfigErrors {
        ConfigErrors {
            file: file.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                message,
            }],
        }
    }

    /// Each problem as `file:line: key: what is wrong`.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                let mut line = self.file.display().to_string();
                if let Some(n) = p.line {
                    line.push_str(&format!(":{n}"));
                }
                if !p.key.is_empty() {
                    line.push_str(&format!(": {}", p.key));
                }
                line.push_str(&format!(": {}", p.message));
                line
            })
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates `path`, returning every problem at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::of_file(path, format!("cannot read the file: {e}")))?;
        Config::from_toml(&text).map_err(|problems| ConfigErrors {
            file: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates TOML text. Unknown keys are problems too: a typo must not
    /// silently fall back to a default.
    pub fn from_toml(text: &str) -> Result<Config, Vec<Problem>> {
        let mut unknown = Vec::new();
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| vec![toml_problem(text, &e)])?;
        let parsed: Result<Config, _> = serde_ignored::deserialize(deserializer, |path| {
            unknown.push(path.to_string());
        });
        let config = parsed.map_err(|e| vec![toml_problem(text, &e)])?;
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|key| Problem {
                key,
                line: None,
                message: "unknown key; see config.toml in the hubgate repository for every key"
                    .into(),
            })
            .collect();
        problems.extend(config.validate());
        if problems.is_empty() {
            return Ok(config);
        }
        let locator = KeyLocator::new(text);
        for p in &mut problems {
            p.line = p.line.or_else(|| locator.line_of(&p.key));
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }

    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                line: None,
                message,
            })
        };
        if let Err(e) = parse_addr(&self.server.listen) {
            bad("server.listen", e);
        }
        if let Err(e) = parse_addr(&self.server.admin_listen) {
            bad("server.admin_listen", e);
        }
        if self.server.listen == self.server.admin_listen {
            bad(
                "server.admin_listen",
                "must differ from server.listen: the admin listener is a separate port".into(),
            );
        }
        if self.server.max_body_bytes == 0 {
            bad("server.max_body_bytes", "must be greater than 0".into());
        }
        if self.server.max_header_bytes < 1024 {
            bad(
                "server.max_header_bytes",
                "must be at least 1024: HubSpot calls carry a bearer token and more".into(),
            );
        }
        if self.server.header_read_timeout_ms == 0 {
            bad(
                "server.header_read_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if self.server.body_idle_timeout_ms == 0 {
            bad(
                "server.body_idle_timeout_ms",
                "must be greater than 0".into(),
            );
        }
        if let Err(e) = UpstreamTarget::parse(&self.upstream.base_url) {
            bad("upstream.base_url", e);
        }
        if !self.upstream.ca_file.is_empty() && !Path::new(&self.upstream.ca_file).is_file() {
            bad(
                "upstream.ca_file",
                format!("'{}' is not a readable file", self.upstream.ca_file),
            );
        }
        for (key, value) in [
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            (
                "upstream.response_timeout_ms",
                self.upstream.response_timeout_ms,
            ),
            (
                "upstream.body_idle_timeout_ms",
                self.upstream.body_idle_timeout_ms,
            ),
        ] {
            if value == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        self.budgets.validate(&mut bad);
        self.store.validate(&mut bad);
        for (key, message) in self
            .identity
            .validate()
            .into_iter()
            .chain(self.retry.validate())
            .chain(crate::callers::validate(&self.callers))
            .chain(crate::callers::validate_inbound(
                &self.inbound,
                &self.callers,
            ))
            .chain(validate_credentials(&self.credentials))
        {
            bad(&key, message);
        }
        if self.lanes.high_reserve_percent > 90 {
            bad(
                "lanes.high_reserve_percent",
                "must be at most 90: normal and low calls need some of each window".into(),
            );
        }
        if self.queue.max_wait_ms == 0 {
            bad("queue.max_wait_ms", "must be greater than 0".into());
        }
        if self.queue.max_depth_per_owner == 0 {
            bad("queue.max_depth_per_owner", "must be at least 1".into());
        }
        if self.metrics.max_owner_series == 0 || self.metrics.max_owner_series > 100_000 {
            bad(
                "metrics.max_owner_series",
                "must be between 1 and 100000: each owner series costs Prometheus memory".into(),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bad(
                "log.format",
                format!(
                    "'{}' is not a log format; use \"text\" or \"json\"",
                    self.log.format
                ),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad(
                "log.level",
                format!(
                    "'{}' is not a tracing filter ({e}); use e.g. \"info\"",
                    self.log.level
                ),
            );
        }
        problems
    }

    /// The upstream target; only valid configs reach the gateway, so this cannot fail there.
    pub fn upstream_target(&self) -> Result<UpstreamTarget, String> {
        UpstreamTarget::parse(&self.upstream.base_url)
    }
}

impl ServerConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.body_idle_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[store]`: where budgets live, and what happens when a shared store fails.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StoreConfig {
    /// "memory" (this process only) or "redis" (shared by every replica).
    pub kind: String,
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` for TLS.
    pub redis_url: String,
    /// Prefix of every Redis key hubgate writes, so several deployments can share a Redis.
    pub key_prefix: String,
    /// "local_share" (serve each budget's share `limit / replicas` from memory) or
    /// "fail_closed" (answer 503) while Redis cannot be reached.
    pub on_failure: String,
    /// How many hubgate replicas share the budgets; sizes the local share.
    pub replicas: u32,
    /// Longest one Redis command may take before the store counts Redis as failed.
    pub command_timeout_ms: u64,
    /// Longest one connection attempt to Redis may take.
    pub connect_timeout_ms: u64,
    /// How often a degraded store checks whether Redis is back.
    pub reconnect_interval_ms: u64,
    /// PEM file of the CA(s) that signed Redis's certificate, for a `rediss://` URL on a
    /// private CA; when set, Redis's certificate is checked against these alone.
    pub ca_file: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: "memory".into(),
            redis_url: String::new(),
            key_prefix: "hubgate".into(),
            on_failure: "local_share".into(),
            replicas: 1,
            command_timeout_ms: 250,
            connect_timeout_ms: 1_000,
            reconnect_interval_ms: 500,
            ca_file: String::new(),
        }
    }
}

impl StoreConfig {
    /// Whether budgets are shared through Redis.
    pub fn is_redis(&self) -> bool {
        self.kind == "redis"
    }

    fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        if !matches!(self.kind.as_str(), "memory" | "redis") {
            bad(
                "store.kind",
                format!(
                    "'{}' is not a store kind; use \"memory\" (one gateway) or \"redis\" (shared by replicas)",
                    self.kind
                ),
            );
        }
        if !matches!(self.on_failure.as_str(), "local_share" | "fail_closed") {
            bad(
                "store.on_failure",
                format!(
                    "'{}' is not a failure mode; use \"local_share\" (serve each replica's share of every budget) or \"fail_closed\" (answer 503)",
                    self.on_failure
                ),
            );
        }
        if self.is_redis() {
            if let Err(e) = check_redis_url(&self.redis_url) {
                bad("store.redis_url", e);
            }
        } else if !self.redis_url.is_empty() {
            bad(
                "store.redis_url",
                "is set but store.kind is not \"redis\"; set kind = \"redis\" or remove redis_url"
                    .into(),
            );
        }
        if !self.ca_file.is_empty() {
            if !(self.is_redis() && self.redis_url.starts_with("rediss://")) {
                bad(
                    "store.ca_file",
                    "is only used for TLS to Redis: set kind = \"redis\" and a rediss:// redis_url, or remove ca_file".into(),
                );
            } else if !Path::new(&self.ca_file).is_file() {
                bad(
                    "store.ca_file",
                    format!("'{}' is not a readable file", self.ca_file),
                );
            }
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        {
            bad(
                "store.key_prefix",
                format!(
                    "'{}' is not a usable key prefix; use 1 to 64 letters, digits or - _ . : / (braces would break Redis Cluster hash tags)",
                    self.key_prefix
                ),
            );
        }
        if !(1..=1_000).contains(&self.replicas) {
            bad(
                "store.replicas",
                format!(
                    "must be between 1 and 1000 (how many hubgate replicas share the budgets), not {}",
                    self.replicas
                ),
            );
        }
        for (key, value) in [
            ("store.command_timeout_ms", self.command_timeout_ms),
            ("store.connect_timeout_ms", self.connect_timeout_ms),
            ("store.reconnect_interval_ms", self.reconnect_interval_ms),
        ] {
            if value == 0 || value > 60_000 {
                bad(
                    key,
                    format!("must be between 1 and 60000 milliseconds, not {value}"),
                );
            }
        }
    }
}

/// Accepts `redis://` and `rediss://` URLs the Redis client can use.
fn check_redis_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err(
            "is required when store.kind = \"redis\"; e.g. \"redis://127.0.0.1:6379\" or \"rediss://:password@redis.internal:6380\"".into(),
        );
    }
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok {
        return Err(
            "must start with redis:// or rediss:// (TLS), e.g. \"redis://127.0.0.1:6379\"".into(),
        );
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        format!("is not a usable Redis URL ({e}); e.g. \"redis://user:password@host:6379/0\"")
    })
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("'{value}' is not an address like 127.0.0.1:8080 or [::1]:8080"))
}

fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let key = e
        .span()
        .and_then(|span| KeyLocator::new(text).key_at(span.start))
        .unwrap_or_default();
    Problem {
        key,
        line: e.span().map(|span| line_of_offset(text, span.start)),
        message: e.message().trim().to_string(),
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of a dotted key path (`server.listen`, `callers.0.name`) in the
/// original text, using `toml_edit`'s spans so formatting and comments do not matter.
struct KeyLocator<'a> {
    text: &'a str,
    document: Option<toml_edit::Document<&'a str>>,
}

impl<'a> KeyLocator<'a> {
    fn new(text: &'a str) -> Self {
        KeyLocator {
            text,
            document: toml_edit::Document::parse(text).ok(),
        }
    }

    fn line_of(&self, key_path: &str) -> Option<usize> {
        /// Array-of-tables elements are `Table`s, everything else is reached as an `Item`.
        enum Node<'d> {
            Item(&'d toml_edit::Item),
            Table(&'d toml_edit::Table),
        }
        let document = self.document.as_ref()?;
        let mut node = Node::Item(document.as_item());
        let mut best_span = None;
        for segment in key_path.split('.') {
            if let (Node::Item(toml_edit::Item::ArrayOfTables(array)), Ok(index)) =
                (&node, segment.parse::<usize>())
            {
                let Some(table) = array.get(index) else { break };
                best_span = table.span().or(best_span);
                node = Node::Table(table);
                continue;
            }
            let table_like: Option<&dyn toml_edit::TableLike> = match node {
                Node::Item(item) => item.as_table_like(),
                Node::Table(table) => Some(table),
            };
            let Some((key, value)) = table_like.and_then(|t| t.get_key_value(segment)) else {
                break;
            };
            best_span = key.span().or(value.span()).or(best_span);
            node = Node::Item(value);
        }
        best_span.map(|span| line_of_offset(self.text, span.start))
    }

    /// The dotted path of the innermost key whose value covers `offset` (where serde
    /// reported a type error), so that such errors name their key too.
    fn key_at(&self, offset: usize) -> Option<String> {
        fn search(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) -> bool {
            for (key, item) in table.iter() {
                let covers = item.span().is_some_and(|s| s.contains(&offset));
                path.push(key.to_string());
                match item {
                    toml_edit::Item::ArrayOfTables(array) => {
                        for (index, element) in array.iter().enumerate() {
                            path.push(index.to_string());
                            if search(element, offset, path) {
                                return true;
                            }
                            path.pop();
                        }
                    }
                    _ => {
                        if let Some(inner) = item.as_table_like() {
                            if search(inner, offset, path) {
                                return true;
                            }
                        }
                    }
                }
                if covers && item.as_table_like().is_none() {
                    return true;
                }
                path.pop();
            }
            false
        }
        let document = self.document.as_ref()?;
        let mut path = Vec::new();
        search(document.as_table(), offset, &mut path).then(|| path.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_listeners_stay_on_loopback_unless_configured_otherwise() {
        let config = Config::default();
        for addr in [&config.server.listen, &config.server.admin_listen] {
            assert!(parse_addr(addr).unwrap().ip().is_loopback(), "{addr}");
        }
        assert!(!config.inbound.require_caller_key, "inbound auth is opt-in");
    }

    #[test]
    fn a_redis_ca_file_needs_a_tls_redis_url_and_a_readable_file() {
        let problems = |toml: &str| -> Vec<String> {
            Config::from_toml(toml)
                .err()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.key == "store.ca_file")
                .map(|p| p.message)
                .collect()
        };
        let plain = "[store]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nca_file = \"Cargo.toml\"\n";
        assert_eq!(problems(plain).len(), 1, "{:?}", problems(plain));
        let missing = "[store]\nkind = \"redis\"\nredis_url = \"rediss://127.0.0.1:6380\"\nca_file = \"no/such.pem\"\n";
        assert_eq!(problems(missing).len(), 1, "{:?}", problems(missing));
        let fine = "[store]\nkind = \"redis\"\nredis_url = \"rediss://127.0.0.1:6380\"\nca_file = \"Cargo.toml\"\n";
        assert!(problems(fine).is_empty(), "{:?}", problems(fine));
    }
}
