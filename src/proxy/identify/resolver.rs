//! Owns the mapping from a call's credential to its quota owner (app, portal): static
//! `[[credentials]]`, paced introspection against HubSpot, and the cache of what it said.
//!
//! HubSpot's burst budget belongs to (app, portal) and no request header names either, so the
//! gateway has to ask HubSpot who a token belongs to. That question must cost HubSpot almost
//! nothing: every answer is cached (OAuth tokens until they expire, private-app tokens for a
//! configurable TTL, rejections and failures briefly; see `cache` for the bounds), concurrent
//! first calls with one token share one lookup, and lookups themselves are paced, callers
//! taking turns (`turns`).
//!
//! A credential HubSpot has not accepted yet is *unproven*: a hapikey before its first 2xx,
//! a token whose lookup failed or found no turn. Such calls share one owner,
//! [`Owner::UNPROVEN`], and so one small budget and one lane, whatever the number of
//! distinct credentials: junk costs a bounded amount of memory and of HubSpot's patience. A
//! hapikey is proven by its first 2xx (then it has an owner of its own, kept in a bounded
//! table); a token by its lookup, asked again as soon as HubSpot accepts a call with it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::apps::{Apps, Found};
use super::cache::{BoundedTable, IdentityCache, Settled, Verdict};
use super::turns::{TurnLine, Turns};
use crate::config::{
    credential_digest, AppConfig, IdentityConfig, Problems, StaticCredential, UpstreamTarget,
};
use crate::hubspot::introspect::{self, Answer, MAX_OAUTH_TTL};
use crate::hubspot::{Credential, Owner, TokenKind};
use crate::ops::metrics::Metrics;
use crate::ops::redact::short_digest;
use crate::proxy::upstream::UpstreamClient;

/// What resolving a credential concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Owner(Owner),
    /// HubSpot says the token is not valid.
    Invalid,
}

/// Resolves credentials to owners; clones share one cache.
#[derive(Debug, Clone)]
pub struct IdentityResolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `[identity]` and `[[credentials]]`, swapped whole by a reload.
    settings: arc_swap::ArcSwap<Settings>,
    cache: IdentityCache,
    /// Hapikeys HubSpot accepted, until when that holds.
    proven: BoundedTable<Instant>,
    turns: Arc<Turns>,
    /// `[[apps]]`: fixed at start-up, so their secrets are read once.
    apps: Apps,
    client: UpstreamClient,
    target: UpstreamTarget,
    metrics: Metrics,
}

/// What the config says about resolving: known tokens, cache TTLs and bounds, the pace of
/// lookups. A reload replaces it whole; answers already cached keep their expiry.
#[derive(Debug)]
struct Settings {
    /// Keyed by SHA-256 digests: foldhash, as for the cache.
    statics: HashMap<[u8; 32], Owner, foldhash::fast::RandomState>,
    /// Shared, so a reload that keeps the rate keeps the limiter and its count.
    pace: Arc<DefaultDirectRateLimiter>,
    per_second: NonZeroU32,
    private_app_ttl: Duration,
    negative_ttl: Duration,
    unreachable_ttl: Duration,
    max_entries: usize,
    max_refused_entries: usize,
    max_proven_hapikeys: usize,
    timeout: Duration,
    /// Lookups one caller may have waiting for a turn: what the pace serves in `timeout`.
    line_limit: usize,
    /// Whether OAuth tokens no app's dated introspection knows are asked about on v1.
    v1_introspection: bool,
}

