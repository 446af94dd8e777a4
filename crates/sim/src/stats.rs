//! The counters the simulator exposes at `GET /__sim/stats` (and `Simulator::stats`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// 429s by HubSpot policy name, serialized under HubSpot's own spelling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitedCounts {
    #[serde(rename = "TEN_SECONDLY_ROLLING", default)]
    pub ten_secondly_rolling: u64,
    #[serde(rename = "SECONDLY", default)]
    pub secondly: u64,
    #[serde(rename = "DAILY", default)]
    pub daily: u64,
}

impl RateLimitedCounts {
    pub fn total(&self) -> u64 {
        self.ten_secondly_rolling + self.secondly + self.daily
    }
}

/// One burst-budget owner, i.e. one (app, portal) pair.
///
/// `arrivals`, `accepted` and the window maxima include outside-consumer traffic; `outside`
/// and `outside_rate_limited` break it out so callers can subtract it. `rate_limited` counts
/// only requests that reached the server. Searches are not burst arrivals (they are in
/// `SearchStats`), but their SECONDLY/DAILY 429s are attributed here to the caller's owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerStats {
    pub app_id: u64,
    pub portal_id: u64,
    /// The owner's burst limit (a token's own `burst_limit` or the simulator's), so readers
    /// can weigh `accepted` against what the windows allowed.
    #[serde(default)]
    pub burst_limit: u64,
    pub arrivals: u64,
    pub accepted: u64,
    pub rate_limited: RateLimitedCounts,
    pub max_arrivals_in_window: u64,
    pub max_accepted_in_window: u64,
    pub outside: u64,
    pub outside_rate_limited: u64,
    /// Calls on exempt paths: answered, but not counted in the burst window.
    pub exempt: u64,
}

/// CRM search traffic of one portal (its own rolling window).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStats {
    pub portal_id: u64,
    pub arrivals: u64,
    pub accepted: u64,
    pub rate_limited: u64,
    pub max_in_window: u64,
    pub max_accepted_in_window: u64,
}

/// Daily usage of one portal (private-app traffic only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyStats {
    pub portal_id: u64,
    pub used: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntrospectionStats {
    /// `GET /oauth/v1/access-tokens/{token}`.
    pub oauth_access_token: u64,
    /// `POST /oauth/v2/private-apps/get/access-token-info`.
    pub private_app_token_info: u64,
    /// `POST /oauth/{version}/token/introspect`.
    pub token_introspect: u64,
    pub total: u64,
    /// Calls per introspected token (as sent, known or not).
    pub by_token: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Every request on a non-`/__sim` route.
    pub requests: u64,
    /// Burst-window arrivals summed over owners (including outside traffic).
    pub arrivals: u64,
    pub accepted: u64,
    pub rate_limited: RateLimitedCounts,
    pub search_arrivals: u64,
    pub unauthorized: u64,
    pub fault_errors: u64,
    pub fault_drops: u64,
    pub outside: u64,
}

/// The window shapes every owner and portal is held to (burst limits are per owner).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLimits {
    pub burst_window_ms: u64,
    pub search_limit: u64,
    pub search_window_ms: u64,
}

/// Token endpoint calls by `grant_type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenCalls {
    pub authorization_code: u64,
    pub refresh_token: u64,
    /// Any other or no grant type.
    pub other: u64,
}

/// Token endpoint refusals by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenErrors {
    pub invalid_grant: u64,
    pub invalid_client: u64,
    /// A missing or unsupported grant type.
    pub invalid_request: u64,
    pub rate_limited: u64,
    /// `token_fail_next` and `token_error_rate`.
    pub injected: u64,
}

/// One install: an OAuth app in one portal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstallStats {
    pub app_id: u64,
    pub hub_id: u64,
    /// False once revoked.
    pub active: bool,
    /// Refresh calls presenting one of its refresh tokens, current or spent.
    pub refresh_attempts: u64,
    /// Refresh calls that succeeded.
    pub refreshes: u64,
    /// Refresh calls presenting a token rotation or revocation had invalidated.
    pub stale_refreshes: u64,
    /// Most of its refreshes in flight at once.
    pub max_concurrent_refreshes: u64,
    pub access_tokens_issued: u64,
}

impl InstallStats {
    pub(crate) fn new((app_id, hub_id): (u64, u64)) -> InstallStats {
        InstallStats {
            app_id,
            hub_id,
            active: true,
            ..InstallStats::default()
        }
    }
}

/// The OAuth server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OauthStats {
    pub token_calls: TokenCalls,
    pub token_errors: TokenErrors,
    /// Dated introspection calls (`POST /oauth/{version}/token/introspect`).
    pub introspections: u64,
    pub revocations: u64,
    /// Codes the authorize stub handed out.
    pub authorizations: u64,
    /// Most refreshes of one install in flight at once, over all installs.
    pub max_concurrent_refreshes: u64,
    pub installs: Vec<InstallStats>,
}

impl OauthStats {
    pub fn install(&self, app_id: u64, hub_id: u64) -> Option<&InstallStats> {
        self.installs
            .iter()
            .find(|i| i.app_id == app_id && i.hub_id == hub_id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    #[serde(default)]
    pub limits: SimLimits,
    pub owners: Vec<OwnerStats>,
    pub search: Vec<SearchStats>,
    pub daily: Vec<DailyStats>,
    pub introspection: IntrospectionStats,
    pub totals: Totals,
    #[serde(default)]
    pub oauth: OauthStats,
}

impl SimStats {
    pub fn owner(&self, app_id: u64, portal_id: u64) -> Option<&OwnerStats> {
        self.owners
            .iter()
            .find(|o| o.app_id == app_id && o.portal_id == portal_id)
    }

    pub fn search_portal(&self, portal_id: u64) -> Option<&SearchStats> {
        self.search.iter().find(|s| s.portal_id == portal_id)
    }
}
