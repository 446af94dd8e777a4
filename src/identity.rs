//! Owns the mapping from a call's credential to its quota owner (app, portal): static
//! `[[credentials]]`, introspection against HubSpot, and the bounded, single-flight cache of
//! what introspection said.
//!
//! HubSpot's burst budget belongs to (app, portal) and no request header names either, so the
//! gateway has to ask HubSpot who a token belongs to. That question must cost HubSpot almost
//! nothing: every answer is cached (OAuth tokens until they expire, private-app tokens for a
//! configurable TTL, rejections and failures briefly), concurrent first calls with one token
//! share one lookup, and lookups themselves are paced.
//!
//! # Cache bound
//! At most `max_entries` tokens are remembered, keyed by the token's SHA-256 (raw tokens are
//! never kept as keys). When a new token finds the cache full, expired entries are dropped
//! first; if that frees nothing, arbitrary settled entries are dropped (DashMap's iteration
//! order, which follows the key hash and so is unrelated to age or use) until a tenth of the
//! capacity is free, so the O(n) sweep runs at most once per `max_entries / 10` new tokens.
//! Lookups still in flight are never dropped (that would break single-flight), except ones whose
//! callers have all gone away; if the cache is full of lookups in flight, the new token is
//! looked up without being cached.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Limited};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::body::{empty, full};
use crate::config::UpstreamTarget;
use crate::metrics::Metrics;
use crate::redact::short_digest;
use crate::upstream::UpstreamClient;

/// What a call presents as its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
    HapiKey(String),
    None,
}

/// Reads `Authorization: Bearer <token>` (scheme case-insensitive), else a `hapikey` query
/// parameter, else None.
pub fn credential_of(headers: &HeaderMap, uri: &Uri) -> Credential {
    for value in headers.get_all(header::AUTHORIZATION) {
        // Lossy, not rejected: a token with non-UTF-8 bytes is HubSpot's to refuse, and the
        // caller must still get HubSpot's 401 rather than one of ours.
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = value.trim();
        let Some((scheme, token)) = value.split_once([' ', '\t']) else {
            continue;
        };
        let token = token.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
            return Credential::Bearer(token.to_string());
        }
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(key) == "hapikey" {
                let value = percent_decode(value);
                if !value.is_empty() {
                    return Credential::HapiKey(value);
                }
            }
        }
    }
    Credential::None
}

/// Decodes `application/x-www-form-urlencoded` text; malformed escapes stay as they are,
/// because a query is the caller's and must never make resolution fail.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which introspection endpoint can name a bearer token's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `pat-…`: a private app's access token, looked up with
    /// `POST /oauth/v2/private-apps/get/access-token-info`.
    PrivateApp,
    /// Anything else: an OAuth access token, looked up with
    /// `GET /oauth/v1/access-tokens/{token}`.
    OAuth,
}

impl TokenKind {
    pub fn of(token: &str) -> TokenKind {
        if token.starts_with("pat-") {
            TokenKind::PrivateApp
        } else {
            TokenKind::OAuth
        }
    }
}

/// The path that asks HubSpot about an OAuth token, the token percent-encoded as one
/// segment whatever bytes it holds.
pub fn oauth_introspection_path(token: &str) -> String {
    format!("/oauth/v1/access-tokens/{}", encode_segment(token))
}

/// Who a call's budgets belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    App {
        app_id: u64,
        portal_id: u64,
    },
    /// HubSpot could not be asked (or the credential is a hapikey): keyed by the credential.
    Unidentified {
        credential_hash: u64,
    },
    /// No credential at all; such calls share one budget.
    Anonymous,
}

impl Owner {
    /// `app_id:portal_id`, `unidentified:<16 hex>` or `anonymous`.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

/// The label, written where it is needed (a header's bytes) without a `String` first.
impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::App { app_id, portal_id } => write!(f, "{app_id}:{portal_id}"),
            Owner::Unidentified { credential_hash } => {
                write!(f, "unidentified:{credential_hash:016x}")
            }
            Owner::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// What resolving a credential concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Owner(Owner),
    /// HubSpot says the token is not valid.
    Invalid,
}

/// A token whose owner is known in advance, from `[[credentials]]`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]

pub struct StaticCredential {
    pub token: Option<String>,
    /// Lowercase hex SHA-256 of the token, so config files need not hold the secret.
    pub token_sha256: Option<String>,
    pub app_id: u64,
    pub portal_id: u64,
}

