//! The token broker: holds each install's refresh token once for every caller, hands out
//! a fresh access token per brokered call, and refreshes ahead of expiry, one refresh per
//! install at a time (single-flight here, the store's lock across replicas).
//!
//! `refresh` owns the refresh protocol (locks, re-reads, compare-and-swap, backoff,
//! `needs_reauth`); `refresher` the background task that refreshes ahead of expiry and
//! keeps idle installs alive; `metrics` what they export.

mod metrics;
mod refresh;
mod refresher;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::token_endpoint::{ClientCredentials, Grant, TokenEndpoint, TokenError};
use super::{Install, InstallKey, InstallStatus, InstallStore, Secret};
use crate::pace::clock::Clock;

pub(crate) use metrics::BrokerMetrics;

/// A call finding its token this close to expiry refreshes first (at most; a short-lived
/// token uses a tenth of its life), so no caller is handed a token that dies on the way.
const CALL_MARGIN: Duration = Duration::from_secs(60);

/// One configured app, as the broker uses it.
#[derive(Debug, Clone)]
pub(crate) struct BrokerApp {
    pub(crate) app_id: u64,
    pub(crate) credentials: ClientCredentials,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) optional_scopes: Vec<String>,
}

/// Why the broker has no token for a call.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BrokerError {
    #[error("no app {0} is configured in [[apps]]")]
    UnknownApp(u64),
    #[error("no install of app {app_id} in portal {hub_id}")]
    UnknownInstall { app_id: u64, hub_id: u64 },
    #[error("the install of app {app_id} in portal {hub_id} needs to be authorized again: HubSpot no longer accepts its refresh token")]
    NeedsReauth { app_id: u64, hub_id: u64 },
    #[error("{0}")]
    Token(TokenError),
    #[error("the install store failed: {0}")]
    Store(String),
}

impl BrokerError {
    fn of_key(key: &InstallKey, needs_reauth: bool) -> BrokerError {
        if needs_reauth {
            BrokerError::NeedsReauth {
                app_id: key.app_id,
                hub_id: key.hub_id,
            }
        } else {
            BrokerError::UnknownInstall {
                app_id: key.app_id,
                hub_id: key.hub_id,
            }
        }
    }
}

fn store_error(e: anyhow::Error) -> BrokerError {
    BrokerError::Store(format!("{e:#}"))
}

/// Cheap to clone: one `Arc`.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn InstallStore>,
    apps: HashMap<u64, BrokerApp>,
    tokens: TokenEndpoint,
    clock: Clock,
    /// One async mutex per install: the in-process half of "one refresh at a time".
    flights: Mutex<HashMap<InstallKey, Arc<tokio::sync::Mutex<()>>>>,
    /// When this process last brokered a call for each install (unix ms): installs in use
    /// are refreshed ahead of expiry, idle ones only daily.
    last_used: Mutex<HashMap<InstallKey, i64>>,
    /// Installs whose token endpoint is backing off: (not before unix ms, failures).
    backoff: Mutex<HashMap<InstallKey, (i64, u32)>>,
    metrics: BrokerMetrics,
    /// Wakes the refresher when an install arrives or dies, so its schedule and gauges
    /// include it at once.
    installed: tokio::sync::Notify,
}

