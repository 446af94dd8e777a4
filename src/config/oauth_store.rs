//! `[oauth]`'s storage keys: where OAuth installs persist on disk, and where the key that
//! seals them at rest comes from.

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[oauth]`: where installs live and how they are sealed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct OAuthStoreConfig {
    /// The embedded database file installs persist in (with `[store] kind = "memory"`;
    /// with "redis" they live in Redis instead).
    pub store_path: String,
    /// A file holding the secret key (64 hex digits); empty: the `HUBGATE_SECRET_KEY`
    /// environment variable.
    pub key_file: String,
}

impl Default for OAuthStoreConfig {
    fn default() -> Self {
        OAuthStoreConfig {
            store_path: "hubgate-installs.redb".into(),
            key_file: String::new(),
        }
    }
}

impl OAuthStoreConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.store_path.trim().is_empty() {
            problems.add(
                "oauth.store_path",
                "must name the file installs persist in, e.g. \"/var/lib/hubgate/installs.redb\"",
            );
        } else if std::path::Path::new(&self.store_path).is_dir() {
            problems.add(
                "oauth.store_path",
                format!(
                    "'{}' is a directory; name a file in it, e.g. \"{}/installs.redb\"",
                    self.store_path,
                    self.store_path.trim_end_matches('/')
                ),
            );
        }
        if !self.key_file.is_empty() && !std::path::Path::new(&self.key_file).is_file() {
            problems.add(
                "oauth.key_file",
                format!(
                    "'{}' is not a readable file; it should hold the secret key as 64 hex digits (`openssl rand -hex 32`)",
                    self.key_file
                ),
            );
        }
    }
}
