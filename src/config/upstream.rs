//! `[upstream]`: where calls are forwarded and how the pooled client behaves, and the
//! base URL split into what the forwarder needs.

use std::path::Path;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// Where calls are forwarded and how the pooled client behaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct UpstreamConfig {
    /// HubSpot's API base URL (or the simulator's); `http://` is allowed for tests.
    pub base_url: String,
    /// Extra PEM bundle of CAs to trust besides the webpki roots; empty for none.
    pub ca_file: String,
    /// Time allowed to open a TCP (and TLS) connection to the upstream; past it: 502.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending a call until the upstream's response headers arrive,
    /// upload included; past it: 504.
    pub response_timeout_ms: u64,
    /// An upstream response body may pause at most this long once its headers came; past
    /// it the caller's response is cut off (its body ends early), so it never hangs.
    pub body_idle_timeout_ms: u64,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout_ms: u64,
    /// At most this many idle connections are kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: "https://api.hubapi.com".into(),
            ca_file: String::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 60_000,
            body_idle_timeout_ms: 30_000,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 256,
        }
    }
}

impl UpstreamConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if let Err(e) = UpstreamTarget::parse(&self.base_url) {
            problems.add("upstream.base_url", e);
        }
        if !self.ca_file.is_empty() && !Path::new(&self.ca_file).is_file() {
            problems.add(
                "upstream.ca_file",
                format!("'{}' is not a readable file", self.ca_file),
            );
        }
        for (key, value) in [
            ("upstream.connect_timeout_ms", self.connect_timeout_ms),
            ("upstream.response_timeout_ms", self.response_timeout_ms),
            ("upstream.body_idle_timeout_ms", self.body_idle_timeout_ms),
        ] {
            if value == 0 {
                problems.add(key, "must be greater than 0");
            }
        }
    }
}

/// The upstream base URL split into what the forwarder needs.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the base URL without a trailing slash (usually empty).
    pub base_path: String,
}

impl UpstreamTarget {
    pub fn parse(base_url: &str) -> Result<UpstreamTarget, String> {
        let uri: Uri = base_url.parse().map_err(|e| {
            format!("'{base_url}' is not a URL ({e}); use e.g. https://api.hubapi.com")
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            format!(
                "'{base_url}' has no scheme; use https://api.hubapi.com or http://127.0.0.1:8081"
            )
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("'{base_url}' must start with http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("'{base_url}' has no host"))?;
        if uri.query().is_some() {
            return Err(format!("'{base_url}' must not carry a query string"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamTarget {
            scheme,
            authority,
            base_path,
        })
    }

    /// The host name without port, as compared against absolute-form request targets.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    pub fn display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}