/// The `[identity]` table of config.toml.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct IdentityConfig {
    /// Private-app tokens never expire, so their owner is re-checked this often (a revoked
    /// token is noticed within this time).
    pub private_app_ttl_ms: u64,
    /// How long a token HubSpot rejected stays rejected without asking again.
    pub negative_ttl_ms: u64,
    /// How long a failed lookup is remembered before HubSpot is asked again.
    pub unreachable_ttl_ms: u64,
    /// Most tokens remembered at once.
    pub max_entries: usize,
    /// Pace of introspection calls to HubSpot.
    pub introspection_per_second: u32,
    /// Limit for one introspection, pacing wait included.
    pub introspection_timeout_ms: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            private_app_ttl_ms: 3_600_000,
            negative_ttl_ms: 60_000,
            unreachable_ttl_ms: 10_000,
            max_entries: 100_000,
            introspection_per_second: 20,
            introspection_timeout_ms: 5_000,
        }
    }
}

impl IdentityConfig {
    /// Every problem as (dotted key, message); empty when the table is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, zero) in [
            ("identity.private_app_ttl_ms", self.private_app_ttl_ms == 0),
            ("identity.max_entries", self.max_entries == 0),
            (
                "identity.introspection_per_second",
                self.introspection_per_second == 0,
            ),
            (
                "identity.introspection_timeout_ms",
                self.introspection_timeout_ms == 0,
            ),
        ] {
            if zero {
                problems.push((key.to_string(), "must be greater than 0".to_string()));
            }
        }
        problems
    }
}

/// Checks `[[credentials]]`: each entry names its token exactly once, a hash is 64 hex
/// characters, and no token is given two owners. Keys look like `credentials.0.token`.
pub fn validate_credentials(credentials: &[StaticCredential]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut seen: HashMap<[u8; 32], (usize, Owner)> = HashMap::new();
    for (i, c) in credentials.iter().enumerate() {
        let key = match static_key(c) {
            Ok(key) => key,
            Err((field, message)) => {
                problems.push((format!("credentials.{i}.{field}"), message));
                continue;
            }
        };
        let owner = Owner::App {
            app_id: c.app_id,
            portal_id: c.portal_id,
        };
        match seen.get(&key) {
            Some((first, other)) if *other != owner => problems.push((
                format!("credentials.{i}"),
                format!(
                    "names the same token as credentials[{first}] but owner {} instead of {}",
                    owner.label(),
                    other.label()
                ),
            )),
            Some(_) => {}
            None => {
                seen.insert(key, (i, owner));
            }
        }
    }
    problems
}