impl Settings {
    /// Checks and builds the settings; `previous` lends its limiter when the rate is
    /// unchanged.
    fn new(
        config: &IdentityConfig,
        credentials: &[StaticCredential],
        previous: Option<&Settings>,
    ) -> anyhow::Result<Settings> {
        let mut problems = Problems::default();
        config.check(&mut problems);
        crate::config::check_credentials(credentials, &mut problems);
        if !problems.is_empty() {
            anyhow::bail!("identity configuration: {}", problems.summary());
        }
        let mut statics = HashMap::default();
        for c in credentials {
            let key = credential_digest(c)
                .map_err(|(field, message)| anyhow::anyhow!("{field}: {message}"))
                .context("[[credentials]]")?;
            statics.insert(
                key,
                Owner::App {
                    app_id: c.app_id,
                    portal_id: c.portal_id,
                },
            );
        }
        let per_second = NonZeroU32::new(config.introspection_per_second)
            .context("identity.introspection_per_second must be greater than 0")?;
        let pace = match previous {
            Some(previous) if previous.per_second == per_second => previous.pace.clone(),
            _ => Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
        };
        Ok(Settings {
            statics,
            pace,
            per_second,
            private_app_ttl: Duration::from_millis(config.private_app_ttl_ms),
            negative_ttl: Duration::from_millis(config.negative_ttl_ms),
            unreachable_ttl: Duration::from_millis(config.unreachable_ttl_ms),
            max_entries: config.max_entries,
            max_refused_entries: config.max_refused_entries,
            max_proven_hapikeys: config.max_proven_hapikeys,
            timeout: Duration::from_millis(config.introspection_timeout_ms),
            line_limit: (u64::from(per_second.get()) * config.introspection_timeout_ms)
                .div_ceil(1000)
                .max(1) as usize,
            v1_introspection: config.v1_introspection,
        })
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A call's credential with its SHA-256 (`None` without a credential), taken once per
/// call: the lookup and the note of HubSpot's answer both key by it.
#[derive(Debug)]
pub struct Presented<'a> {
    credential: &'a Credential,
    digest: Option<[u8; 32]>,
}

impl<'a> Presented<'a> {
    pub fn new(credential: &'a Credential) -> Presented<'a> {
        let digest = match credential {
            Credential::None => None,
            Credential::Bearer(secret) | Credential::HapiKey(secret) => Some(sha256(secret)),
        };
        Presented { credential, digest }
    }
}

/// What keys an unidentified credential: the first 8 bytes of its SHA-256, big-endian.
fn credential_hash(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl IdentityResolver {
    /// A resolver without `[[apps]]`: OAuth tokens are looked up on v1 only.
    pub fn new(
        config: &IdentityConfig,
        credentials: &[StaticCredential],
        client: UpstreamClient,
        target: UpstreamTarget,
        metrics: Metrics,
    ) -> anyhow::Result<IdentityResolver> {
        Self::with_apps(config, credentials, &[], client, target, metrics)
    }

    /// A resolver that looks OAuth tokens up with the dated introspection of `apps`, whose
    /// secrets are read now (an unreadable one is an error naming its entry).
    pub fn with_apps(
        config: &IdentityConfig,
        credentials: &[StaticCredential],
        apps: &[AppConfig],
        client: UpstreamClient,
        target: UpstreamTarget,
        metrics: Metrics,
    ) -> anyhow::Result<IdentityResolver> {
        Ok(IdentityResolver {
            inner: Arc::new(Inner {
                settings: arc_swap::ArcSwap::from_pointee(Settings::new(
                    config,
                    credentials,
                    None,
                )?),
                cache: IdentityCache::default(),
                proven: BoundedTable::default(),
                turns: Arc::default(),
                apps: Apps::new(apps)?,
                client,
                target,
                metrics,
            }),
        })
    }

    /// Takes on reloaded `[identity]` and `[[credentials]]`: a token added is resolved
    /// without asking HubSpot from the next call on, a token removed is looked up again on
    /// its next call, and new TTLs apply to answers cached from now on.
    pub fn reconfigure(
        &self,
        config: &IdentityConfig,
        credentials: &[StaticCredential],
    ) -> anyhow::Result<()> {
        let next = Settings::new(config, credentials, Some(&self.inner.settings.load()))?;
        self.inner.settings.store(Arc::new(next));
        Ok(())
    }

    /// The owner of a call presenting `credential`, or `Invalid` when HubSpot rejected it,
    /// for a caller without a name (its lookups share one line).
    pub async fn resolve(&self, credential: &Credential) -> Resolution {
        self.resolve_for(
            credential,
            TurnLine {
                name: "",
                claimed_from: None,
            },
        )
        .await
    }

    /// The owner of a call presenting `credential`, or `Invalid` when HubSpot rejected it;
    /// a lookup waits in `line`.
    pub async fn resolve_for(&self, credential: &Credential, line: TurnLine<'_>) -> Resolution {
        self.resolve_digested(&Presented::new(credential), line)
            .await
    }

    /// `resolve_for` with the credential's digest already taken.
    pub async fn resolve_digested(
        &self,
        presented: &Presented<'_>,
        line: TurnLine<'_>,
    ) -> Resolution {
        let (resolution, result) = match (presented.credential, &presented.digest) {
            (Credential::None, _) | (_, None) => (Resolution::Owner(Owner::Anonymous), "anonymous"),
            (Credential::HapiKey(_), Some(digest)) => match self.inner.proven.get(digest) {
                Some(until) if until > Instant::now() => (
                    Resolution::Owner(Owner::Unidentified {
                        credential_hash: credential_hash(digest),
                    }),
                    "hapikey",
                ),
                _ => (Resolution::Owner(Owner::UNPROVEN), "unproven"),
            },
            (Credential::Bearer(token), Some(digest)) => {
                self.inner.resolve_bearer(token, digest, line).await
            }
        };
        self.inner.metrics.count_identity_lookup(result);
        resolution
    }

    /// Takes note of HubSpot's answer to a call with `credential`: a 2xx proves a hapikey
    /// (it gets an owner of its own) and has a token whose lookup failed looked up again; a
    /// 401 or 403 unproves a hapikey.
    pub fn observe_answer(&self, credential: &Credential, status: http::StatusCode) {
        self.observe_digested(&Presented::new(credential), status);
    }

    /// `observe_answer` with the credential's digest already taken.
    pub fn observe_digested(&self, presented: &Presented<'_>, status: http::StatusCode) {
        let accepted = status.is_success();
        let refused = matches!(status.as_u16(), 401 | 403);
        let Some(digest) = presented.digest else {
            return;
        };
        match presented.credential {
            Credential::HapiKey(_) if accepted => {
                let settings = self.inner.settings.load();
                let until = Instant::now()
                    .checked_add(settings.private_app_ttl)
                    .unwrap_or_else(|| Instant::now() + MAX_OAUTH_TTL);
                self.inner
                    .proven
                    .insert(digest, until, settings.max_proven_hapikeys);
            }
            Credential::HapiKey(_) if refused => {
                self.inner.proven.remove_if(&digest, |_| true);
            }
            Credential::Bearer(_) if accepted => {
                self.inner.cache.forget_failure(&digest);
            }
            _ => {}
        }
    }

    /// Owners remembered from introspection.
    pub fn cached_entries(&self) -> usize {
        self.inner.cache.known_len()
    }

    /// Refusals and failed lookups remembered.
    pub fn refused_entries(&self) -> usize {
        self.inner.cache.refused_len()
    }

    /// Hapikeys remembered as accepted by HubSpot.
    pub fn proven_hapikeys(&self) -> usize {
        self.inner.proven.len()
    }
}

impl Inner {
    async fn resolve_bearer(
        &self,
        token: &str,
        digest: &[u8; 32],
        line: TurnLine<'_>,
    ) -> (Resolution, &'static str) {
        let digest = *digest;
        let bounds = {
            let settings = self.settings.load();
            if let Some(owner) = settings.statics.get(&digest) {
                return (Resolution::Owner(*owner), "static");
            }
            (settings.max_entries, settings.max_refused_entries)
        };
        if token.is_empty() {
            return (Resolution::Invalid, "invalid");
        }
        let (settled, introspected) = match self.cache.fresh(&digest, Instant::now()) {
            Some(settled) => (settled, false),
            None => {
                let joined = self.cache.pending(digest);
                let mut ran = false;
                let settled = *joined
                    .slot
                    .get_or_init(|| async {
                        // A lookup that settled between the check above and joining.
                        if let Some(settled) = self.cache.fresh(&digest, Instant::now()) {
                            return settled;
                        }
                        ran = true;
                        let settled = self.lookup(token, &digest, line).await;
                        self.cache.settle(digest, settled, bounds);
                        settled
                    })
                    .await;
                (settled, ran)
            }
        };
        match settled.verdict {
            Verdict::Known(owner) if introspected => (Resolution::Owner(owner), "introspected"),
            Verdict::Known(owner) => (Resolution::Owner(owner), "cached"),
            Verdict::Invalid => (Resolution::Invalid, "invalid"),
            Verdict::Unreachable => (Resolution::Owner(Owner::UNPROVEN), "unreachable"),
        }
    }

    /// Asks HubSpot who owns `token`, paced and within the timeout, and says how long the
    /// answer holds.
    async fn lookup(&self, token: &str, digest: &[u8; 32], line: TurnLine<'_>) -> Settled {
        let started = Instant::now();
        // Owned, not a guard: held across the lookup's awaits.
        let settings = self.settings.load_full();
        let Some(turn) = self.turns.join(line, settings.line_limit, &settings.pace) else {
            tracing::debug!(
                credential = %short_digest(digest),
                line_limit = settings.line_limit,
                "caller's introspection line is full; the call goes on unproven"
            );
            // Expired at once, so it is not remembered: the token is asked about next time.
            return Settled {
                verdict: Verdict::Unreachable,
                expires_at: started,
            };
        };
        let outcome = match tokio::time::timeout(settings.timeout, async {
            turn.await
                .map_err(|_| "no turn to ask HubSpot (shutting down)".to_string())?;
            self.introspect(token, &settings).await
        })
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
        };
        let (verdict, ttl) = match outcome {
            Ok(Answer::Owner { owner, ttl }) => {
                tracing::debug!(credential = %short_digest(digest), owner = %owner.label(), "introspected");
                (Verdict::Known(owner), ttl)
            }
            Ok(Answer::Invalid(status)) => {
                tracing::debug!(credential = %short_digest(digest), %status, "HubSpot rejected the token");
                (Verdict::Invalid, settings.negative_ttl)
            }
            Ok(Answer::Unclaimed) => {
                tracing::info!(
                    credential = %short_digest(digest),
                    "no [[apps]] entry's introspection knows this OAuth token and identity.v1_introspection is off; its calls go on without an owner (add its app to [[apps]])"
                );
                (Verdict::Invalid, settings.negative_ttl)
            }
            Err(why) => {
                tracing::warn!(
                    credential = %short_digest(digest),
                    error = %why,
                    retry_in_ms = settings.unreachable_ttl.as_millis() as u64,
                    "introspection failed; the token's calls go on unproven until HubSpot accepts one"
                );
                (Verdict::Unreachable, settings.unreachable_ttl)
            }
        };
        Settled {
            verdict,
            // TTLs come from config and from HubSpot; a huge one must not overflow the clock.
            expires_at: started
                .checked_add(ttl)
                .unwrap_or_else(|| started + MAX_OAUTH_TTL),
        }
    }

    /// Private-app tokens: their own lookup. OAuth tokens: the apps' dated introspection,
    /// then, while `v1_introspection` is on, the v1 lookup.
    async fn introspect(&self, token: &str, settings: &Settings) -> Result<Answer, String> {
        let private_app_ttl = settings.private_app_ttl;
        if TokenKind::of(token) == TokenKind::OAuth {
            if !self.apps.is_empty() {
                let found = self
                    .apps
                    .find_owner(token, &self.client, &self.target, &settings.pace)
                    .await;
                match found {
                    Ok(Found::Owner { owner, ttl }) => return Ok(Answer::Owner { owner, ttl }),
                    Ok(Found::NoApp) => {}
                    Err(why) if !settings.v1_introspection => return Err(why),
                    Err(why) => {
                        tracing::debug!(error = %why, "dated introspection failed; trying v1");
                    }
                }
            }
            if !settings.v1_introspection {
                return Ok(Answer::Unclaimed);
            }
        }
        let request = introspect::request(token, &self.target)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        introspect::read_answer(response, TokenKind::of(token), private_app_ttl).await
    }
}
