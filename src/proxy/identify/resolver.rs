//! Owns the mapping from a call's credential to its quota owner (app, portal): static
//! `[[credentials]]`, paced introspection against HubSpot, and the cache of what it said.
//!
//! HubSpot's burst budget belongs to (app, portal) and no request header names either, so the
//! gateway has to ask HubSpot who a token belongs to. That question must cost HubSpot almost
//! nothing: every answer is cached (OAuth tokens until they expire, private-app tokens for a
//! configurable TTL, rejections and failures briefly; see `cache` for the bound), concurrent
//! first calls with one token share one lookup, and lookups themselves are paced.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::cache::{IdentityCache, Settled, Verdict};
use crate::config::{
    credential_digest, IdentityConfig, Problems, StaticCredential, UpstreamTarget,
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
    timeout: Duration,
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
            timeout: Duration::from_millis(config.introspection_timeout_ms),
        })
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// What keys an unidentified credential: the first 8 bytes of its SHA-256, big-endian.
fn credential_hash(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl IdentityResolver {
    pub fn new(
        config: &IdentityConfig,
        credentials: &[StaticCredential],
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

    /// The owner of a call presenting `credential`, or `Invalid` when HubSpot rejected it.
    pub async fn resolve(&self, credential: &Credential) -> Resolution {
        let (resolution, result) = match credential {
            Credential::None => (Resolution::Owner(Owner::Anonymous), "anonymous"),
            Credential::HapiKey(key) => (
                Resolution::Owner(Owner::Unidentified {
                    credential_hash: credential_hash(&sha256(key)),
                }),
                "hapikey",
            ),
            Credential::Bearer(token) => self.inner.resolve_bearer(token).await,
        };
        self.inner.metrics.count_identity_lookup(result);
        resolution
    }

    /// Tokens currently remembered (settled or in flight).
    pub fn cached_entries(&self) -> usize {
        self.inner.cache.len()
    }
}

impl Inner {
    async fn resolve_bearer(&self, token: &str) -> (Resolution, &'static str) {
        let digest = sha256(token);
        let unidentified = Owner::Unidentified {
            credential_hash: credential_hash(&digest),
        };
        let max_entries = {
            let settings = self.settings.load();
            if let Some(owner) = settings.statics.get(&digest) {
                return (Resolution::Owner(*owner), "static");
            }
            settings.max_entries
        };
        if token.is_empty() {
            return (Resolution::Invalid, "invalid");
        }
        let (settled, introspected) = match self.cache.slot(digest, max_entries) {
            Ok(settled) => (settled, false),
            Err(slot) => {
                let mut ran = false;
                let settled = match &slot {
                    // The guard that found or created the slot is gone by now; only the Arc is
                    // held across the await.
                    Some(slot) => {
                        *slot
                            .get_or_init(|| {
                                ran = true;
                                self.lookup(token, &digest)
                            })
                            .await
                    }
                    None => {
                        ran = true;
                        self.lookup(token, &digest).await
                    }
                };
                (settled, ran)
            }
        };
        match settled.verdict {
            Verdict::Known(owner) if introspected => (Resolution::Owner(owner), "introspected"),
            Verdict::Known(owner) => (Resolution::Owner(owner), "cached"),
            Verdict::Invalid => (Resolution::Invalid, "invalid"),
            Verdict::Unreachable => (Resolution::Owner(unidentified), "unreachable"),
        }
    }

    /// Asks HubSpot who owns `token`, paced and within the timeout, and says how long the
    /// answer holds.
    async fn lookup(&self, token: &str, digest: &[u8; 32]) -> Settled {
        let started = Instant::now();
        // Owned, not a guard: held across the lookup's awaits.
        let settings = self.settings.load_full();
        let outcome = match tokio::time::timeout(settings.timeout, async {
            paced(&settings.pace).await;
            self.introspect(token, settings.private_app_ttl).await
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
            Err(why) => {
                tracing::warn!(
                    credential = %short_digest(digest),
                    error = %why,
                    retry_in_ms = settings.unreachable_ttl.as_millis() as u64,
                    "introspection failed; keying the calls by a hash of the credential"
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

    async fn introspect(&self, token: &str, private_app_ttl: Duration) -> Result<Answer, String> {
        let request = introspect::request(token, &self.target)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        introspect::read_answer(response, TokenKind::of(token), private_app_ttl).await
    }
}

/// Waits for the lookup pacer on tokio's timer, so the surrounding timeout can cut the wait.
async fn paced(pace: &DefaultDirectRateLimiter) {
    loop {
        match pace.check() {
            Ok(()) => return,
            Err(not_until) => {
                let wait = not_until.wait_time_from(pace.clock().now());
                tokio::time::sleep(wait).await;
            }
        }
    }
}