/// The cache key of one static credential, or (field, message) saying what is wrong.
fn static_key(c: &StaticCredential) -> Result<[u8; 32], (&'static str, String)> {
    match (&c.token, &c.token_sha256) {
        (Some(token), None) if token.is_empty() => Err(("token", "must not be empty".into())),
        (Some(token), None) => Ok(sha256(token)),
        (None, Some(hash)) => {
            let mut key = [0u8; 32];
            if hash.len() != 64 || hex::decode_to_slice(hash, &mut key).is_err() {
                return Err((
                    "token_sha256",
                    "must be 64 hex characters (the SHA-256 of the token, e.g. from \
                     `printf %s \"$TOKEN\" | sha256sum`)"
                        .into(),
                ));
            }
            Ok(key)
        }
        (Some(_), Some(_)) => Err((
            "token",
            "give either token or token_sha256, not both".into(),
        )),
        (None, None) => Err(("token", "give token or token_sha256".into())),
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

/// What one lookup concluded, as cached.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Known(Owner),
    Invalid,
    Unreachable,
}

#[derive(Debug, Clone, Copy)]
struct Settled {
    verdict: Verdict,
    expires_at: Instant,
}

/// One cache slot: empty while its lookup is in flight, so that concurrent callers with the
/// same token wait for that lookup instead of starting their own.
type Slot = Arc<OnceCell<Settled>>;

/// Resolves credentials to owners; clones share one cache.
#[derive(Clone)]
pub struct IdentityResolver {
    inner: Arc<Inner>,
}

struct Inner {
    /// `[identity]` and `[[credentials]]`, swapped whole by a reload.
    settings: arc_swap::ArcSwap<Settings>,
    /// Keyed by SHA-256 digests, hashed again with foldhash: on every call, and the keys are
    /// uniformly random already.
    cache: DashMap<[u8; 32], Slot, foldhash::fast::RandomState>,
    /// Entries in `cache`, kept beside it because `DashMap::len` locks every shard and so
    /// cannot be asked while an entry guard is held.
    entries: AtomicUsize,
    /// Only one task sweeps a full cache at a time; the others find room when it is done.
    sweeping: Mutex<()>,
    client: UpstreamClient,
    target: UpstreamTarget,
    metrics: Metrics,
}

/// What the config says about resolving: known tokens, cache TTLs and bounds, the pace of
/// lookups. A reload replaces it whole; answers already cached keep their expiry.
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
        let mut problems = config.validate();
        problems.extend(validate_credentials(credentials));
        if !problems.is_empty() {
            let list: Vec<String> = problems
                .into_iter()
                .map(|(key, message)| format!("{key}: {message}"))
                .collect();
            anyhow::bail!("identity configuration: {}", list.join("; "));
        }
        let mut statics = HashMap::default();
        for c in credentials {
            let key = static_key(c)
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

/// OAuth tokens live 30 minutes; an answer claiming far more is not trusted for longer.
const MAX_OAUTH_TTL: Duration = Duration::from_secs(24 * 3600);
/// Introspection answers are a few hundred bytes; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

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
                cache: DashMap::default(),
                entries: AtomicUsize::new(0),
                sweeping: Mutex::new(()),
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
        if let Some(owner) = self.settings.load().statics.get(&digest) {
            return (Resolution::Owner(*owner), "static");
        }
        if token.is_empty() {
            return (Resolution::Invalid, "invalid");
        }
        let (settled, introspected) = match self.slot(digest) {
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

    /// A fresh cached verdict (`Ok`), or the slot whose lookup to join or run (`Err`); `None`
    /// inside `Err` when the cache is full of lookups in flight and this one goes uncached.
    fn slot(&self, key: [u8; 32]) -> Result<Settled, Option<Slot>> {
        let now = Instant::now();
        let max_entries = self.settings.load().max_entries;
        if self.entries.load(Ordering::Relaxed) >= max_entries && !self.cache.contains_key(&key) {
            self.make_room(now);
        }
        match self.cache.entry(key) {
            MapEntry::Occupied(mut occupied) => match occupied.get().get() {
                Some(settled) if settled.expires_at > now => Ok(*settled),
                Some(_) => {
                    let slot = Slot::default();
                    occupied.insert(slot.clone());
                    Err(Some(slot))
                }
                None => Err(Some(occupied.get().clone())),
            },
            MapEntry::Vacant(vacant) => {
                if self.entries.fetch_add(1, Ordering::Relaxed) >= max_entries {
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    return Err(None);
                }
                let slot = Slot::default();
                vacant.insert(slot.clone());
                Err(Some(slot))
            }
        }
    }

    /// Frees room for new tokens; the policy is in the module docs. Holds no guard on return.
    fn make_room(&self, now: Instant) {
        let Ok(_sweep) = self.sweeping.lock() else {
            return;
        };
        let max_entries = self.settings.load().max_entries;
        if self.entries.load(Ordering::Relaxed) < max_entries {
            return;
        }
        self.cache.retain(|_, slot| {
            // A lookup nobody waits for any more (its callers went away) holds only the map's
            // reference; the shard lock held here keeps anyone from cloning it meanwhile.
            let keep = match slot.get() {
                Some(settled) => settled.expires_at > now,
                None => Arc::strong_count(slot) > 1,
            };
            if !keep {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        let target = max_entries - max_entries.div_ceil(10);
        let excess = self.entries.load(Ordering::Relaxed).saturating_sub(target);
        if excess == 0 {
            return;
        }
        let victims: Vec<[u8; 32]> = self
            .cache
            .iter()
            .filter(|e| e.value().initialized())
            .take(excess)
            .map(|e| *e.key())
            .collect();
        for key in victims {
            if self
                .cache
                .remove_if(&key, |_, slot| slot.initialized())
                .is_some()
            {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            evicted = excess,
            max_entries,
            "identity cache full: dropped arbitrary entries"
        );
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
        let private_app = TokenKind::of(token) == TokenKind::PrivateApp;
        let request = if private_app {
            let body = serde_json::json!({ "tokenKey": token }).to_string();
            Request::builder()
                .method(Method::POST)
                .uri(self.uri("/oauth/v2/private-apps/get/access-token-info")?)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json")
                .body(full(body))
        } else {
            let path = oauth_introspection_path(token);
            Request::builder()
                .method(Method::GET)
                .uri(self.uri(&path)?)
                .header(header::ACCEPT, "application/json")
                .body(empty())
        }
        .map_err(|e| format!("building the request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let status = response.status();
        if status.is_client_error()
            && status != StatusCode::TOO_MANY_REQUESTS
            && status != StatusCode::REQUEST_TIMEOUT
        {
            return Ok(Answer::Invalid(status));
        }
        if !status.is_success() {
            return Err(format!("HubSpot answered {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        // serde's message may quote the body, and OAuth answers echo the token: say only where.
        let info: TokenInfo = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "answer is not token info JSON ({:?} at {}:{})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        let (app, portal) = if private_app {
            (info.app_id_camel, info.hub_id_camel)
        } else {
            (info.app_id, info.hub_id)
        };
        let (Some(app_id), Some(portal_id)) = (
            app.and_then(Number::into_u64),
            portal.and_then(Number::into_u64),
        ) else {
            return Err("answer names no app and portal".to_string());
        };
        let ttl = if private_app {
            private_app_ttl
        } else {
            info.expires_in
                .and_then(Number::into_u64)
                .map(|s| Duration::from_secs(s).min(MAX_OAUTH_TTL))
                .ok_or("OAuth answer has no expires_in")?
        };
        Ok(Answer::Owner {
            owner: Owner::App { app_id, portal_id },
            ttl,
        })
    }

    fn uri(&self, path: &str) -> Result<Uri, String> {
        Uri::builder()
            .scheme(self.target.scheme.clone())
            .authority(self.target.authority.clone())
            .path_and_query(format!("{}{path}", self.target.base_path))
            .build()
            .map_err(|e| format!("building the introspection URI: {e}"))
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

enum Answer {
    Owner { owner: Owner, ttl: Duration },
    Invalid(StatusCode),
}

/// Both introspection answers in one shape: OAuth's snake_case and private apps' camelCase.
#[derive(Deserialize)]
struct TokenInfo {
    app_id: Option<Number>,
    hub_id: Option<Number>,
    expires_in: Option<Number>,
    #[serde(rename = "appId")]
    app_id_camel: Option<Number>,
    #[serde(rename = "hubId")]
    hub_id_camel: Option<Number>,
}

/// An id or duration as HubSpot may send it: a JSON number, or a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u64),
    Float(f64),
    Text(String),
    #[allow(dead_code)]
    Other(serde_json::Value),
}

impl Number {
    fn into_u64(self) -> Option<u64> {
        match self {
            Number::Int(n) => Some(n),
            Number::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => {
                Some(f as u64)
            }
            Number::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any token is one path
/// segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_arrive_in_any_shape() {
        let info: TokenInfo =
            serde_json::from_str(r#"{"app_id":"42","hub_id":7.0,"expires_in":1800,"x":[1]}"#)
                .unwrap();
        assert_eq!(info.app_id.and_then(Number::into_u64), Some(42));
        assert_eq!(info.hub_id.and_then(Number::into_u64), Some(7));
        assert_eq!(info.expires_in.and_then(Number::into_u64), Some(1800));
        let info: TokenInfo = serde_json::from_str(r#"{"appId":null,"hubId":-1}"#).unwrap();
        assert_eq!(info.app_id_camel.and_then(Number::into_u64), None);
        assert_eq!(info.hub_id_camel.and_then(Number::into_u64), None);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(encode_segment("CKm-._~9"), "CKm-._~9");
    }

    #[test]
    fn labels() {
        let app = Owner::App {
            app_id: 1,
            portal_id: 2,
        };
        assert_eq!(app.label(), "1:2");
        let u = Owner::Unidentified {
            credential_hash: 0xab,
        };
        assert_eq!(u.label(), "unidentified:00000000000000ab");
        assert_eq!(Owner::Anonymous.label(), "anonymous");
    }

    #[test]
    fn static_credentials_are_checked() {
        let c = |token: Option<&str>, hash: Option<&str>| StaticCredential {
            token: token.map(str::to_string),
            token_sha256: hash.map(str::to_string),
            app_id: 1,
            portal_id: 2,
        };
        let good = hex::encode(sha256("t"));
        assert!(validate_credentials(&[c(Some("t"), None), c(None, Some(&good))]).is_empty());
        let problems = validate_credentials(&[
            c(None, None),
            c(Some("t"), Some(&good)),
            c(None, Some("abc")),
            c(None, Some(&"zz".repeat(32))),
            c(Some(""), None),
        ]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "credentials.0.token",
                "credentials.1.token",
                "credentials.2.token_sha256",
                "credentials.3.token_sha256",
                "credentials.4.token",
            ]
        );
        let mut other = c(None, Some(&good));
        other.app_id = 9;
        let problems = validate_credentials(&[c(Some("t"), None), other]);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
