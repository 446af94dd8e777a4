//! Request dispatch: `/__sim/*` to the control routes, everything else through the API
//! pipeline: transit latency, the arrival queue, accounting at arrival (introspection,
//! credentials, the rate-limit decision), answer latency, the drop/5xx roll, then the answer
//! (introspection and the OAuth server, 401, 429 or the CRM).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::auth::{authenticate, Authenticated};
use super::control::sim_route;
use super::introspection::{count_introspection, expired_token, introspect};
use super::rate_limit_answers::{set_rate_headers, too_many_requests};
use super::state::Shared;
use crate::clock::unix_ms;
use crate::crm::{self, Reply};
use crate::faults::{FaultOutcome, Faults};
use crate::http_util::{
    correlation_id, empty_response, hs_error, json_response, read_body, segments, set_header, Body,
};
use crate::limits::{BudgetClass, Caller, Counter, Decision};

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
pub(super) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    if req.uri().path().starts_with("/__sim/") || req.uri().path() == "/__sim" {
        return Ok(sim_route(&shared, req).await);
    }
    api_route(&shared, req).await
}

/// What accounting decided before faults and the actual answer are applied.
enum Plan {
    Introspection,
    Unauthorized,
    Expired(std::time::Duration),
    Api { caller: Caller, decision: Decision },
}

async fn api_route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let corr = correlation_id();
    shared.limiter.count(Counter::Request);
    let path = req.uri().path().to_string();
    let raw_segments = segments(&path);
    let method = req.method().as_str().to_string();
    // One snapshot, so a change of faults mid-request cannot give it half of each.
    let faults = shared.faults();

    // Still on its way to HubSpot: nothing has seen this request yet.
    if let Some(d) = faults.delay() {
        tokio::time::sleep(d).await;
    }
    let (plan, unix_ms) = {
        let _turn = shared.arrival_turn(faults.arrival_service()).await;
        // Arrival: accounted before the fault roll, so faulted requests count too.
        let arrived = Instant::now();
        let unix_ms = unix_ms();
        let plan = if raw_segments.first() == Some(&"oauth") {
            count_introspection(shared, &req, &raw_segments);
            Plan::Introspection
        } else {
            match authenticate(shared, &req) {
                Authenticated::Unknown => {
                    shared.limiter.count(Counter::Unauthorized);
                    Plan::Unauthorized
                }
                Authenticated::Expired(ago) => {
                    shared.limiter.count(Counter::Unauthorized);
                    Plan::Expired(ago)
                }
                Authenticated::Caller(caller) => {
                    let norm = crm::normalize(&raw_segments);
                    let class = classify(shared, &method, &raw_segments, &norm);
                    let decision = shared.limiter.check(&caller, class, arrived, unix_ms);
                    Plan::Api { caller, decision }
                }
            }
        };
        (plan, unix_ms)
    };
    if let Some(d) = faults.answer_delay() {
        tokio::time::sleep(d).await;
    }
    if let Some(resp) = roll_faults(shared, &faults, &corr)? {
        return Ok(resp);
    }

    let mut resp = match plan {
        Plan::Introspection => introspect(shared, req, &raw_segments, &corr).await,
        Plan::Unauthorized => json_response(
            401,
            &hs_error(
                &corr,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION",
            ),
        ),
        Plan::Expired(ago) => expired_token(ago, &corr),
        Plan::Api { caller, decision } => {
            let mut resp = match decision.rejected {
                Some(p) => too_many_requests(&caller, p, &corr),
                None => {
                    let norm = crm::normalize(&raw_segments);
                    serve_api(shared, req, &caller, &method, &norm, &corr, unix_ms).await
                }
            };
            if let Some(h) = decision.headers {
                set_rate_headers(&mut resp, &h);
            }
            resp
        }
    };
    set_header(&mut resp, "x-hubspot-correlation-id", &corr);
    Ok(resp)
}

/// Rolls for a drop (`Err`) or a HubSpot-shaped 5xx (`Ok(Some)`); `Ok(None)` lets the real
/// answer through.
fn roll_faults(
    shared: &Shared,
    faults: &Faults,
    corr: &str,
) -> Result<Option<Response<Body>>, Dropped> {
    match faults.roll() {
        FaultOutcome::Pass => Ok(None),
        FaultOutcome::Drop => {
            shared.limiter.count(Counter::FaultDrop);
            Err(Dropped)
        }
        FaultOutcome::Error(code) => {
            shared.limiter.count(Counter::FaultError);
            let msg = match code {
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                504 => "Gateway Timeout",
                _ => "Internal Server Error",
            };
            let mut resp = json_response(code, &hs_error(corr, msg, "INTERNAL_ERROR"));
            set_header(&mut resp, "x-hubspot-correlation-id", corr);
            Ok(Some(resp))
        }
    }
}

/// Searches have their own per-portal window; exempt rules match the path as sent, because
/// HubSpot's exemptions name concrete (not date-versioned) paths.
fn classify(shared: &Shared, method: &str, raw: &[&str], norm: &[&str]) -> BudgetClass {
    if method == "POST" && matches!(norm, ["crm", "v3", "objects", _, "search"]) {
        return BudgetClass::Search;
    }
    match shared.exempt.iter().find(|r| r.matches(method, raw)) {
        Some(r) => BudgetClass::Exempt { daily: r.daily },
        None => BudgetClass::Normal,
    }
}

/// Answers an accepted API call: the events endpoints are accepted and dropped, everything
/// else goes to the CRM, and unknown paths get HubSpot's 404.
async fn serve_api(
    shared: &Shared,
    req: Request<Incoming>,
    caller: &Caller,
    method: &str,
    norm: &[&str],
    corr: &str,
    unix_ms: i64,
) -> Response<Body> {
    let query = req.uri().query().map(str::to_string);
    let body = match read_body(req, shared.config.max_body_bytes, corr).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if method == "POST"
        && matches!(
            norm,
            ["events", "v3", "send"] | ["events", "v3", "send", "batch"]
        )
    {
        return empty_response(204);
    }
    let r = crm::Req {
        portal: caller.portal_id,
        method,
        segments: norm,
        query: query.as_deref(),
        body: &body,
        corr,
        now_ms: unix_ms,
    };
    let reply = shared
        .crm
        .handle(&r)
        .unwrap_or_else(|| Reply::route_not_found(corr, method, norm));
    match reply.body {
        Some(b) => json_response(reply.status, &b),
        None => empty_response(reply.status),
    }
}
