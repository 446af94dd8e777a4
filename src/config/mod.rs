//! The gateway's configuration: every TOML section with its defaults, and validation that
//! names the file, line and key of every problem.
//!
//! A leaf: nothing here reads another part of the gateway, so every part may read it.
//! Each section lives in the file named for it and checks itself; `Config::validate`
//! runs them all, and `locate` turns a dotted key back into a line of the file.

mod admin;
mod budgets;
mod callers;
mod coalesce;
mod identity;
mod locate;
mod oauth;
mod oauth_store;
mod problems;
mod retry;
mod server;
mod store;
mod upstream;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use budgets::{
    default_exemptions, parse_utc_offset, BudgetsConfig, ExemptRule, LanesConfig, OwnerBudget,
    QueueConfig,
};
pub use callers::{
    caller_name_problem, default_priorities, key_digest, key_sha256, CallerConfig, InboundConfig,
};
pub use coalesce::{CoalesceConfig, HUBSPOT_MAX_BATCH};
pub(crate) use identity::check_credentials;
pub use identity::{credential_digest, IdentityConfig, StaticCredential, V1_OAUTH_SUNSET};
pub use oauth::AppConfig;
pub use oauth_store::OAuthStoreConfig;
pub use problems::{ConfigErrors, Problem, Problems};
pub use retry::RetryConfig;
pub use server::{ServerConfig, Workers};
pub use store::StoreConfig;
pub use upstream::{UpstreamConfig, UpstreamTarget};

/// Everything `config.toml` can say. Field docs mirror the commented `config.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    /// Who may change the running gateway through the admin listener.
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub budgets: BudgetsConfig,
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    pub lanes: LanesConfig,
    /// Reads merged into batch reads, identical GETs into one call.
    pub coalesce: CoalesceConfig,
    /// Callers known by name: keys, weights for fair sharing, optional rate caps.
    pub callers: Vec<CallerConfig>,
    /// Who may call: off by default; when on, only callers presenting a known key.
    pub inbound: InboundConfig,
    pub identity: IdentityConfig,
    /// Private-app tokens known in advance, resolved without asking HubSpot.
    pub credentials: Vec<StaticCredential>,
    /// OAuth apps whose client credentials hubgate holds (introspection, refresh).
    pub apps: Vec<AppConfig>,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// Where budget state lives: this process, or Redis shared by every replica.
    pub store: StoreConfig,
    /// OAuth installs: where they persist, and the key that seals them at rest.
    pub oauth: OAuthStoreConfig,
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
            toml::Deserializer::parse(text).map_err(|e| vec![locate::toml_problem(text, &e)])?;
        let parsed: Result<Config, _> = serde_ignored::deserialize(deserializer, |path| {
            unknown.push(path.to_string());
        });
        let config = parsed.map_err(|e| vec![locate::toml_problem(text, &e)])?;
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
        let locator = locate::KeyLocator::new(text);
        for p in &mut problems {
            p.line = p.line.or_else(|| locator.line_of(&p.key));
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }

    /// Semantic checks that serde cannot express, section by section.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        self.server.check(&mut problems);
        self.admin.check(&mut problems);
        self.upstream.check(&mut problems);
        self.budgets.check(&mut problems);
        self.store.check(&mut problems);
        self.oauth.check(&mut problems);
        self.identity.check(&mut problems);
        self.retry.check(&mut problems);
        callers::check_callers(&self.callers, &mut problems);
        self.inbound.check(&self.callers, &mut problems);
        identity::check_credentials(&self.credentials, &mut problems);
        oauth::check_apps(&self.apps, &mut problems);
        self.lanes.check(&mut problems);
        self.queue.check(&mut problems);
        self.coalesce.check(&mut problems);
        if self.metrics.max_owner_series == 0 || self.metrics.max_owner_series > 100_000 {
            problems.add(
                "metrics.max_owner_series",
                "must be between 1 and 100000: each owner series costs Prometheus memory",
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.add(
                "log.format",
                format!(
                    "'{}' is not a log format; use \"text\" or \"json\"",
                    self.log.format
                ),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.add(
                "log.level",
                format!(
                    "'{}' is not a tracing filter ({e}); use e.g. \"info\"",
                    self.log.level
                ),
            );
        }
        problems.into_vec()
    }

    /// What is allowed but unwise, for `check-config` and the start-up log: a client secret
    /// written in the file, the v1 OAuth lookup HubSpot switches off on 2027-02-16.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        oauth::app_warnings(&self.apps, &mut problems);
        self.identity.warnings(&mut problems);
        problems.into_vec()
    }

    /// `problems` of the TOML `text`, each given the line of its key.
    pub fn locate(text: &str, mut problems: Vec<Problem>) -> Vec<Problem> {
        let locator = locate::KeyLocator::new(text);
        for p in &mut problems {
            p.line = p.line.or_else(|| locator.line_of(&p.key));
        }
        problems
    }

    /// The upstream target; only valid configs reach the gateway, so this cannot fail there.
    pub fn upstream_target(&self) -> Result<UpstreamTarget, String> {
        UpstreamTarget::parse(&self.upstream.base_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_redis_cluster_needs_seed_nodes_of_one_scheme_and_no_redis_url() {
        let keys = |toml: &str| -> Vec<String> {
            Config::from_toml(toml)
                .err()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.key.starts_with("store."))
                .map(|p| p.key)
                .collect()
        };
        let cluster = "[store]\nkind = \"redis-cluster\"\n";
        let fine = format!(
            "{cluster}redis_urls = [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]\n"
        );
        assert!(keys(&fine).is_empty(), "{:?}", keys(&fine));
        assert!(Config::from_toml(&fine).unwrap().store.is_redis());
        assert_eq!(keys(cluster), ["store.redis_urls"]);
        let bad = format!("{cluster}redis_urls = [\"redis://10.0.0.1:6379\", \"http://x\"]\n");
        assert_eq!(keys(&bad), ["store.redis_urls.1"]);
        let mixed = format!("{cluster}redis_urls = [\"redis://a:1\", \"rediss://b:1\"]\n");
        assert_eq!(keys(&mixed), ["store.redis_urls"]);
        let both = format!("{fine}redis_url = \"redis://10.0.0.1:6379\"\n");
        assert_eq!(keys(&both), ["store.redis_url"]);
        let stray = "[store]\nkind = \"redis\"\nredis_url = \"redis://a:1\"\nredis_urls = [\"redis://b:1\"]\n";
        assert_eq!(keys(stray), ["store.redis_urls"]);
        let tls = "[store]\nkind = \"redis-cluster\"\nredis_urls = [\"rediss://a:1\"]\nca_file = \"Cargo.toml\"\n";
        assert!(keys(tls).is_empty(), "{:?}", keys(tls));
    }
}
