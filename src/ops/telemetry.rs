//! Logging set-up: `tracing` to stderr as text or JSON, filtered by config or `RUST_LOG`;
//! the filter can be replaced later by a config reload.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::LogConfig;

/// Replaces the installed filter; set once, by the `init` that installed the subscriber.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber once; later calls (tests starting several gateways)
/// keep the first one.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let json = config.format == "json";
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| fmt::layer().json().with_writer(std::io::stderr)))
        .with((!json).then(|| fmt::layer().with_writer(std::io::stderr)))
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// What became of a reloaded `[log] level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` is set and overrides the config, as it did at start.
    OverriddenByEnv,
    /// This process's logging was not installed by `init` (an embedding, or a test).
    NotInstalled,
}

/// Applies a reloaded `[log] level` (already validated) to the running subscriber.
pub fn set_level(level: &str) -> LevelChange {
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        return LevelChange::OverriddenByEnv;
    }
    let (Some(handle), Ok(filter)) = (FILTER.get(), EnvFilter::try_new(level)) else {
        return LevelChange::NotInstalled;
    };
    match handle.reload(filter) {
        Ok(()) => LevelChange::Applied,
        Err(_) => LevelChange::NotInstalled,
    }
}
