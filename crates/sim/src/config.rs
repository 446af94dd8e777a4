//! Simulator configuration: the TOML file shape, its defaults, and the token registry it yields.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::faults::Faults;
use super::oauth::{OauthSettings, SimApp};
use super::outside::OutsideConfig;

/// Everything the simulator can be told at start-up. Every limit is data, never a constant,
/// because HubSpot's own numbers vary per tier and change over time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Requests per (app, portal) per rolling burst window.
    pub burst_limit: u32,
    pub burst_window_ms: u64,
    /// CRM search requests per portal per rolling search window.
    pub search_limit: u32,
    pub search_window_ms: u64,
    /// Requests per portal per day for private-app tokens; 0 disables the daily limit.
    pub daily_limit: u64,
    /// Shift of the daily reset from UTC midnight, so a portal's local midnight can be modelled.
    pub daily_reset_utc_offset_ms: i64,
    /// `expires_in` reported by OAuth introspection.
    pub access_token_expires_in: u64,
    /// Adds `pat-na1-sim-<i>` and `oauth-sim-<i>` for i in 1..=N (see the module docs).
    pub generate_tokens: u32,
    pub tokens: Vec<TokenConfig>,
    pub hapikeys: Vec<HapiKeyConfig>,
    /// Paths exempt from some windows; defaults to `default_exempt()` (see docs/hubspot.md).
    pub exempt: Vec<ExemptRule>,
    pub faults: Faults,
    /// Outside consumers active from start-up.
    pub outside: Vec<OutsideConfig>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Largest request body an API route buffers; echo streams and is not bounded by it.
    pub max_body_bytes: usize,
    /// OAuth apps of the token endpoints; `generate_tokens` adds the generated tokens' apps.
    pub apps: Vec<SimApp>,
    /// How the token endpoints behave.
    pub oauth: OauthSettings,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            burst_limit: 100,
            burst_window_ms: 10_000,
            search_limit: 5,
            search_window_ms: 1_000,
            daily_limit: 250_000,
            daily_reset_utc_offset_ms: 0,
            access_token_expires_in: 1800,
            generate_tokens: 0,
            tokens: Vec::new(),
            hapikeys: Vec::new(),
            exempt: default_exempt(),
            faults: Faults::default(),
            outside: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            max_body_bytes: 32 * 1024 * 1024,
            apps: Vec::new(),
            oauth: OauthSettings::default(),
        }
    }
}

impl SimConfig {
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading simulator config {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let cfg: SimConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.burst_window_ms > 0, "burst_window_ms must be > 0");
        anyhow::ensure!(self.search_window_ms > 0, "search_window_ms must be > 0");
        self.faults.validate()?;
        for o in &self.outside {
            o.validate()?;
        }
        anyhow::ensure!(
            self.tls_cert_file.is_some() == self.tls_key_file.is_some(),
            "tls_cert_file and tls_key_file must be given together"
        );
        self.oauth.validate()?;
        let apps = self.app_registry();
        for (i, app) in apps.iter().enumerate() {
            anyhow::ensure!(
                !apps[..i].iter().any(|a| a.client_id == app.client_id),
                "apps: client_id {} is given twice",
                app.client_id
            );
        }
        Ok(())
    }

    /// All OAuth apps: the generated tokens' (`sim-client-<app_id>`), then `[[apps]]`, which
    /// replace generated ones of the same app id.
    pub(crate) fn app_registry(&self) -> Vec<SimApp> {
        let mut apps: Vec<SimApp> = (1..=u64::from(self.generate_tokens))
            .map(|i| SimApp::generated(3000 + i))
            .filter(|g| !self.apps.iter().any(|a| a.app_id == g.app_id))
            .collect();
        apps.extend(self.apps.iter().cloned());
        apps
    }

    /// All known credentials, configured ones winning over generated ones with the same name.
    pub(crate) fn token_registry(&self) -> HashMap<String, TokenConfig> {
        let mut map = HashMap::new();
        for t in generated_tokens(self.generate_tokens) {
            map.insert(t.token.clone(), t);
        }
        for t in &self.tokens {
            map.insert(t.token.clone(), t.clone());
        }
        map
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    #[default]
    Private,
    Oauth,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub app_id: u64,
    pub portal_id: u64,
    #[serde(default)]
    pub kind: TokenKind,
    pub burst_limit: Option<u32>,
    pub daily_limit: Option<u64>,
    pub hub_domain: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub user: Option<String>,
    pub user_id: Option<u64>,
}

impl TokenConfig {
    pub(crate) fn hub_domain(&self) -> String {
        self.hub_domain
            .clone()
            .unwrap_or_else(|| format!("sim-portal-{}.hubspot.com", self.portal_id))
    }

    pub(crate) fn scopes(&self) -> Vec<String> {
        self.scopes.clone().unwrap_or_else(|| {
            [
                "oauth",
                "crm.objects.contacts.read",
                "crm.objects.contacts.write",
                "crm.objects.companies.read",
                "crm.objects.companies.write",
                "crm.objects.deals.read",
                "crm.objects.deals.write",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
    }

    pub(crate) fn user(&self) -> String {
        self.user
            .clone()
            .unwrap_or_else(|| format!("sim-user-{}@example.com", self.portal_id))
    }

    pub(crate) fn user_id(&self) -> u64 {
        self.user_id.unwrap_or(5_000_000 + self.portal_id)
    }
}

/// Legacy developer API keys (`?hapikey=`); they behave like a private app of `app_id` in `portal_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HapiKeyConfig {
    pub key: String,
    pub portal_id: u64,
    #[serde(default)]
    pub app_id: u64,
}

/// One exempt path pattern. Segments match literally, `*` matches one segment and a final
/// `**` matches any remainder (including nothing).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptRule {
    /// HTTP method, or none for every method.
    pub method: Option<String>,
    pub path: String,
    /// Also exempt from the daily limit (the burst window is always exempted).
    #[serde(default)]
    pub daily: bool,
}

impl ExemptRule {
    pub(crate) fn matches(&self, method: &str, segments: &[&str]) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        let pat: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut i = 0;
        for (pi, p) in pat.iter().enumerate() {
            if *p == "**" && pi == pat.len() - 1 {
                return true;
            }
            match segments.get(i) {
                Some(s) if *p == "*" || p == s => i += 1,
                _ => return false,
            }
        }
        i == segments.len()
    }
}

