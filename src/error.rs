//! Every error hubgate itself answers with, and the one place that turns it into a
//! HubSpot-shaped JSON response.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{self, Body};
use crate::callers::KeyProblem;
use crate::outcome::Outcome;

/// What a caller refused for its key must do about it. The key itself is never echoed.
fn unauthorized_message(header: &str, problem: KeyProblem) -> String {
    let what = match problem {
        KeyProblem::Missing => format!("this call has no {header} header"),
        KeyProblem::Repeated => format!("this call has more than one {header} header"),
        KeyProblem::Unknown => format!("the key in {header} is not one this hubgate knows"),
    };
    format!("{what}: this hubgate requires a caller key ([inbound] require_caller_key); send exactly one {header} header with your caller key, or ask the gateway's operator to add the key's SHA-256 (hubgate hash-key) to your [[callers]] entry as key_sha256")
}

/// A reason hubgate answers a call itself instead of (or after) forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("hubgate forwards HubSpot API calls only and refuses CONNECT tunnels; send the request to hubgate's base URL with a path, e.g. GET /crm/v3/objects/contacts")]
    ConnectRefused,
    #[error("hubgate is not a forward proxy: the absolute-form target for host '{host}' is refused; send origin-form requests (just the path, e.g. /crm/v3/objects/contacts) to hubgate's base URL")]
    NotAForwardProxy { host: String },
    #[error("request headers take {size} bytes, more than the {max} bytes hubgate accepts ([server] max_header_bytes); send fewer or smaller headers")]
    HeadersTooLarge { size: usize, max: usize },
    #[error("request body is larger than the {max} bytes hubgate accepts ([server] max_body_bytes); send a smaller body or raise the limit")]
    BodyTooLarge { max: u64 },
    #[error("the request body stopped: no bytes arrived for {idle_ms} ms ([server] body_idle_timeout_ms); send the body without long pauses, then retry")]
    RequestBodyStalled { idle_ms: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", unauthorized_message(header, *problem))]
    Unauthorized {
        /// The key header as configured (`[inbound] key_header`).
        header: String,
        problem: KeyProblem,
    },
    #[error("could not connect to the upstream {upstream}: {reason}; check [upstream] base_url and that HubSpot is reachable, then retry")]
    UpstreamConnect { upstream: String, reason: String },
    #[error("the TLS handshake with the upstream {upstream} failed ({reason}); nothing was sent. Check that it serves a certificate hubgate trusts (webpki roots or [upstream] ca_file) and speaks TLS on that port")]
    UpstreamTls { upstream: String, reason: String },
    #[error("the upstream {upstream} failed before answering ({reason}); the call may or may not have been processed")]
    UpstreamFailed { upstream: String, reason: String },
    #[error("the upstream {upstream} did not answer within {timeout_ms} ms ([upstream] response_timeout_ms); the call may or may not have been processed")]
    UpstreamTimeout { upstream: String, timeout_ms: u64 },
    #[error("hubgate's queue for owner {owner} is full ({depth} calls waiting, [queue] max_depth_per_owner); retry after {} ms or send fewer calls at once", .retry_after.as_millis())]
    QueueFull {
        owner: String,
        depth: usize,
        retry_after: Duration,
    },
    #[error("this call would wait about {} ms for owner {owner}'s HubSpot budget, longer than its deadline of {} ms (X-Hubgate-Deadline-Ms or [queue] max_wait_ms); retry after {} ms or allow a longer deadline", .estimate.as_millis(), .deadline.as_millis(), .estimate.as_millis())]
    DeadlineUnmeetable {
        owner: String,
        estimate: Duration,
        deadline: Duration,
    },
    #[error("this call waited {} ms for owner {owner}'s HubSpot budget and its deadline passed (X-Hubgate-Deadline-Ms or [queue] max_wait_ms); retry after {} ms or allow a longer deadline", .waited.as_millis(), .retry_after.as_millis())]
    DeadlineExpired {
        owner: String,
        waited: Duration,
        retry_after: Duration,
    },
    #[error("caller '{caller}' is over its cap of calls per second ([[callers]] max_rps); retry after {} ms or slow down", .retry_after.as_millis())]
    CallerCapped {
        caller: String,
        retry_after: Duration,
    },
    #[error("You have reached your daily limit. hubgate answered for HubSpot: portal {portal} has no daily calls left until {resets_at}; retry after the reset")]
    DailyExhausted {
        owner: String,
        portal: String,
        resets_at: String,
        retry_after: Duration,
    },
    #[error("hubgate cannot reach the shared budget store (Redis) and is configured to refuse calls meanwhile ([store] on_failure = \"fail_closed\"); nothing was sent to HubSpot, retry shortly")]
    StoreUnavailable { owner: String },
}

