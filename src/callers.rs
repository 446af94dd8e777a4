//! Who is calling: the caller's key when `[inbound] require_caller_key` is on, its name
//! (the key's caller, else `X-Hubgate-Caller`, else its IP address), its priority
//! (`X-Hubgate-Priority`), its weight among the owner's callers, and its optional rate cap —
//! everything `[[callers]]` and `[inbound]` configure, in one registry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderName, Request};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::body::Body;
use hubgate_engine::{Priority, Seat};
use crate::error::GatewayError;
use crate::respond::PeerAddr;

pub const CALLER_HEADER: HeaderName = HeaderName::from_static("x-hubgate-caller");
pub const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-hubgate-priority");

/// One `[[callers]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CallerConfig {
    /// The `X-Hubgate-Caller` value (or IP address) this entry applies to.
    pub name: String,
    /// Turns per round among the callers of one owner (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Calls per second this caller may send; above it hubgate answers 429 at once.
    #[serde(default)]
    pub max_rps: Option<u32>,
    /// Hex SHA-256 of the key this caller presents (`hubgate hash-key`); checked when
    /// `[inbound] require_caller_key` is on. The key itself never appears in the config.
    #[serde(default)]
    pub key_sha256: Option<String>,
}

fn one() -> u32 {
    1
}

/// The `[inbound]` table: who may call at all.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct InboundConfig {
    /// Every call must present a `[[callers]]` key in `key_header`; others get 401 before
    /// any lookup or budget is spent.
    pub require_caller_key: bool,
    /// The request header carrying the caller's key; stripped before forwarding.
    pub key_header: String,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            require_caller_key: false,
            key_header: "X-Hubgate-Key".into(),
        }
    }
}

/// Headers hubgate or HubSpot already give a meaning; a caller key in one of them would
/// be read as something else, or sent on to HubSpot.
const RESERVED_KEY_HEADERS: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "host",
    "cookie",
    "x-request-id",
    "x-hubgate-caller",
    "x-hubgate-priority",
    "x-hubgate-deadline-ms",
    "x-hubspot-correlation-id",
];

/// Every problem in `[inbound]` as (dotted key, message).
pub fn validate_inbound(
    inbound: &InboundConfig,
    callers: &[CallerConfig],
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    match HeaderName::from_bytes(inbound.key_header.as_bytes()) {
        Err(_) => problems.push((
            "inbound.key_header".into(),
            format!(
                "{:?} is not an HTTP header name; use e.g. \"X-Hubgate-Key\"",
                inbound.key_header
            ),
        )),
        Ok(name) if RESERVED_KEY_HEADERS.contains(&name.as_str()) => problems.push((
            "inbound.key_header".into(),
            format!(
                "{:?} already means something to hubgate or HubSpot; use a header of its own, e.g. \"X-Hubgate-Key\"",
                inbound.key_header
            ),
        )),
        Ok(_) => {}
    }
    if inbound.require_caller_key && callers.iter().all(|c| c.key_sha256.is_none()) {
        problems.push((
            "inbound.require_caller_key".into(),
            "no [[callers]] entry has a key_sha256, so every call would be refused; give the callers that may call a key_sha256 (from `hubgate hash-key`)".into(),
        ));
    }
    problems
}

