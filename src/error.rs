//! Every error hubgate itself answers with, and the one place that turns it into a
//! HubSpot-shaped JSON response.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{self, Body};
use crate::outcome::Outcome;

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
    #[error("{0}")]
    BadRequest(String),
    #[error("could not connect to the upstream {upstream}: {reason}; check [upstream] base_url and that HubSpot is reachable, then retry")]
    UpstreamConnect { upstream: String, reason: String },
    #[error("the upstream {upstream} failed before answering ({reason}); the call may or may not have been processed")]
    UpstreamFailed { upstream: String, reason: String },
    #[error("the upstream {upstream} did not answer within {timeout_ms} ms ([upstream] response_timeout_ms); the call may or may not have been processed")]
    UpstreamTimeout { upstream: String, timeout_ms: u64 },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::NotAForwardProxy { .. } => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::UpstreamConnect { .. } | GatewayError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// HubSpot's `category` field, so SDK error handlers that switch on it keep working.
    pub fn category(&self) -> &'static str {
        match self {
            GatewayError::ConnectRefused
            | GatewayError::NotAForwardProxy { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BadRequest(_) => "VALIDATION_ERROR",
            GatewayError::UpstreamConnect { .. } | GatewayError::UpstreamFailed { .. } => {
                "HUBGATE_UPSTREAM_UNAVAILABLE"
            }
            GatewayError::UpstreamTimeout { .. } => "HUBGATE_UPSTREAM_TIMEOUT",
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamFailed { .. }
            | GatewayError::UpstreamTimeout { .. } => Outcome::UpstreamError,
            _ => Outcome::BadRequest,
        }
    }

    /// The response a caller sees; `request_id` becomes HubSpot's `correlationId`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct HubSpotError<'a> {
            status: &'static str,
            message: String,
            category: &'static str,
            correlation_id: &'a str,
        }
        let payload = HubSpotError {
            status: "error",
            message: self.to_string(),
            category: self.category(),
            correlation_id: request_id,
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
        response.extensions_mut().insert(self.outcome());
        response
    }
}