fn rule(method: Option<&str>, path: &str, daily: bool) -> ExemptRule {
    ExemptRule {
        method: method.map(str::to_string),
        path: path.to_string(),
        daily,
    }
}

/// The exemptions HubSpot's specs declare (`x-hubspot-rate-limit-exemptions`).
pub fn default_exempt() -> Vec<ExemptRule> {
    vec![
        rule(None, "/crm/v4/associations/*/*/batch/**", false),
        rule(None, "/crm/v3/associations/*/*/batch/**", false),
        rule(None, "/crm/v4/associations/*/*/labels/**", false),
        rule(None, "/crm/v3/associations/*/*/types/**", false),
        rule(None, "/crm/v4/associations/definitions/**", false),
        rule(None, "/cms/v3/source-code/**", false),
        rule(None, "/marketing/v3/emails/*/publish", false),
        rule(None, "/marketing/v3/emails/*/unpublish", false),
        rule(Some("POST"), "/automation/v4/flows", false),
        rule(None, "/events/v3/send/**", true),
        rule(None, "/marketing/v3/transactional/single-email/send", true),
        rule(None, "/marketing/v4/email/single-send", true),
        rule(None, "/webhooks-journal/**", true),
    ]
}

/// For i in 1..=n: `pat-na1-sim-<i>` is private app 2000+i and `oauth-sim-<i>` is OAuth app
/// 3000+i, both installed in portal 1000+i. Distinct apps keep their burst budgets apart while
/// sharing the portal's search and daily budgets, as HubSpot does.
pub fn generated_tokens(n: u32) -> Vec<TokenConfig> {
    let mut out = Vec::with_capacity(n as usize * 2);
    for i in 1..=u64::from(n) {
        let base = TokenConfig {
            token: format!("pat-na1-sim-{i}"),
            app_id: 2000 + i,
            portal_id: 1000 + i,
            kind: TokenKind::Private,
            burst_limit: None,
            daily_limit: None,
            hub_domain: None,
            scopes: None,
            user: None,
            user_id: None,
        };
        out.push(TokenConfig {
            token: format!("oauth-sim-{i}"),
            app_id: 3000 + i,
            kind: TokenKind::Oauth,
            ..base.clone()
        });
        out.push(base);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exempt_patterns() {
        let r = rule(None, "/crm/v4/associations/*/*/batch/**", false);
        assert!(r.matches(
            "POST",
            &[
                "crm",
                "v4",
                "associations",
                "contacts",
                "companies",
                "batch",
                "create"
            ]
        ));
        assert!(!r.matches("POST", &["crm", "v4", "associations", "contacts"]));
        let r = rule(Some("POST"), "/automation/v4/flows", false);
        assert!(r.matches("post", &["automation", "v4", "flows"]));
        assert!(!r.matches("GET", &["automation", "v4", "flows"]));
        assert!(!r.matches("POST", &["automation", "v4", "flows", "1"]));
    }

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let cfg = SimConfig::from_toml_str(
            r#"
            burst_limit = 10
            generate_tokens = 2
            [[tokens]]
            token = "pat-na1-x"
            app_id = 1
            portal_id = 2
            daily_limit = 5
            [faults]
            error_rate = 0.5
            "#,
        )
        .expect("valid config");
        assert_eq!(cfg.burst_limit, 10);
        assert_eq!(cfg.search_limit, 5);
        assert_eq!(cfg.token_registry().len(), 5);
        assert!(SimConfig::from_toml_str("bogus = 1").is_err());
        let oauth = SimConfig::from_toml_str(
            r#"
            generate_tokens = 1
            [[apps]]
            app_id = 77
            client_id = "c77"
            client_secret = "s77"
            [oauth]
            rotate_refresh_tokens = true
            v1_oauth = false
            "#,
        )
        .expect("valid OAuth config");
        assert!(oauth.oauth.rotate_refresh_tokens && !oauth.oauth.v1_oauth);
        let apps: Vec<u64> = oauth.app_registry().iter().map(|a| a.app_id).collect();
        assert_eq!(apps, [3001, 77]);
        assert_eq!(
            oauth.apps[0].redirect_uri,
            crate::oauth::GENERATED_REDIRECT_URI
        );
        assert!(SimConfig::from_toml_str("[oauth]\ntoken_error_rate = 3.0").is_err());
        let twice = "[[apps]]\napp_id = 1\nclient_id = \"c\"\nclient_secret = \"s\"\n\
                     [[apps]]\napp_id = 2\nclient_id = \"c\"\nclient_secret = \"s\"\n";
        assert!(SimConfig::from_toml_str(twice).is_err());
        assert!(SimConfig::from_toml_str("[faults]\nerror_rate = 2.0").is_err());
    }
}
