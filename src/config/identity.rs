//! `[identity]` and `[[credentials]]`: how credentials are resolved to their quota owner
//! (cache TTLs and bounds, the pace of lookups) and the tokens whose owner is known in
//! advance.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::problems::Problems;

/// A token whose owner is known in advance, from `[[credentials]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StaticCredential {
    pub token: Option<String>,
    /// Lowercase hex SHA-256 of the token, so config files need not hold the secret.
    pub token_sha256: Option<String>,
    pub app_id: u64,
    pub portal_id: u64,
}

/// The `[identity]` table of config.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct IdentityConfig {
    /// Private-app tokens never expire, so their owner is re-checked this often (a revoked
    /// token is noticed within this time).
    pub private_app_ttl_ms: u64,
    /// How long a token HubSpot rejected stays rejected without asking again.
    pub negative_ttl_ms: u64,
    /// How long a failed lookup is remembered before HubSpot is asked again.
    pub unreachable_ttl_ms: u64,
    /// Most token owners remembered at once.
    pub max_entries: usize,
    /// Most refused or failed tokens remembered at once, apart from the owners so a flood of
    /// junk tokens never pushes one out.
    pub max_refused_entries: usize,
    /// Most hapikeys remembered as accepted by HubSpot (each has its own budget).
    pub max_proven_hapikeys: usize,
    /// Pace of introspection calls to HubSpot.
    pub introspection_per_second: u32,
    /// Limit for one introspection, pacing wait included.
    pub introspection_timeout_ms: u64,
    /// Whether an OAuth token no `[[apps]]` entry's dated introspection knows is looked up
    /// with HubSpot's v1 token-info route, which HubSpot switches off on 2027-02-16.
    pub v1_introspection: bool,
}

/// The day HubSpot switches the v1 OAuth API off (its changelog's v1 OAuth deprecation).
pub const V1_OAUTH_SUNSET: &str = "2027-02-16";

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            private_app_ttl_ms: 3_600_000,
            negative_ttl_ms: 60_000,
            unreachable_ttl_ms: 10_000,
            max_entries: 100_000,
            max_refused_entries: 10_000,
            max_proven_hapikeys: 10_000,
            introspection_per_second: 20,
            introspection_timeout_ms: 5_000,
            v1_introspection: true,
        }
    }
}

impl IdentityConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        for (key, zero) in [
            ("identity.private_app_ttl_ms", self.private_app_ttl_ms == 0),
            ("identity.max_entries", self.max_entries == 0),
            (
                "identity.max_refused_entries",
                self.max_refused_entries == 0,
            ),
            (
                "identity.max_proven_hapikeys",
                self.max_proven_hapikeys == 0,
            ),
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
                problems.add(key, "must be greater than 0");
            }
        }
    }
}

impl IdentityConfig {
    pub(crate) fn warnings(&self, problems: &mut Problems) {
        if self.v1_introspection {
            problems.add(
                "identity.v1_introspection",
                format!(
                    "OAuth tokens no [[apps]] entry knows are looked up with GET \
                     /oauth/v1/access-tokens, which HubSpot switches off on {V1_OAUTH_SUNSET}; \
                     list every OAuth app in [[apps]] and set v1_introspection = false"
                ),
            );
        }
    }
}

/// Checks `[[credentials]]`: each entry names its token exactly once, a hash is 64 hex
/// characters, and no token is given two owners. Keys look like `credentials.0.token`.
pub(crate) fn check_credentials(credentials: &[StaticCredential], problems: &mut Problems) {
    let mut seen: HashMap<[u8; 32], (usize, (u64, u64))> = HashMap::new();
    for (i, c) in credentials.iter().enumerate() {
        let key = match credential_digest(c) {
            Ok(key) => key,
            Err((field, message)) => {
                problems.add(format!("credentials.{i}.{field}"), message);
                continue;
            }
        };
        let owner = (c.app_id, c.portal_id);
        match seen.get(&key) {
            Some((first, other)) if *other != owner => problems.add(
                format!("credentials.{i}"),
                format!(
                    "names the same token as credentials[{first}] but owner {}:{} instead of {}:{}",
                    owner.0, owner.1, other.0, other.1
                ),
            ),
            Some(_) => {}
            None => {
                seen.insert(key, (i, owner));
            }
        }
    }
}

/// The SHA-256 of one static credential's token (what the identity cache is keyed by), or
/// (field, message) saying what is wrong with the entry.
pub fn credential_digest(c: &StaticCredential) -> Result<[u8; 32], (&'static str, String)> {
    match (&c.token, &c.token_sha256) {
        (Some(token), None) if token.is_empty() => Err(("token", "must not be empty".into())),
        (Some(token), None) => Ok(Sha256::digest(token.as_bytes()).into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_keys(credentials: &[StaticCredential]) -> Vec<String> {
        let mut problems = Problems::default();
        check_credentials(credentials, &mut problems);
        problems.into_vec().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn static_credentials_are_checked() {
        let c = |token: Option<&str>, hash: Option<&str>| StaticCredential {
            token: token.map(str::to_string),
            token_sha256: hash.map(str::to_string),
            app_id: 1,
            portal_id: 2,
        };
        let good = hex::encode(Sha256::digest(b"t"));
        assert!(problem_keys(&[c(Some("t"), None), c(None, Some(&good))]).is_empty());
        let keys = problem_keys(&[
            c(None, None),
            c(Some("t"), Some(&good)),
            c(None, Some("abc")),
            c(None, Some(&"zz".repeat(32))),
            c(Some(""), None),
        ]);
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
        assert_eq!(problem_keys(&[c(Some("t"), None), other]).len(), 1);
    }
}
