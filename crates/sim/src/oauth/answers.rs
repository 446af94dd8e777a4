//! What the OAuth server answers: a grant, a refusal, and what an access token is.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the token endpoint answers on success (and `POST /__sim/oauth/install`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OauthGrant {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub token_type: String,
    pub token_use: String,
    pub hub_id: u64,
    pub app_id: u64,
    pub scopes: Vec<String>,
    pub user_id: u64,
}

/// Why the token endpoint refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// HTTP 400 with RFC 6749's `error` and HubSpot's legacy `status`.
    Grant {
        error: &'static str,
        status: &'static str,
        description: &'static str,
    },
    /// The token endpoint's own rate limit.
    RateLimited { retry_after_s: u64 },
    /// An injected failure with this 5xx status.
    Injected(u16),
}

/// What an API call's bearer token is to the OAuth server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccessLookup {
    Valid {
        app_id: u64,
        hub_id: u64,
        scopes: Vec<String>,
        expires_in: Duration,
    },
    Expired {
        ago: Duration,
    },
    Unknown,
}

/// The user an install's tokens are issued to, as configured tokens default to.
pub(crate) fn user_id(hub_id: u64) -> u64 {
    5_000_000 + hub_id
}
