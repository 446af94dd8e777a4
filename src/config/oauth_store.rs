//! `[oauth]`: where OAuth installs persist on disk, where the key that seals them at rest
//! comes from (the store's keys), and where the install flow sends a browser to consent
//! (the broker's).

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
    /// Where `GET /oauth/install/{app_id}` redirects (HubSpot's consent screen; tests point
    /// it at the simulator).
    pub authorize_url: String,
}

/// HubSpot's consent screen.
const DEFAULT_AUTHORIZE_URL: &str = "https://app.hubspot.com/oauth/authorize";

impl Default for OAuthStoreConfig {
    fn default() -> Self {
        OAuthStoreConfig {
            store_path: "hubgate-installs.redb".into(),
            key_file: String::new(),
            authorize_url: DEFAULT_AUTHORIZE_URL.into(),
        }
    }
}

impl OAuthStoreConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        let url = self.authorize_url.as_str();
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' ') {
            problems.add(
                "oauth.authorize_url",
                "must be an http(s) URL, e.g. https://app.hubspot.com/oauth/authorize",
            );
        }
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