/// When and whether a caller should try again, as `Retry-After`, `retry-after-ms` and
/// `x-should-retry` (which the new `hubspot-sdk` clients obey).
struct RetryHint {
    after: Duration,
    should_retry: bool,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::NotAForwardProxy { .. } => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestBodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::QueueFull { .. } | GatewayError::StoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::DeadlineUnmeetable { .. }
            | GatewayError::DeadlineExpired { .. }
            | GatewayError::DailyExhausted { .. }
            | GatewayError::CallerCapped { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// HubSpot's `policyName` for refusals that stand in for a 429.
    fn policy_name(&self) -> Option<&'static str> {
        match self {
            GatewayError::QueueFull { .. } => Some("HUBGATE_QUEUE_FULL"),
            GatewayError::DeadlineUnmeetable { .. } | GatewayError::DeadlineExpired { .. } => {
                Some("HUBGATE_DEADLINE")
            }
            GatewayError::DailyExhausted { .. } => Some("DAILY"),
            GatewayError::CallerCapped { .. } => Some("HUBGATE_CALLER_CAP"),
            _ => None,
        }
    }

    fn retry_hint(&self) -> Option<RetryHint> {
        let (after, should_retry) = match self {
            GatewayError::QueueFull { retry_after, .. }
            | GatewayError::DeadlineExpired { retry_after, .. }
            | GatewayError::CallerCapped { retry_after, .. } => (*retry_after, true),
            GatewayError::DeadlineUnmeetable { estimate, .. } => (*estimate, true),
            // The store is probed about twice a second; a second is a fair first retry.
            GatewayError::StoreUnavailable { .. } => (Duration::from_secs(1), true),
            // Hours away: an SDK's automatic retry would only spend the caller's time.
            GatewayError::DailyExhausted { retry_after, .. } => (*retry_after, false),
            _ => return None,
        };
        Some(RetryHint {
            after,
            should_retry,
        })
    }

    /// The owner a refusal speaks for, echoed as `X-Hubgate-Owner`.
    fn owner(&self) -> Option<&str> {
        match self {
            GatewayError::QueueFull { owner, .. }
            | GatewayError::DeadlineUnmeetable { owner, .. }
            | GatewayError::DeadlineExpired { owner, .. }
            | GatewayError::DailyExhausted { owner, .. }
            | GatewayError::StoreUnavailable { owner } => Some(owner),
            _ => None,
        }
    }

    /// HubSpot's `category` field, so SDK error handlers that switch on it keep working.
    pub fn category(&self) -> &'static str {
        match self {
            GatewayError::ConnectRefused
            | GatewayError::NotAForwardProxy { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::RequestBodyStalled { .. }
            | GatewayError::BadRequest(_) => "VALIDATION_ERROR",
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamFailed { .. } => "HUBGATE_UPSTREAM_UNAVAILABLE",
            GatewayError::UpstreamTimeout { .. } => "HUBGATE_UPSTREAM_TIMEOUT",
            GatewayError::Unauthorized { .. } => "HUBGATE_UNAUTHORIZED",
            GatewayError::StoreUnavailable { .. } => "HUBGATE_STORE_UNAVAILABLE",
            GatewayError::QueueFull { .. }
            | GatewayError::DeadlineUnmeetable { .. }
            | GatewayError::DeadlineExpired { .. }
            | GatewayError::DailyExhausted { .. }
            | GatewayError::CallerCapped { .. } => "RATE_LIMITS",
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamFailed { .. }
            | GatewayError::UpstreamTimeout { .. } => Outcome::UpstreamError,
            GatewayError::QueueFull { .. } => Outcome::RejectedQueueFull,
            GatewayError::DeadlineUnmeetable { .. } | GatewayError::DeadlineExpired { .. } => {
                Outcome::RejectedDeadline
            }
            GatewayError::DailyExhausted { .. } => Outcome::RejectedDaily,
            GatewayError::CallerCapped { .. } => Outcome::RejectedCap,
            GatewayError::StoreUnavailable { .. } => Outcome::RejectedStoreUnavailable,
            GatewayError::Unauthorized { .. } => Outcome::Unauthorized,
            GatewayError::ConnectRefused
            | GatewayError::NotAForwardProxy { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::RequestBodyStalled { .. }
            | GatewayError::BadRequest(_) => Outcome::BadRequest,
        }
    }

    /// The response a caller sees; `request_id` becomes HubSpot's `correlationId`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct HubSpotError<'a> {
            status: &'static str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            error_type: Option<&'static str>,
            category: &'static str,
            correlation_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            policy_name: Option<&'static str>,
        }
        let policy_name = self.policy_name();
        let payload = HubSpotError {
            status: "error",
            message: self.to_string(),
            error_type: policy_name.map(|_| "RATE_LIMIT"),
            category: self.category(),
            correlation_id: request_id,
            policy_name,
        };
        let json = serde_json::to_vec(&payload).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = Response::new(body::full(json));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        if self.status() == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if let Some(hint) = self.retry_hint() {
            let millis = hint.after.as_millis();
            let seconds = hint.after.as_secs() + u64::from(hint.after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            headers.insert(
                HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
            );
            headers.insert(
                HeaderName::from_static("x-should-retry"),
                HeaderValue::from_static(if hint.should_retry { "true" } else { "false" }),
            );
        }
        if let Some(owner) = self.owner().and_then(|o| HeaderValue::from_str(o).ok()) {
            headers.insert(HeaderName::from_static("x-hubgate-owner"), owner);
        }
        response.extensions_mut().insert(self.outcome());
        response
    }
}
