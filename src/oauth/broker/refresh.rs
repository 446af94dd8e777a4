//! The refresh protocol: one refresh per install at a time (this process's single-flight
//! mutex, then the store's lock across replicas), a re-read after each lock (a sibling may
//! have refreshed already), compare-and-swap of the answer, and what each failure means.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;

use super::{store_error, Broker, BrokerError, Install, InstallKey, InstallStatus, Need};
use crate::oauth::token_endpoint::TokenError;

/// How often a replica waiting on another's refresh reads the install again.
const WAIT_POLL: Duration = Duration::from_millis(50);
/// Backoff after the token endpoint fails: full jitter up to this, doubling from `BASE`.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// The lock outlives a token call by this much, so it never expires under a live refresh.
const LOCK_SLACK: Duration = Duration::from_secs(5);

impl Broker {
    /// Refreshes `key` if `needed` still holds once this caller has the install to itself;
    /// answers the install as it then is (refreshed by this call or by a sibling).
    pub(super) async fn refresh_when(
        &self,
        key: InstallKey,
        needed: Need,
    ) -> Result<Install, BrokerError> {
        let flight = self.flight(key);
        let _in_process = flight.lock().await;
        self.refresh_single(key, &needed).await
    }

    /// `refresh_when` for the background refresher: skips an install whose refresh is
    /// already under way in this process.
    pub(super) async fn try_refresh_when(&self, key: InstallKey, needed: Need) -> Option<()> {
        let flight = self.flight(key);
        let _in_process = flight.try_lock().ok()?;
        let _ = self.refresh_single(key, &needed).await;
        Some(())
    }

    fn flight(&self, key: InstallKey) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    fn lock_ttl(&self) -> Duration {
        self.inner.tokens.timeout() + LOCK_SLACK
    }

    async fn refresh_single(&self, key: InstallKey, needed: &Need) -> Result<Install, BrokerError> {
        let store = &self.inner.store;
        let clock = self.inner.clock;
        let give_up_at = clock.unix_ms() + 2 * self.lock_ttl().as_millis() as i64;
        loop {
            let install = self.read(key).await?;
            if !needed.holds(&install, clock.unix_ms()) || self.backing_off(key) {
                return Ok(install);
            }
            if let Some(lock) = store
                .try_lock(key, self.lock_ttl())
                .await
                .map_err(store_error)?
            {
                let refreshed = self.refresh_locked(key, needed).await;
                if let Err(e) = store.unlock(key, lock).await {
                    tracing::warn!(app_id = key.app_id, hub_id = key.hub_id, error = %format!("{e:#}"),
                        "could not release a refresh lock; it expires by itself");
                }
                return refreshed;
            }
            // Another replica is refreshing. With a token that still works there is
            // nothing to wait for: its answer lands in the store for the next call.
            if needed.served_meanwhile(&install, clock.unix_ms()) {
                return Ok(install);
            }
            // Otherwise wait for its answer (or its lock to go) instead of redeeming the
            // same refresh token a second time.
            if clock.unix_ms() > give_up_at {
                return Ok(install);
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// The refresh itself, holding both locks.
    async fn refresh_locked(&self, key: InstallKey, needed: &Need) -> Result<Install, BrokerError> {
        let clock = self.inner.clock;
        let install = self.read(key).await?;
        if !needed.holds(&install, clock.unix_ms()) {
            return Ok(install);
        }
        let app = self.app(key.app_id)?.clone();
        let used = install.refresh_token.expose().to_string();
        let metrics = &self.inner.metrics;
        match self.inner.tokens.refresh(&app.credentials, &used).await {
            Ok(grant) => {
                // Whether or not HubSpot rotated it, the answer's refresh token is the one
                // kept: written only over the install this refresh read.
                let next = self.install_of(key, &grant, Some(&install));
                let written = self
                    .inner
                    .store
                    .put_if(next, Some(install.version))
                    .await
                    .map_err(store_error)?;
                metrics.count_refresh(if written { "ok" } else { "lost_race" });
                self.clear_backoff(key);
                self.read(key).await
            }
            Err(TokenError::InvalidGrant { status, .. }) => {
                // A sibling may have redeemed this refresh token and stored its successor.
                let current = self.read(key).await?;
                if current.refresh_token.expose() != used || current.version != install.version {
                    metrics.count_refresh("lost_race");
                    return Ok(current);
                }
                metrics.count_refresh("invalid_grant");
                tracing::error!(
                    app_id = key.app_id,
                    hub_id = key.hub_id,
                    status = %status,
                    "HubSpot no longer accepts this install's refresh token; it needs to be installed again"
                );
                let mut dead = current.clone();
                dead.status = InstallStatus::NeedsReauth;
                dead.access_token = None;
                dead.updated_at_unix_ms = clock.unix_ms();
                dead.version = current.version + 1;
                self.inner
                    .store
                    .put_if(dead, Some(current.version))
                    .await
                    .map_err(store_error)?;
                // The gauges say so at once, not at the refresher's next look.
                self.inner.installed.notify_one();
                Err(BrokerError::NeedsReauth {
                    app_id: key.app_id,
                    hub_id: key.hub_id,
                })
            }
            Err(error) => {
                let retry_after = match &error {
                    TokenError::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                metrics.count_refresh(match error {
                    TokenError::Unavailable { .. } => "unavailable",
                    _ => "refused",
                });
                self.back_off(key, retry_after);
                tracing::warn!(app_id = key.app_id, hub_id = key.hub_id, error = %error,
                    "refresh failed; the current access token is served while it lasts");
                if install.access_expires_at_unix_ms > clock.unix_ms() {
                    Ok(install)
                } else {
                    Err(BrokerError::Token(error))
                }
            }
        }
    }

    /// Whether the token endpoint is backing off for `key`: calls meanwhile get the token
    /// while it works, else 503, and never an extra token call each.
    fn backing_off(&self, key: InstallKey) -> bool {
        let now = self.inner.clock.unix_ms();
        let backoff = self.inner.backoff.lock().unwrap_or_else(|e| e.into_inner());
        backoff.get(&key).is_some_and(|&(until, _)| until > now)
    }

    /// Full jitter: a random wait up to `BASE × 2^failures` (capped), and never less than
    /// what `Retry-After` asked.
    fn back_off(&self, key: InstallKey, retry_after: Option<Duration>) {
        let mut backoff = self.inner.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let failures = backoff.get(&key).map_or(0, |&(_, n)| n) + 1;
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << failures.min(16))
            .min(BACKOFF_CAP);
        let jittered = rand::rng().random_range(0..=ceiling.as_millis() as u64);
        let wait = Duration::from_millis(jittered).max(retry_after.unwrap_or_default());
        let until = self.inner.clock.unix_ms() + wait.as_millis() as i64;
        backoff.insert(key, (until, failures));
    }
}
