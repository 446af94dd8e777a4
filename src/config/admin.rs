//! `[admin]`: who may change the running gateway through the admin listener.

use serde::{Deserialize, Serialize};

use super::callers::key_digest;
use super::problems::Problems;

/// The `[admin]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Hex SHA-256 of the bearer token the mutating admin endpoints (`POST /admin/reload`)
    /// require (`hubgate hash-key`); empty: no token. `/healthz`, `/readyz`, `/metrics`
    /// and the read-only views never need it.
    pub token_sha256: String,
}

impl AdminConfig {
    /// The digest a token must hash to, when one is configured.
    pub fn token_digest(&self) -> Option<[u8; 32]> {
        key_digest(&self.token_sha256)
    }

    pub(crate) fn check(&self, problems: &mut Problems) {
        if !self.token_sha256.is_empty() && self.token_digest().is_none() {
            problems.add(
                "admin.token_sha256",
                "must be 64 hex characters: the SHA-256 of the admin token, from `hubgate hash-key` (or `printf %s \"$TOKEN\" | sha256sum`); leave it empty for no token",
            );
        }
    }
}
