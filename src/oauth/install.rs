//! What an install is (its key, scopes, status and tokens), the `Secret` wrapper its
//! tokens live in, and the `InstallStore` trait every place installs live implements.

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::store::StoreFuture;

/// A token, code, client secret or key: printed and logged only as `<redacted>`, wiped
/// from memory when dropped, and with no `Serialize`, so it cannot reach JSON by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the one place that must send it (HubSpot, the AEAD).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One install of one app on one HubSpot account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstallKey {
    pub app_id: u64,
    pub hub_id: u64,
}

impl fmt::Display for InstallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.app_id, self.hub_id)
    }
}

/// Whether hubgate can still get access tokens for an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStatus {
    Active,
    /// HubSpot refused the refresh token (revoked, uninstalled): someone must install again.
    NeedsReauth,
}

impl InstallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallStatus::Active => "active",
            InstallStatus::NeedsReauth => "needs_reauth",
        }
    }

    pub fn parse(text: &str) -> Option<InstallStatus> {
        match text {
            "active" => Some(InstallStatus::Active),
            "needs_reauth" => Some(InstallStatus::NeedsReauth),
            _ => None,
        }
    }
}

/// What hubgate holds for one install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub key: InstallKey,
    pub scopes: Vec<String>,
    pub status: InstallStatus,
    pub refresh_token: Secret,
    /// The current access token, if one was fetched and is worth keeping.
    pub access_token: Option<Secret>,
    /// When `access_token` expires (unix ms); 0 without one.
    pub access_expires_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
    /// Bumped by every successful `put_if`; what its compare-and-swap compares.
    pub version: u64,
}

/// Proof of holding one install's lock, needed to release it: a random value, so a
/// holder whose lock expired cannot release the next holder's.
#[derive(Clone, PartialEq, Eq)]
pub struct LockToken(pub(crate) u128);

impl LockToken {
    pub(crate) fn random() -> LockToken {
        LockToken(rand::random())
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockToken(<redacted>)")
    }
}

/// Where installs live. See the module docs for the compare-and-swap and lock contract.
pub trait InstallStore: Send + Sync + fmt::Debug + 'static {
    fn get(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<Option<Install>>>;

    /// Every install, in key order.
    fn list(&self) -> StoreFuture<'_, anyhow::Result<Vec<Install>>>;

    /// Writes `install` as version `expected + 1` (1 for `None`) if the stored version is
    /// `expected` (`None`: if nothing is stored); `Ok(false)` when another write came first.
    /// `install.version` itself is ignored.
    fn put_if(
        &self,
        install: Install,
        expected: Option<u64>,
    ) -> StoreFuture<'_, anyhow::Result<bool>>;

    /// Forgets the install (and nothing happens if there is none).
    fn delete(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<()>>;

    /// Takes the install's lock for at most `ttl`; `None` while someone else holds it.
    fn try_lock(
        &self,
        key: InstallKey,
        ttl: Duration,
    ) -> StoreFuture<'_, anyhow::Result<Option<LockToken>>>;

    /// Releases the lock if `token` still holds it (an expired lock is left alone).
    fn unlock(&self, key: InstallKey, token: LockToken) -> StoreFuture<'_, anyhow::Result<()>>;
}
