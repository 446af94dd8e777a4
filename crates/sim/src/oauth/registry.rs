//! The state of the simulated OAuth server: authorization codes, installs and their refresh
//! tokens, issued access tokens, the token endpoint's window, and its counters.
//!
//! Every decision a token call needs is taken under one lock at its arrival, so two
//! refreshes of one refresh token are ordered exactly: under rotation the first redeems it
//! and the second finds it spent, as on a real server.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

use super::answers::{user_id, AccessLookup, OauthGrant, Refusal};
use super::settings::{OauthSettings, SimApp};
use crate::stats::{InstallStats, OauthStats};

/// An issued access token is forgotten this long after it expired: long enough for a test
/// to see its 401, short enough that a long run does not keep every token.
const EXPIRED_ACCESS_MEMORY: Duration = Duration::from_secs(3600);

/// (app id, hub id): one install.
type InstallKey = (u64, u64);

pub(crate) struct Registry {
    apps: Vec<SimApp>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    settings: OauthSettings,
    codes: HashMap<String, Code>,
    installs: HashMap<InstallKey, Install>,
    /// Every refresh token ever issued, spent ones too, so a stale redeemer is attributed.
    refresh_tokens: HashMap<String, RefreshToken>,
    access_tokens: HashMap<String, AccessToken>,
    /// Arrivals at the token endpoint within its rolling window.
    window: VecDeque<Instant>,
    stats: OauthStats,
}

struct Code {
    app_id: u64,
    hub_id: u64,
    redirect_uri: String,
    scopes: Vec<String>,
    expires_at: Instant,
}

struct Install {
    scopes: Vec<String>,
    active: bool,
    current_refresh: String,
    in_flight: u64,
    stats: InstallStats,
}

struct RefreshToken {
    install: InstallKey,
    valid: bool,
}

#[derive(Clone)]
struct AccessToken {
    install: InstallKey,
    scopes: Vec<String>,
    expires_at: Instant,
}

/// A refresh in flight at the token endpoint; dropping it ends it.
pub(crate) struct InFlight<'a> {
    registry: &'a Registry,
    install: InstallKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(install) = inner.installs.get_mut(&self.install) {
            install.in_flight = install.in_flight.saturating_sub(1);
        }
    }
}

/// A token call's fields, decoded from its form body.
#[derive(Debug, Default)]
pub(crate) struct TokenRequest {
    pub(crate) grant_type: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) code: String,
    pub(crate) redirect_uri: String,
    pub(crate) refresh_token: String,
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}{}", hex::encode(bytes))
}

const BAD_REFRESH: Refusal = Refusal::Grant {
    error: "invalid_grant",
    status: "BAD_REFRESH_TOKEN",
    description: "refresh token is invalid, expired or revoked",
};

