//! Which install store a gateway runs with, from `[store]` and `[oauth]`, and the start-up
//! refusals: installs with no key, a key that is not theirs, a file another process holds.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::embedded::EmbeddedInstallStore;
use super::install::InstallStore;
use super::seal::{SecretKey, SECRET_KEY_ENV};
use super::shared::SharedInstallStore;
use crate::config::Config;
use crate::store::RedisSettings;

/// The install store a gateway holds, and what start-up learned about it for its log.
#[derive(Debug)]
pub struct OpenedInstalls {
    pub store: Arc<dyn InstallStore>,
    /// Installs found at start.
    pub count: usize,
    /// "redis" or "embedded", for the start-up log.
    pub kind: &'static str,
}

/// Opens the install store when a secret key is configured or `required` (OAuth apps are
/// configured); `None` when neither, after checking that no installs are waiting there
/// for a key. `env` reads environment variables (`HUBGATE_SECRET_KEY`).
pub async fn open_installs(
    config: &Config,
    required: bool,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<OpenedInstalls>> {
    let key = SecretKey::configured(&config.oauth.key_file, env)?;
    let Some(key) = key else {
        let waiting = installs_waiting(config).await?;
        if waiting > 0 {
            anyhow::bail!(
                "{waiting} OAuth installs are stored ({}) but no secret key is set to read them: set {SECRET_KEY_ENV} or [oauth] key_file to the key they were written with",
                where_installs_live(config)
            );
        }
        if required {
            anyhow::bail!(
                "OAuth apps are configured, and their installs' tokens are kept encrypted: set {SECRET_KEY_ENV} or [oauth] key_file to a secret key of 64 hex digits (`openssl rand -hex 32`)"
            );
        }
        return Ok(None);
    };
    let (store, kind): (Arc<dyn InstallStore>, _) = if config.store.is_redis() {
        let settings = RedisSettings::from_config(&config.store);
        (
            Arc::new(SharedInstallStore::open(&settings, key).await.context(
                "opening the OAuth installs in Redis ([store] redis_url or redis_urls)",
            )?),
            "redis",
        )
    } else {
        let path = Path::new(&config.oauth.store_path).to_path_buf();
        let store = tokio::task::spawn_blocking(move || EmbeddedInstallStore::open(&path, key))
            .await
            .map_err(|e| anyhow::anyhow!("opening the install database failed: {e}"))??;
        (Arc::new(store), "embedded")
    };
    let count = store.list().await?.len();
    Ok(Some(OpenedInstalls { store, count, kind }))
}

fn where_installs_live(config: &Config) -> String {
    if config.store.is_redis() {
        format!("in Redis, key prefix '{}'", config.store.key_prefix)
    } else {
        format!("in '{}'", config.oauth.store_path)
    }
}

/// Installs stored where `config` keeps them, counted without a key. A Redis that does not
/// answer counts none: without a key nothing would read them, and budgets alone may run.
async fn installs_waiting(config: &Config) -> anyhow::Result<usize> {
    if config.store.is_redis() {
        let settings = RedisSettings::from_config(&config.store);
        return match SharedInstallStore::count_at(&settings).await {
            Ok(count) => Ok(count),
            Err(e) => {
                tracing::warn!(error = %e, "could not check Redis for stored OAuth installs");
                Ok(0)
            }
        };
    }
    let path = Path::new(&config.oauth.store_path).to_path_buf();
    tokio::task::spawn_blocking(move || EmbeddedInstallStore::count_at(&path))
        .await
        .map_err(|e| anyhow::anyhow!("reading the install database failed: {e}"))?
}
