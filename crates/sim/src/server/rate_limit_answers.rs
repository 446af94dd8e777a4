//! How HubSpot answers in rate-limit terms: the 429 body naming the policy and its group, and
//! the `X-HubSpot-RateLimit-*` headers on every budgeted answer.

use http::Response;
use serde_json::{json, Value};

use crate::config::TokenKind;
use crate::http_util::{json_response, set_header, Body};
use crate::limits::{Caller, LimitPolicy, RateHeaders};

pub(super) fn too_many_requests(caller: &Caller, p: LimitPolicy, corr: &str) -> Response<Body> {
    json_response(429, &rate_limit_body(caller, p, corr))
}

fn rate_limit_body(caller: &Caller, p: LimitPolicy, corr: &str) -> Value {
    let kind = match caller.kind {
        TokenKind::Private => "private-app",
        TokenKind::Oauth => "oauth",
    };
    let group = match p {
        LimitPolicy::TenSecondlyRolling => format!(
            "publicapi:{kind}-api-calls-ten-secondly:{}:{}",
            caller.app_id, caller.portal_id
        ),
        LimitPolicy::Secondly => format!(
            "publicapi:crm:search:{kind}:{}:{}",
            caller.app_id, caller.portal_id
        ),
        LimitPolicy::Daily => format!("publicapi:{kind}-api-calls-daily:{}", caller.portal_id),
    };
    json!({
        "status": "error",
        "message": p.message(),
        "errorType": "RATE_LIMIT",
        "correlationId": corr,
        "policyName": p.name(),
        "groupName": group,
    })
}

pub(super) fn set_rate_headers(resp: &mut Response<Body>, h: &RateHeaders) {
    set_header(resp, "x-hubspot-ratelimit-max", h.max);
    set_header(resp, "x-hubspot-ratelimit-remaining", h.remaining);
    set_header(
        resp,
        "x-hubspot-ratelimit-interval-milliseconds",
        h.interval_ms,
    );
    if let Some((limit, remaining)) = h.daily {
        set_header(resp, "x-hubspot-ratelimit-daily", limit);
        set_header(resp, "x-hubspot-ratelimit-daily-remaining", remaining);
    }
}