impl Registry {
    pub(crate) fn new(apps: Vec<SimApp>, settings: OauthSettings) -> Registry {
        Registry {
            apps,
            inner: Mutex::new(Inner {
                settings,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn settings(&self) -> OauthSettings {
        self.lock().settings.clone()
    }

    pub(crate) fn set_settings(&self, settings: OauthSettings) {
        self.lock().settings = settings;
    }

    pub(crate) fn patch_settings(
        &self,
        patch: &serde_json::Value,
    ) -> anyhow::Result<OauthSettings> {
        let mut inner = self.lock();
        let next = inner.settings.patched(patch)?;
        inner.settings = next.clone();
        Ok(next)
    }

    /// The app these client credentials name, or the refusal HubSpot gives.
    pub(crate) fn client(&self, client_id: &str, secret: &str) -> Result<&SimApp, Refusal> {
        let app = self
            .apps
            .iter()
            .find(|a| a.client_id == client_id)
            .ok_or(Refusal::Grant {
                error: "invalid_client",
                status: "BAD_CLIENT_ID",
                description: "client id is invalid",
            })?;
        if app.client_secret != secret {
            return Err(Refusal::Grant {
                error: "invalid_client",
                status: "BAD_CLIENT_SECRET",
                description: "client secret is invalid",
            });
        }
        Ok(app)
    }

    /// The consent screen, accepted: a code for `hub_id`, or why there is no redirect.
    pub(crate) fn authorize(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scopes: Vec<String>,
        hub_id: u64,
        now: Instant,
    ) -> Result<String, &'static str> {
        let app = self
            .apps
            .iter()
            .find(|a| a.client_id == client_id)
            .ok_or("unknown client_id")?;
        if app.redirect_uri != redirect_uri {
            return Err("redirect_uri does not match the app's");
        }
        let mut inner = self.lock();
        inner.stats.authorizations += 1;
        let lifetime = Duration::from_secs(inner.settings.code_lifetime_s);
        inner.codes.retain(|_, c| c.expires_at > now);
        let code = random_token("sim-code-");
        inner.codes.insert(
            code.clone(),
            Code {
                app_id: app.app_id,
                hub_id,
                redirect_uri: redirect_uri.to_string(),
                scopes,
                expires_at: now + lifetime,
            },
        );
        Ok(code)
    }

    /// Installs `app_id` in `hub_id` as a redeemed code would.
    pub(crate) fn install(
        &self,
        app_id: u64,
        hub_id: u64,
        scopes: Vec<String>,
        now: Instant,
    ) -> Result<OauthGrant, String> {
        let app = self
            .apps
            .iter()
            .find(|a| a.app_id == app_id)
            .ok_or_else(|| format!("no app {app_id} in [[apps]]"))?;
        let scopes = if scopes.is_empty() {
            app.scopes.clone()
        } else {
            scopes
        };
        let mut inner = self.lock();
        Ok(inner.grant_install((app_id, hub_id), scopes, now))
    }

    /// A token endpoint call, decided at arrival: the grant, or the refusal, and for a
    /// refresh the marker that keeps it in flight until the answer leaves.
    pub(crate) fn token(
        &self,
        req: &TokenRequest,
        now: Instant,
    ) -> (Result<OauthGrant, Refusal>, Option<InFlight<'_>>) {
        let mut inner = self.lock();
        let calls = &mut inner.stats.token_calls;
        match req.grant_type.as_str() {
            "authorization_code" => calls.authorization_code += 1,
            "refresh_token" => calls.refresh_token += 1,
            _ => calls.other += 1,
        }
        if let Err(refusal) = inner.admit(now) {
            inner.count_refusal(&refusal);
            return (Err(refusal), None);
        }
        let client = self.client(&req.client_id, &req.client_secret);
        let (result, in_flight) = match (req.grant_type.as_str(), client) {
            (_, Err(refusal)) => (Err(refusal), None),
            ("authorization_code", Ok(app)) => (inner.redeem_code(app, req, now), None),
            ("refresh_token", Ok(app)) => match inner.refresh(app, &req.refresh_token, now) {
                (result, Some(install)) => (
                    result,
                    Some(InFlight {
                        registry: self,
                        install,
                    }),
                ),
                (result, None) => (result, None),
            },
            _ => (
                Err(Refusal::Grant {
                    error: "unsupported_grant_type",
                    status: "BAD_GRANT_TYPE",
                    description: "grant_type must be authorization_code or refresh_token",
                }),
                None,
            ),
        };
        if let Err(refusal) = &result {
            inner.count_refusal(refusal);
        }
        (result, in_flight)
    }

    /// What an API call's bearer token is, if this server issued it.
    pub(crate) fn access(&self, token: &str, now: Instant) -> AccessLookup {
        let inner = self.lock();
        match inner.access_tokens.get(token) {
            None => AccessLookup::Unknown,
            Some(t) if t.expires_at <= now => AccessLookup::Expired {
                ago: now - t.expires_at,
            },
            Some(t) => AccessLookup::Valid {
                app_id: t.install.0,
                hub_id: t.install.1,
                scopes: t.scopes.clone(),
                expires_in: t.expires_at - now,
            },
        }
    }

    /// What dated introspection says of a refresh token: its (app, hub, scopes) while valid.
    pub(crate) fn refresh_token_owner(&self, token: &str) -> Option<(u64, u64, Vec<String>)> {
        let inner = self.lock();
        let t = inner.refresh_tokens.get(token).filter(|t| t.valid)?;
        let install = inner.installs.get(&t.install).filter(|i| i.active)?;
        Some((t.install.0, t.install.1, install.scopes.clone()))
    }

    pub(crate) fn count_introspection(&self) {
        self.lock().stats.introspections += 1;
    }

    /// Revokes the install `token` (a refresh token of `app`) belongs to; unknown tokens
    /// are no error (RFC 7009).
    pub(crate) fn revoke(&self, app: &SimApp, token: &str) {
        let mut inner = self.lock();
        inner.stats.revocations += 1;
        let Some(key) = inner.refresh_tokens.get(token).map(|t| t.install) else {
            return;
        };
        if key.0 != app.app_id {
            return;
        }
        for t in inner.refresh_tokens.values_mut() {
            if t.install == key {
                t.valid = false;
            }
        }
        if let Some(install) = inner.installs.get_mut(&key) {
            install.active = false;
        }
    }

    pub(crate) fn stats(&self) -> OauthStats {
        let inner = self.lock();
        let mut stats = inner.stats.clone();
        stats.installs = inner
            .installs
            .values()
            .map(|i| InstallStats {
                active: i.active,
                ..i.stats.clone()
            })
            .collect();
        stats.installs.sort_by_key(|i| (i.app_id, i.hub_id));
        stats
    }

    /// Clears the counters; installs and tokens stay.
    pub(crate) fn reset_counters(&self) {
        let mut inner = self.lock();
        inner.stats = OauthStats::default();
        for (key, install) in inner.installs.iter_mut() {
            install.stats = InstallStats::new(*key);
        }
    }
}

impl Inner {
    /// The token endpoint's own rate limit and injected failures, in that order.
    fn admit(&mut self, now: Instant) -> Result<(), Refusal> {
        let settings = &self.settings;
        if settings.token_rate_limit > 0 {
            let window = Duration::from_millis(settings.token_rate_window_ms);
            while self.window.front().is_some_and(|t| *t + window <= now) {
                self.window.pop_front();
            }
            if self.window.len() >= settings.token_rate_limit as usize {
                let oldest = self.window.front().copied().unwrap_or(now);
                let wait = (oldest + window).saturating_duration_since(now);
                return Err(Refusal::RateLimited {
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
            self.window.push_back(now);
        }
        if self.settings.token_fail_next > 0 {
            self.settings.token_fail_next -= 1;
            return Err(Refusal::Injected(503));
        }
        let rate = self.settings.token_error_rate;
        if rate > 0.0 && rand::rng().random::<f64>() < rate {
            const CODES: [u16; 4] = [500, 502, 503, 504];
            return Err(Refusal::Injected(
                CODES[rand::rng().random_range(0..CODES.len())],
            ));
        }
        Ok(())
    }

    fn count_refusal(&mut self, refusal: &Refusal) {
        let errors = &mut self.stats.token_errors;
        match refusal {
            Refusal::Grant { error, .. } => match *error {
                "invalid_grant" => errors.invalid_grant += 1,
                "invalid_client" => errors.invalid_client += 1,
                _ => errors.invalid_request += 1,
            },
            Refusal::RateLimited { .. } => errors.rate_limited += 1,
            Refusal::Injected(_) => errors.injected += 1,
        }
    }

    fn redeem_code(
        &mut self,
        app: &SimApp,
        req: &TokenRequest,
        now: Instant,
    ) -> Result<OauthGrant, Refusal> {
        let bad_code = Refusal::Grant {
            error: "invalid_grant",
            status: "BAD_AUTH_CODE",
            description: "authorization code is invalid, expired or already used",
        };
        let code = self.codes.get(&req.code).ok_or(bad_code)?;
        if code.app_id != app.app_id || code.expires_at <= now {
            return Err(bad_code);
        }
        if code.redirect_uri != req.redirect_uri {
            return Err(Refusal::Grant {
                error: "invalid_grant",
                status: "BAD_REDIRECT_URI",
                description: "redirect_uri does not match the one the code was issued for",
            });
        }
        let code = self.codes.remove(&req.code).ok_or(bad_code)?;
        Ok(self.grant_install((code.app_id, code.hub_id), code.scopes, now))
    }

    /// Decides a refresh; `Some(install)` when the token was one of an install's, so the
    /// call counts as that install's refresh in flight.
    fn refresh(
        &mut self,
        app: &SimApp,
        token: &str,
        now: Instant,
    ) -> (Result<OauthGrant, Refusal>, Option<InstallKey>) {
        let Some(entry) = self.refresh_tokens.get(token) else {
            return (Err(BAD_REFRESH), None);
        };
        let (key, valid) = (entry.install, entry.valid);
        if key.0 != app.app_id {
            return (Err(BAD_REFRESH), None);
        }
        let rotate = self.settings.rotate_refresh_tokens;
        let Some(install) = self.installs.get_mut(&key) else {
            return (Err(BAD_REFRESH), None);
        };
        install.stats.refresh_attempts += 1;
        install.in_flight += 1;
        install.stats.max_concurrent_refreshes = install
            .stats
            .max_concurrent_refreshes
            .max(install.in_flight);
        self.stats.max_concurrent_refreshes =
            self.stats.max_concurrent_refreshes.max(install.in_flight);
        if !valid || !install.active {
            install.stats.stale_refreshes += 1;
            return (Err(BAD_REFRESH), Some(key));
        }
        install.stats.refreshes += 1;
        if rotate {
            let next = random_token("na1-sim-rt-");
            install.current_refresh = next.clone();
            if let Some(old) = self.refresh_tokens.get_mut(token) {
                old.valid = false;
            }
            self.refresh_tokens.insert(
                next,
                RefreshToken {
                    install: key,
                    valid: true,
                },
            );
        }
        let lifetime = self.settings.access_token_lifetime_s;
        let grant = issue_access(&mut self.access_tokens, install, key, lifetime, now);
        (Ok(grant), Some(key))
    }

    /// The grant for (app, hub): the install is created or made active again, and keeps its
    /// refresh token while active.
    fn grant_install(&mut self, key: InstallKey, scopes: Vec<String>, now: Instant) -> OauthGrant {
        let lifetime = self.settings.access_token_lifetime_s;
        let install = self.installs.entry(key).or_insert_with(|| Install {
            scopes: scopes.clone(),
            active: false,
            current_refresh: String::new(),
            in_flight: 0,
            stats: InstallStats::new(key),
        });
        install.scopes = scopes;
        if !install.active {
            install.active = true;
            install.current_refresh = random_token("na1-sim-rt-");
            self.refresh_tokens.insert(
                install.current_refresh.clone(),
                RefreshToken {
                    install: key,
                    valid: true,
                },
            );
        }
        issue_access(&mut self.access_tokens, install, key, lifetime, now)
    }
}

/// A new access token of `install` (key `key`), remembered in `access_tokens`.
fn issue_access(
    access_tokens: &mut HashMap<String, AccessToken>,
    install: &mut Install,
    key: InstallKey,
    lifetime_s: u64,
    now: Instant,
) -> OauthGrant {
    access_tokens.retain(|_, t| t.expires_at + EXPIRED_ACCESS_MEMORY > now);
    install.stats.access_tokens_issued += 1;
    let access_token = random_token("sim-at-");
    access_tokens.insert(
        access_token.clone(),
        AccessToken {
            install: key,
            scopes: install.scopes.clone(),
            expires_at: now + Duration::from_secs(lifetime_s),
        },
    );
    OauthGrant {
        access_token,
        refresh_token: install.current_refresh.clone(),
        expires_in: lifetime_s,
        token_type: "bearer".into(),
        token_use: "access_token".into(),
        hub_id: key.1,
        app_id: key.0,
        scopes: install.scopes.clone(),
        user_id: user_id(key.1),
    }
}