/// Every problem in `[[callers]]` as (dotted key, message).
pub fn validate(callers: &[CallerConfig]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    let mut seen_keys = HashMap::new();
    for (i, caller) in callers.iter().enumerate() {
        if let Err(e) = check_name(&caller.name) {
            problems.push((format!("callers.{i}.name"), e));
        }
        if let Some(first) = seen.insert(caller.name.as_str(), i) {
            problems.push((
                format!("callers.{i}.name"),
                format!("'{}' is already configured as callers.{first}", caller.name),
            ));
        }
        if !(1..=1000).contains(&caller.weight) {
            problems.push((
                format!("callers.{i}.weight"),
                "must be between 1 and 1000".into(),
            ));
        }
        if caller.max_rps == Some(0) {
            problems.push((
                format!("callers.{i}.max_rps"),
                "must be at least 1 (leave it out for no cap)".into(),
            ));
        }
        if let Some(hash) = &caller.key_sha256 {
            match parse_key_hash(hash) {
                None => problems.push((
                    format!("callers.{i}.key_sha256"),
                    "must be 64 hex characters: the SHA-256 of the caller's key, from `hubgate hash-key` (or `printf %s \"$KEY\" | sha256sum`)".into(),
                )),
                Some(digest) => {
                    if let Some(first) = seen_keys.insert(digest, i) {
                        problems.push((
                            format!("callers.{i}.key_sha256"),
                            format!("is already the key of callers.{first}; every caller needs a key of its own"),
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn parse_key_hash(hex_text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    (hex_text.len() == 64 && hex::decode_to_slice(hex_text, &mut digest).is_ok()).then_some(digest)
}

/// The `key_sha256` of a caller key, as `hubgate hash-key` prints it.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "caller name {name:?} must be 1 to 128 visible ASCII characters without spaces, e.g. \"nightly-sync\""
        ));
    }
    Ok(())
}

/// The configured callers: keys, weights and caps, built whole from `[[callers]]` and
/// `[inbound]` so that a new configuration replaces it in one piece.
pub struct Callers {
    weights: HashMap<String, u32>,
    /// GCRA per capped caller: a cap really is a rate (unlike HubSpot's rolling windows).
    /// Shared, so a reload keeps the limiter (and what it has counted) of an unchanged cap.
    caps: HashMap<String, Cap>,
    /// `Some` when every call must present a key.
    keys: Option<CallerKeys>,
}

/// What `[inbound] require_caller_key` checks.
struct CallerKeys {
    header: HeaderName,
    /// The header as configured, for messages.
    header_display: String,
    /// (SHA-256 of the key, caller name). Searched whole, in constant time per entry, so
    /// the time taken says nothing about which hash came close.
    known: Vec<([u8; 32], String)>,
}

/// The caller a valid key named; set by the auth layer, read by `Callers::identify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCaller(pub String);

/// Why a call without a valid caller key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    Missing,
    Repeated,
    Unknown,
}

struct Cap {
    per_second: NonZeroU32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// The name and seat of one call.
#[derive(Debug, Clone)]
pub struct Identified {
    pub name: Arc<str>,
    pub seat: Seat,
}

impl Callers {
    pub fn new(config: &[CallerConfig], inbound: &InboundConfig) -> Callers {
        let weights = config
            .iter()
            .map(|c| (c.name.clone(), c.weight.max(1)))
            .collect();
        let caps = config
            .iter()
            .filter_map(|c| {
                let per_second = NonZeroU32::new(c.max_rps?)?;
                let limiter = Arc::new(RateLimiter::direct(Quota::per_second(per_second)));
                Some((
                    c.name.clone(),
                    Cap {
                        per_second,
                        limiter,
                    },
                ))
            })
            .collect();
        let keys = inbound.require_caller_key.then(|| CallerKeys {
            header: HeaderName::from_bytes(inbound.key_header.as_bytes())
                .unwrap_or_else(|_| HeaderName::from_static("x-hubgate-key")),
            header_display: inbound.key_header.clone(),
            known: config
                .iter()
                .filter_map(|c| Some((parse_key_hash(c.key_sha256.as_deref()?)?, c.name.clone())))
                .collect(),
        });
        Callers {
            weights,
            caps,
            keys,
        }
    }

    /// When keys are required: the caller whose key the call presents, with the key header
    /// removed (a caller's key is for hubgate, never for HubSpot). `Ok(None)` when keys are
    /// not required: the call is left exactly as it came.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
    ) -> Result<Option<AuthenticatedCaller>, GatewayError> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let refuse = |problem| GatewayError::Unauthorized {
            header: keys.header_display.clone(),
            problem,
        };
        let mut presented = headers.get_all(&keys.header).iter();
        let key = match (presented.next(), presented.next()) {
            (None, _) => return Err(refuse(KeyProblem::Missing)),
            (Some(_), Some(_)) => return Err(refuse(KeyProblem::Repeated)),
            (Some(key), None) => key,
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes().trim_ascii()).into();
        let mut found: Option<&str> = None;
        for (known, name) in &keys.known {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(name);
            }
        }
        let Some(name) = found else {
            tracing::debug!(
                key = %crate::redact::short_digest(&digest),
                "refused a call with an unknown caller key"
            );
            return Err(refuse(KeyProblem::Unknown));
        };
        // The key names the caller: a different X-Hubgate-Caller would let one caller
        // spend another's share and cap.
        if let Some(claimed) = headers.get(CALLER_HEADER) {
            let claimed = String::from_utf8_lossy(claimed.as_bytes());
            if claimed.trim() != name {
                return Err(GatewayError::BadRequest(format!(
                    "X-Hubgate-Caller {:?} does not match the caller of the key in {} ({name:?}); leave X-Hubgate-Caller out or send that caller's own key",
                    claimed.trim(),
                    keys.header_display
                )));
            }
        }
        headers.remove(&keys.header);
        Ok(Some(AuthenticatedCaller(name.to_string())))
    }

    /// The callers `config` describes, for a reload: built whole like `new`, except that a
    /// caller whose cap is unchanged keeps its limiter, so a reload hands no caller a fresh
    /// burst.
    pub fn reconfigured(&self, config: &[CallerConfig], inbound: &InboundConfig) -> Callers {
        let mut next = Callers::new(config, inbound);
        for (name, cap) in &mut next.caps {
            if let Some(old) = self.caps.get(name) {
                if old.per_second == cap.per_second {
                    cap.limiter = old.limiter.clone();
                }
            }
        }
        next
    }

    /// Names the caller and reads its priority; malformed hubgate headers are refused
    /// with a message saying what to send instead.
    pub fn identify(&self, request: &Request<Body>) -> Result<Identified, GatewayError> {
        // A key names its caller; X-Hubgate-Caller was checked against it already.
        let name = if let Some(AuthenticatedCaller(name)) = request.extensions().get() {
            Arc::from(name.as_str())
        } else if let Some(value) = request.headers().get(CALLER_HEADER) {
            // Lossy, so a refusal shows what was sent; non-ASCII never passes the check.
            let sent = String::from_utf8_lossy(value.as_bytes());
            let name = sent.trim();
            check_name(name)
                .map_err(|e| GatewayError::BadRequest(format!("X-Hubgate-Caller: {e}")))?;
            Arc::from(name)
        } else {
            request
                .extensions()
                .get::<PeerAddr>()
                .map_or_else(|| Arc::from("unknown"), |peer| peer.ip.clone())
        };
        let priority = match request.headers().get(PRIORITY_HEADER) {
            None => Priority::Normal,
            Some(value) => match value
                .to_str()
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                Ok("high") => Priority::High,
                Ok("normal") => Priority::Normal,
                Ok("low") => Priority::Low,
                _ => {
                    return Err(GatewayError::BadRequest(format!(
                        "X-Hubgate-Priority must be high, normal or low, not {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    )))
                }
            },
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let seat = Seat {
            priority,
            caller: hasher.finish(),
            weight: self.weights.get(&*name).copied().unwrap_or(1),
        };
        Ok(Identified { name, seat })
    }

    /// Spends one call of the caller's cap; `Err` holds how long until one is free.
    pub fn check_cap(&self, name: &str) -> Result<(), Duration> {
        let Some(cap) = self.caps.get(name) else {
            return Ok(());
        };
        cap.limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(name: &str, max_rps: u32) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            weight: 1,
            max_rps: Some(max_rps),
            key_sha256: None,
        }
    }

    fn caller(name: &str, key: Option<&str>) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            weight: 1,
            max_rps: None,
            key_sha256: key.map(key_sha256),
        }
    }

    fn required() -> InboundConfig {
        InboundConfig {
            require_caller_key: true,
            ..InboundConfig::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn problem(result: Result<Option<AuthenticatedCaller>, GatewayError>) -> Option<KeyProblem> {
        match result {
            Err(GatewayError::Unauthorized { problem, .. }) => Some(problem),
            _ => None,
        }
    }

    #[test]
    fn a_reload_keeps_the_limiter_of_an_unchanged_cap_only() {
        let callers = Callers::new(
            &[capped("same", 1), capped("raised", 1)],
            &InboundConfig::default(),
        );
        assert!(callers.check_cap("same").is_ok());
        assert!(callers.check_cap("raised").is_ok());
        let reloaded = callers.reconfigured(
            &[capped("same", 1), capped("raised", 5)],
            &InboundConfig::default(),
        );
        assert!(
            reloaded.check_cap("same").is_err(),
            "an unchanged cap keeps what it counted: no fresh burst"
        );
        assert!(
            reloaded.check_cap("raised").is_ok(),
            "a new cap starts anew"
        );
        let uncapped = reloaded.reconfigured(&[], &InboundConfig::default());
        assert!(uncapped.check_cap("same").is_ok(), "a removed cap is gone");
    }

    #[test]
    fn a_known_key_names_its_caller_and_is_removed() {
        let callers = Callers::new(
            &[
                caller("sync", Some("key-one")),
                caller("web", Some("key-two")),
            ],
            &required(),
        );
        let mut map = headers(&[("x-hubgate-key", " key-two "), ("accept", "*/*")]);
        let found = callers.authenticate(&mut map).unwrap();
        assert_eq!(found, Some(AuthenticatedCaller("web".into())));
        assert!(map.get("x-hubgate-key").is_none(), "key not sent on");
        assert!(map.get("accept").is_some());
    }

    #[test]
    fn missing_repeated_and_unknown_keys_are_refused() {
        let callers = Callers::new(&[caller("sync", Some("key-one"))], &required());
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[]))),
            Some(KeyProblem::Missing)
        );
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[
                ("x-hubgate-key", "key-one"),
                ("x-hubgate-key", "key-one")
            ]))),
            Some(KeyProblem::Repeated)
        );
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[("x-hubgate-key", "key-on")]))),
            Some(KeyProblem::Unknown)
        );
        // A caller without a key cannot be named by one.
        let callers = Callers::new(
            &[caller("sync", Some("key-one")), caller("open", None)],
            &required(),
        );
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[("x-hubgate-key", "")]))),
            Some(KeyProblem::Unknown)
        );
    }

    #[test]
    fn the_key_decides_the_caller_name() {
        let callers = Callers::new(
            &[
                caller("sync", Some("key-one")),
                caller("web", Some("key-two")),
            ],
            &required(),
        );
        let mut same = headers(&[
            ("x-hubgate-key", "key-one"),
            (CALLER_HEADER.as_str(), "sync"),
        ]);
        assert!(callers.authenticate(&mut same).is_ok());
        let mut other = headers(&[
            ("x-hubgate-key", "key-one"),
            (CALLER_HEADER.as_str(), "web"),
        ]);
        assert!(matches!(
            callers.authenticate(&mut other),
            Err(GatewayError::BadRequest(m)) if m.contains("does not match")
        ));
        let mut request = Request::new(crate::body::empty());
        request
            .headers_mut()
            .insert(CALLER_HEADER, "web".parse().unwrap());
        request
            .extensions_mut()
            .insert(AuthenticatedCaller("sync".into()));
        assert_eq!(&*callers.identify(&request).unwrap().name, "sync");
    }

    #[test]
    fn without_require_caller_key_nothing_is_checked_or_removed() {
        let callers = Callers::new(
            &[caller("sync", Some("key-one"))],
            &InboundConfig::default(),
        );
        let mut map = headers(&[("x-hubgate-key", "anything")]);
        assert_eq!(callers.authenticate(&mut map).unwrap(), None);
        assert_eq!(map["x-hubgate-key"], "anything");
        assert_eq!(callers.authenticate(&mut headers(&[])).unwrap(), None);
    }

    #[test]
    fn keys_and_the_inbound_table_are_validated() {
        let mut bad_hash = caller("a", None);
        bad_hash.key_sha256 = Some("abc".into());
        let problems = validate(&[bad_hash, caller("b", Some("k")), caller("c", Some("k"))]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["callers.0.key_sha256", "callers.2.key_sha256"]);
        assert!(problems[1].1.contains("callers.1"));

        let no_keys = validate_inbound(&required(), &[caller("a", None)]);
        assert_eq!(no_keys[0].0, "inbound.require_caller_key");
        assert!(validate_inbound(&required(), &[caller("a", Some("k"))]).is_empty());
        for header in ["Authorization", "x-hubgate-caller", "bad header"] {
            let inbound = InboundConfig {
                key_header: header.into(),
                ..required()
            };
            let problems = validate_inbound(&inbound, &[caller("a", Some("k"))]);
            assert_eq!(problems.len(), 1, "{header}: {problems:?}");
            assert_eq!(problems[0].0, "inbound.key_header");
        }
    }

    #[test]
    fn key_sha256_is_the_hex_sha256_of_the_key() {
        assert_eq!(
            key_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
