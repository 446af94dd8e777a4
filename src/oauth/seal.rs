//! Encryption at rest: the secret key (from `HUBGATE_SECRET_KEY` or `[oauth] key_file`),
//! and sealing each install's record with XChaCha20-Poly1305 so a wrong key is an error,
//! never garbage.

use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The environment variable holding the key when `[oauth] key_file` is not set.
pub const SECRET_KEY_ENV: &str = "HUBGATE_SECRET_KEY";

/// First byte of every sealed blob: the format, so a later one can be told apart.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// What the store seals under its own name to learn, at open, whether the configured key
/// is the one its installs were written with.
const CANARY: &[u8] = b"hubgate installs: key check";
pub(crate) const CANARY_AAD: &[u8] = b"hubgate-canary";

/// The 256-bit key installs are sealed with. Printed only as `<redacted>`; wiped on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A sealed blob that the key does not open: a wrong key, or a record damaged at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("it does not decrypt with the configured secret key (a different key than it was written with, or a damaged record)")]
pub struct WrongKey;

impl SecretKey {
    /// The key written as 64 hex digits (`openssl rand -hex 32`), surrounding whitespace
    /// ignored. The error names what is wrong with the text, never the text.
    pub fn from_hex(text: &str) -> anyhow::Result<SecretKey> {
        let text = text.trim();
        if text.len() != 64 {
            anyhow::bail!(
                "the secret key must be 64 hex digits (32 bytes, e.g. from `openssl rand -hex 32`), not {} characters",
                text.len()
            );
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, &mut bytes[..]).map_err(|_| {
            anyhow::anyhow!(
                "the secret key must be 64 hex digits (0-9, a-f); it has other characters"
            )
        })?;
        Ok(SecretKey(bytes))
    }

    /// The key `[oauth] key_file` names, or else `HUBGATE_SECRET_KEY` as `env` reads it;
    /// `None` when neither is set.
    pub fn configured(
        key_file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<SecretKey>> {
        if !key_file.is_empty() {
            let text =
                Zeroizing::new(std::fs::read_to_string(Path::new(key_file)).map_err(|e| {
                    anyhow::anyhow!("[oauth] key_file: cannot read '{key_file}': {e}")
                })?);
            return SecretKey::from_hex(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("[oauth] key_file '{key_file}': {e}"));
        }
        match env(SECRET_KEY_ENV).map(Zeroizing::new) {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => SecretKey::from_hex(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{SECRET_KEY_ENV}: {e}")),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// `plaintext` encrypted and authenticated together with `aad` (what the blob is for,
    /// so a blob moved to another install's place does not open there).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        // 192-bit nonces drawn at random from the thread's CSPRNG: collisions are out of
        // reach at any number of writes, so no counter has to survive restarts.
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        blob.push(FORMAT_V1);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        blob
    }

    /// What `seal(aad, ..)` sealed, if this key sealed it for `aad`.
    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, WrongKey> {
        let (format, rest) = blob.split_first().ok_or(WrongKey)?;
        if *format != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(WrongKey);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| WrongKey)
    }

    /// The canary a store keeps, sealed with this key.
    pub(crate) fn canary(&self) -> Vec<u8> {
        self.seal(CANARY_AAD, CANARY)
    }

    /// Whether `blob` is the canary this key sealed.
    pub(crate) fn opens_canary(&self, blob: &[u8]) -> bool {
        self.open(CANARY_AAD, blob)
            .is_ok_and(|plain| plain.as_slice() == CANARY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_record_opens_only_with_its_key_and_its_name() {
        let a = SecretKey::from_hex(KEY_A).unwrap();
        let b = SecretKey::from_hex(KEY_B).unwrap();
        let blob = a.seal(b"1:2", b"refresh-token-value");
        assert!(!blob.windows(b"refresh".len()).any(|w| w == b"refresh"));
        assert_eq!(
            a.open(b"1:2", &blob).unwrap().as_slice(),
            b"refresh-token-value"
        );
        assert_eq!(b.open(b"1:2", &blob), Err(WrongKey));
        assert_eq!(a.open(b"1:3", &blob), Err(WrongKey));
        assert!(a.opens_canary(&a.canary()));
        assert!(!b.opens_canary(&a.canary()));
    }

    #[test]
    fn a_malformed_key_is_refused_without_echoing_it() {
        let error = SecretKey::from_hex("zz-not-a-key").unwrap_err().to_string();
        assert!(!error.contains("zz-not-a-key"), "{error}");
        let error = SecretKey::from_hex(&"g".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("ggg"), "{error}");
        assert!(format!("{:?}", SecretKey::from_hex(KEY_A).unwrap()).contains("redacted"));
    }
}