impl Broker {
    pub(crate) fn new(
        store: Arc<dyn InstallStore>,
        apps: Vec<BrokerApp>,
        tokens: TokenEndpoint,
        clock: Clock,
        metrics: BrokerMetrics,
    ) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                store,
                apps: apps.into_iter().map(|a| (a.app_id, a)).collect(),
                tokens,
                clock,
                flights: Mutex::default(),
                last_used: Mutex::default(),
                backoff: Mutex::default(),
                metrics,
                installed: tokio::sync::Notify::new(),
            }),
        }
    }

    pub(crate) fn app(&self, app_id: u64) -> Result<&BrokerApp, BrokerError> {
        self.inner
            .apps
            .get(&app_id)
            .ok_or(BrokerError::UnknownApp(app_id))
    }

    /// The app a call means when it names none: the only one configured.
    pub(crate) fn only_app(&self) -> Option<u64> {
        let mut ids = self.inner.apps.keys();
        match (ids.next(), ids.next()) {
            (Some(&id), None) => Some(id),
            _ => None,
        }
    }

    pub(crate) fn metrics(&self) -> &BrokerMetrics {
        &self.inner.metrics
    }

    pub(crate) fn tokens(&self) -> &TokenEndpoint {
        &self.inner.tokens
    }

    /// A fresh access token for one brokered call: the stored one, or a new one when it is
    /// within `CALL_MARGIN` (or a tenth of its life) of expiry.
    pub(crate) async fn access_token(&self, key: InstallKey) -> Result<String, BrokerError> {
        self.inner
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, self.inner.clock.unix_ms());
        let install = self.read(key).await?;
        let now = self.inner.clock.unix_ms();
        let install = if near_expiry(&install, now) {
            self.refresh_when(key, Need::NearExpiry).await?
        } else {
            install
        };
        usable_token(&install, self.inner.clock.unix_ms()).ok_or_else(|| no_token(&key, &install))
    }

    /// After HubSpot answered `EXPIRED_AUTHENTICATION` to `stale`: a new token, refreshing
    /// unless a sibling already replaced `stale`.
    pub(crate) async fn replace_token(
        &self,
        key: InstallKey,
        stale: &str,
    ) -> Result<String, BrokerError> {
        let install = self
            .refresh_when(key, Need::Replaces(stale.to_string()))
            .await?;
        usable_token(&install, self.inner.clock.unix_ms()).ok_or_else(|| no_token(&key, &install))
    }

    /// The stored install, refused when absent or waiting for re-authorization.
    async fn read(&self, key: InstallKey) -> Result<Install, BrokerError> {
        match self.inner.store.get(key).await.map_err(store_error)? {
            None => Err(BrokerError::of_key(&key, false)),
            Some(install) if install.status == InstallStatus::NeedsReauth => {
                Err(BrokerError::of_key(&key, true))
            }
            Some(install) => Ok(install),
        }
    }

    /// Imports an existing refresh token: one refresh learns its portal and scopes.
    pub(crate) async fn import(
        &self,
        app_id: u64,
        refresh_token: &str,
    ) -> Result<Install, BrokerError> {
        let app = self.app(app_id)?.clone();
        let grant = self
            .inner
            .tokens
            .refresh(&app.credentials, refresh_token)
            .await
            .map_err(BrokerError::Token)?;
        self.inner.metrics.count_refresh("ok");
        self.keep_grant(app_id, grant).await
    }

    /// Stores what a token answer granted as the install of its portal, replacing an
    /// earlier install of the same portal.
    pub(crate) async fn keep_grant(
        &self,
        app_id: u64,
        grant: Grant,
    ) -> Result<Install, BrokerError> {
        let hub_id = grant.hub_id.ok_or_else(|| {
            BrokerError::Token(TokenError::Refused {
                status: "NO_HUB_ID".into(),
                description: "the token answer names no hub_id".into(),
            })
        })?;
        let key = InstallKey { app_id, hub_id };
        loop {
            let existing = self.inner.store.get(key).await.map_err(store_error)?;
            let install = self.install_of(key, &grant, existing.as_ref());
            let expected = existing.as_ref().map(|i| i.version);
            if self
                .inner
                .store
                .put_if(install.clone(), expected)
                .await
                .map_err(store_error)?
            {
                self.clear_backoff(key);
                self.inner.installed.notify_one();
                return self
                    .inner
                    .store
                    .get(key)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| BrokerError::of_key(&key, false));
            }
        }
    }

    /// The install `grant` makes of `key`, following `previous` (if any).
    fn install_of(&self, key: InstallKey, grant: &Grant, previous: Option<&Install>) -> Install {
        let now = self.inner.clock.unix_ms();
        let scopes = if grant.scopes.is_empty() {
            previous.map(|p| p.scopes.clone()).unwrap_or_default()
        } else {
            grant.scopes.clone()
        };
        Install {
            key,
            scopes,
            status: InstallStatus::Active,
            refresh_token: Secret::new(grant.refresh_token.clone()),
            access_token: Some(Secret::new(grant.access_token.clone())),
            access_expires_at_unix_ms: now
                + i64::try_from(grant.expires_in.as_millis()).unwrap_or(i64::MAX / 2),
            updated_at_unix_ms: now,
            version: previous.map_or(1, |p| p.version + 1),
        }
    }

    pub(crate) async fn list(&self) -> Result<Vec<Install>, BrokerError> {
        self.inner.store.list().await.map_err(store_error)
    }

    /// Revokes the install's refresh token at HubSpot and forgets the install. A revoke
    /// HubSpot cannot take now is reported, and the install kept, so it can be retried.
    pub(crate) async fn forget(&self, key: InstallKey) -> Result<(), BrokerError> {
        let Some(install) = self.inner.store.get(key).await.map_err(store_error)? else {
            return Err(BrokerError::of_key(&key, false));
        };
        let app = self.app(key.app_id)?.clone();
        self.inner
            .tokens
            .revoke(&app.credentials, install.refresh_token.expose())
            .await
            .map_err(BrokerError::Token)?;
        self.inner.store.delete(key).await.map_err(store_error)?;
        self.clear_backoff(key);
        Ok(())
    }

    fn clear_backoff(&self, key: InstallKey) {
        self.inner
            .backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

/// When a refresh is still needed once a caller holds the install's locks: the condition
/// is checked again on the install as it is then, since a sibling may have refreshed.
#[derive(Debug, Clone)]
pub(super) enum Need {
    /// The background refresher saw this version due.
    Due { version: u64 },
    /// A call found the token near expiry.
    NearExpiry,
    /// HubSpot called this access token expired.
    Replaces(String),
}

impl Need {
    /// Whether, while a sibling refreshes, the current token may be served as it is: yes
    /// unless it has expired, or HubSpot already called it expired.
    fn served_meanwhile(&self, install: &Install, now: i64) -> bool {
        !matches!(self, Need::Replaces(_)) && usable_token(install, now).is_some()
    }

    fn holds(&self, install: &Install, now: i64) -> bool {
        match self {
            Need::Due { version } => install.version == *version,
            Need::NearExpiry => near_expiry(install, now),
            Need::Replaces(stale) => {
                install.access_token.as_ref().map(Secret::expose) == Some(stale.as_str())
            }
        }
    }
}

/// Why `install` has no token to hand out: it needs re-authorization, or its token ran
/// out while the token endpoint kept failing (the broker is backing off).
fn no_token(key: &InstallKey, install: &Install) -> BrokerError {
    if install.status == InstallStatus::NeedsReauth {
        return BrokerError::of_key(key, true);
    }
    BrokerError::Token(TokenError::Unavailable {
        reason: "the access token expired and the token endpoint has not answered a refresh yet; hubgate keeps trying".into(),
        retry_after: None,
    })
}

/// The access token of `install` if it is still valid at `now`.
fn usable_token(install: &Install, now: i64) -> Option<String> {
    (install.status == InstallStatus::Active && install.access_expires_at_unix_ms > now)
        .then(|| {
            install
                .access_token
                .as_ref()
                .map(|t| t.expose().to_string())
        })
        .flatten()
}

/// How long the install's current access token was granted for, in ms.
fn lifetime_ms(install: &Install) -> i64 {
    (install.access_expires_at_unix_ms - install.updated_at_unix_ms).max(0)
}

/// Whether a call must refresh before using the token: none, or within the margin.
fn near_expiry(install: &Install, now: i64) -> bool {
    let margin = (lifetime_ms(install) / 10).min(CALL_MARGIN.as_millis() as i64);
    install.access_token.is_none() || install.access_expires_at_unix_ms - now <= margin
}
