//! `[[callers]]` and `[inbound]`: the callers known by name (keys, weights, caps) and who
//! may call at all.

use std::collections::HashMap;

use http::HeaderName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::problems::Problems;

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
    /// The `X-Hubgate-Priority` values this caller may send when `[inbound]
    /// require_caller_key` is on: `high` jumps every queue, so it is given, not taken.
    #[serde(default = "default_priorities")]
    pub priorities: Vec<String>,
    /// The portals (hub ids) whose installs this caller may use through the token broker
    /// (`X-Hubgate-Portal`) when `[inbound] require_caller_key` is on; none by default.
    #[serde(default)]
    pub portals: Vec<u64>,
}

fn one() -> u32 {
    1
}

/// The priorities of a `[[callers]]` entry that names none.
pub fn default_priorities() -> Vec<String> {
    vec!["normal".into(), "low".into()]
}

/// The values `X-Hubgate-Priority` and `[[callers]] priorities` take.
const PRIORITY_NAMES: [&str; 3] = ["high", "normal", "low"];

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

impl InboundConfig {
    pub(crate) fn check(&self, callers: &[CallerConfig], problems: &mut Problems) {
        match HeaderName::from_bytes(self.key_header.as_bytes()) {
            Err(_) => problems.add(
                "inbound.key_header",
                format!(
                    "{:?} is not an HTTP header name; use e.g. \"X-Hubgate-Key\"",
                    self.key_header
                ),
            ),
            Ok(name) if RESERVED_KEY_HEADERS.contains(&name.as_str()) => problems.add(
                "inbound.key_header",
                format!(
                    "{:?} already means something to hubgate or HubSpot; use a header of its own, e.g. \"X-Hubgate-Key\"",
                    self.key_header
                ),
            ),
            Ok(_) => {}
        }
        if self.require_caller_key && callers.iter().all(|c| c.key_sha256.is_none()) {
            problems.add(
                "inbound.require_caller_key",
                "no [[callers]] entry has a key_sha256, so every call would be refused; give the callers that may call a key_sha256 (from `hubgate hash-key`)",
            );
        }
    }
}

/// Every problem in `[[callers]]`.
pub(crate) fn check_callers(callers: &[CallerConfig], problems: &mut Problems) {
    let mut seen = HashMap::new();
    let mut seen_keys = HashMap::new();
    for (i, caller) in callers.iter().enumerate() {
        if let Some(e) = caller_name_problem(&caller.name) {
            problems.add(format!("callers.{i}.name"), e);
        }
        if let Some(first) = seen.insert(caller.name.as_str(), i) {
            problems.add(
                format!("callers.{i}.name"),
                format!("'{}' is already configured as callers.{first}", caller.name),
            );
        }
        if !(1..=1000).contains(&caller.weight) {
            problems.add(format!("callers.{i}.weight"), "must be between 1 and 1000");
        }
        if caller.max_rps == Some(0) {
            problems.add(
                format!("callers.{i}.max_rps"),
                "must be at least 1 (leave it out for no cap)",
            );
        }
        if caller.priorities.is_empty() {
            problems.add(
                format!("callers.{i}.priorities"),
                "must list at least one priority (leave it out for [\"normal\", \"low\"])",
            );
        }
        for (j, priority) in caller.priorities.iter().enumerate() {
            if !PRIORITY_NAMES.contains(&priority.as_str()) {
                problems.add(
                    format!("callers.{i}.priorities.{j}"),
                    format!("{priority:?} is not a priority; use \"high\", \"normal\" or \"low\""),
                );
            }
        }
        if let Some(hash) = &caller.key_sha256 {
            match key_digest(hash) {
                None => problems.add(
                    format!("callers.{i}.key_sha256"),
                    "must be 64 hex characters: the SHA-256 of the caller's key, from `hubgate hash-key` (or `printf %s \"$KEY\" | sha256sum`)",
                ),
                Some(digest) => {
                    if let Some(first) = seen_keys.insert(digest, i) {
                        problems.add(
                            format!("callers.{i}.key_sha256"),
                            format!("is already the key of callers.{first}; every caller needs a key of its own"),
                        );
                    }
                }
            }
        }
    }
}

/// The digest a `key_sha256` names, when it is 64 hex characters.
pub fn key_digest(hex_text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    (hex_text.len() == 64 && hex::decode_to_slice(hex_text, &mut digest).is_ok()).then_some(digest)
}

/// The `key_sha256` of a caller key, as `hubgate hash-key` prints it.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What is wrong with a caller name (from `[[callers]]` or `X-Hubgate-Caller`), if anything.
pub fn caller_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!(
            "caller name {name:?} must be 1 to 128 visible ASCII characters without spaces, e.g. \"nightly-sync\""
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, key: Option<&str>) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            weight: 1,
            max_rps: None,
            key_sha256: key.map(key_sha256),
            priorities: default_priorities(),
            portals: Vec::new(),
        }
    }

    fn required() -> InboundConfig {
        InboundConfig {
            require_caller_key: true,
            ..InboundConfig::default()
        }
    }

    fn problems_of(check: impl FnOnce(&mut Problems)) -> Vec<(String, String)> {
        let mut problems = Problems::default();
        check(&mut problems);
        problems
            .into_vec()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    #[test]
    fn keys_and_the_inbound_table_are_validated() {
        let mut bad_hash = caller("a", None);
        bad_hash.key_sha256 = Some("abc".into());
        let callers = [bad_hash, caller("b", Some("k")), caller("c", Some("k"))];
        let problems = problems_of(|p| check_callers(&callers, p));
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["callers.0.key_sha256", "callers.2.key_sha256"]);
        let mut shouting = caller("d", None);
        shouting.priorities = vec!["low".into(), "urgent".into()];
        let unknown_priority = problems_of(|p| check_callers(&[shouting], p));
        assert_eq!(unknown_priority.len(), 1);
        assert_eq!(unknown_priority[0].0, "callers.0.priorities.1");
        assert!(problems[1].1.contains("callers.1"));

        let no_keys = problems_of(|p| required().check(&[caller("a", None)], p));
        assert_eq!(no_keys[0].0, "inbound.require_caller_key");
        assert!(problems_of(|p| required().check(&[caller("a", Some("k"))], p)).is_empty());
        for header in ["Authorization", "x-hubgate-caller", "bad header"] {
            let inbound = InboundConfig {
                key_header: header.into(),
                ..required()
            };
            let problems = problems_of(|p| inbound.check(&[caller("a", Some("k"))], p));
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
