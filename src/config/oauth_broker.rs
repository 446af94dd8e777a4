//! `[oauth]`'s broker keys: where the install flow sends a browser to consent.

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// HubSpot's consent screen.
const DEFAULT_AUTHORIZE_URL: &str = "https://app.hubspot.com/oauth/authorize";

/// The `[oauth]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct OAuthConfig {
    /// Where `GET /oauth/install/{app_id}` redirects (HubSpot's consent screen; tests point
    /// it at the simulator).
    pub authorize_url: String,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            authorize_url: DEFAULT_AUTHORIZE_URL.into(),
        }
    }
}

impl OAuthConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        let url = self.authorize_url.as_str();
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' ') {
            problems.add(
                "oauth.authorize_url",
                "must be an http(s) URL, e.g. https://app.hubspot.com/oauth/authorize",
            );
        }
    }
}
