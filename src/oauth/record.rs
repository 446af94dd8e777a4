//! An install as it is stored: everything but its version, as JSON sealed under the
//! secret key, named by its key so a record cannot be moved to another install's place.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::install::{Install, InstallKey, InstallStatus, Secret};
use super::seal::SecretKey;

/// The sealed fields, in clear only inside this module and wiped when dropped.
#[derive(Serialize, Deserialize)]
struct Plain {
    scopes: Vec<String>,
    status: String,
    refresh_token: String,
    access_token: Option<String>,
    access_expires_at_unix_ms: i64,
    updated_at_unix_ms: i64,
}

impl Drop for Plain {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.refresh_token.zeroize();
        if let Some(token) = self.access_token.as_mut() {
            token.zeroize();
        }
    }
}

/// What the AEAD binds a record to: the install it belongs to.
fn aad(key: InstallKey) -> Vec<u8> {
    format!("hubgate-install:{}:{}", key.app_id, key.hub_id).into_bytes()
}

/// `install`'s record, sealed with `secret` (its version is stored beside it, in clear).
pub(crate) fn seal(secret: &SecretKey, install: &Install) -> Vec<u8> {
    let plain = Plain {
        scopes: install.scopes.clone(),
        status: install.status.as_str().into(),
        refresh_token: install.refresh_token.expose().into(),
        access_token: install.access_token.as_ref().map(|t| t.expose().into()),
        access_expires_at_unix_ms: install.access_expires_at_unix_ms,
        updated_at_unix_ms: install.updated_at_unix_ms,
    };
    let json = Zeroizing::new(serde_json::to_vec(&plain).expect("plain fields serialize"));
    secret.seal(&aad(install.key), &json)
}

/// The install `key`'s sealed record holds, at `version`.
pub(crate) fn open(
    secret: &SecretKey,
    key: InstallKey,
    version: u64,
    blob: &[u8],
) -> anyhow::Result<Install> {
    let json = secret
        .open(&aad(key), blob)
        .map_err(|e| anyhow::anyhow!("the stored install {key} cannot be read: {e}"))?;
    // serde_json's error would quote the value it choked on, which may be a token.
    let plain: Plain = serde_json::from_slice(&json)
        .map_err(|_| anyhow::anyhow!("the stored install {key} is not a record hubgate wrote"))?;
    let status = InstallStatus::parse(&plain.status)
        .ok_or_else(|| anyhow::anyhow!("the stored install {key} has an unknown status"))?;
    Ok(Install {
        key,
        scopes: plain.scopes.clone(),
        status,
        refresh_token: Secret::new(plain.refresh_token.clone()),
        access_token: plain.access_token.clone().map(Secret::new),
        access_expires_at_unix_ms: plain.access_expires_at_unix_ms,
        updated_at_unix_ms: plain.updated_at_unix_ms,
        version,
    })
}
