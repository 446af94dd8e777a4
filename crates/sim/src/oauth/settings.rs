//! The OAuth apps the simulator knows and the settings of its token endpoint (lifetimes,
//! rotation, the v1 switch, the endpoint's own limit and injected failures).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the simulator's generated apps send the browser back to.
pub const GENERATED_REDIRECT_URI: &str = "http://127.0.0.1/oauth/callback";

/// One OAuth app, from `[[apps]]` (or generated with `generate_tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimApp {
    pub app_id: u64,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default = "generated_redirect_uri")]
    pub redirect_uri: String,
    /// Scopes granted when an install names none.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn generated_redirect_uri() -> String {
    GENERATED_REDIRECT_URI.to_string()
}

impl SimApp {
    /// The app of `oauth-sim-<i>` (app id `app_id`): client `sim-client-<app_id>`, secret
    /// `sim-secret-<app_id>`.
    pub fn generated(app_id: u64) -> SimApp {
        SimApp {
            app_id,
            client_id: format!("sim-client-{app_id}"),
            client_secret: format!("sim-secret-{app_id}"),
            redirect_uri: generated_redirect_uri(),
            scopes: Vec::new(),
        }
    }
}

/// How the token endpoint behaves; `[oauth]` in the config, `/__sim/oauth` at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthSettings {
    /// Seconds an issued access token lives.
    pub access_token_lifetime_s: u64,
    /// Seconds an authorization code may wait to be redeemed.
    pub code_lifetime_s: u64,
    /// Each refresh answers a new refresh token and invalidates the redeemed one.
    pub rotate_refresh_tokens: bool,
    /// Whether the `/oauth/v1/...` routes still answer (HubSpot: until 2027-02-16).
    pub v1_oauth: bool,
    /// Token endpoint calls per `token_rate_window_ms`, all together; 0 is unlimited.
    pub token_rate_limit: u32,
    pub token_rate_window_ms: u64,
    /// How long the token endpoint takes to answer; refreshes are in flight that long.
    pub token_latency_ms: u64,
    /// Probability (0..=1) that a token endpoint call answers a 5xx.
    pub token_error_rate: f64,
    /// The next N token endpoint calls answer 503.
    pub token_fail_next: u32,
}

impl Default for OauthSettings {
    fn default() -> Self {
        OauthSettings {
            access_token_lifetime_s: 1800,
            code_lifetime_s: 60,
            rotate_refresh_tokens: false,
            v1_oauth: true,
            token_rate_limit: 0,
            token_rate_window_ms: 10_000,
            token_latency_ms: 0,
            token_error_rate: 0.0,
            token_fail_next: 0,
        }
    }
}

impl OauthSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.token_error_rate),
            "oauth.token_error_rate must be within 0..=1"
        );
        anyhow::ensure!(
            self.token_rate_window_ms > 0,
            "oauth.token_rate_window_ms must be > 0"
        );
        anyhow::ensure!(
            self.access_token_lifetime_s > 0,
            "oauth.access_token_lifetime_s must be > 0"
        );
        Ok(())
    }

    /// These settings with the keys of the JSON object `patch` replaced, checked.
    pub(crate) fn patched(&self, patch: &Value) -> anyhow::Result<OauthSettings> {
        let Value::Object(changes) = patch else {
            anyhow::bail!("the body must be a JSON object of settings");
        };
        let mut merged = serde_json::to_value(self)?;
        if let Value::Object(current) = &mut merged {
            for (k, v) in changes {
                current.insert(k.clone(), v.clone());
            }
        }
        let next: OauthSettings = serde_json::from_value(merged)?;
        next.validate()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_changes_only_the_keys_it_names() {
        let base = OauthSettings::default();
        let next = base
            .patched(&serde_json::json!({"rotate_refresh_tokens": true}))
            .expect("valid");
        assert!(next.rotate_refresh_tokens);
        assert_eq!(next.access_token_lifetime_s, 1800);
        assert!(base.patched(&serde_json::json!({"nope": 1})).is_err());
        assert!(base
            .patched(&serde_json::json!({"token_error_rate": 2.0}))
            .is_err());
        assert!(base.patched(&serde_json::json!([1])).is_err());
    }
}
