//! HTTP plumbing shared by the CRM and the server: response builders, HubSpot-shaped error
//! bodies, correlation ids, path segments and query-string decoding.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::Rng as _;
use serde_json::{json, Value};

/// Every answer's body type: boxed so that buffered JSON and streamed patterns share a type.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub(crate) fn json_response(status: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    resp
}

pub(crate) fn empty_response(status: u16) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
    resp
}

/// Sets a header from any displayable value; a value that is not a valid header is skipped
/// rather than failing the whole answer.
pub(crate) fn set_header(resp: &mut Response<Body>, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// HubSpot's generic error body.
pub(crate) fn hs_error(corr: &str, message: &str, category: &str) -> Value {
    json!({
        "status": "error",
        "message": message,
        "correlationId": corr,
        "category": category,
    })
}

/// HubSpot's answer to a path it has no route for.
pub(crate) fn route_not_found(corr: &str, method: &str, segments: &[&str]) -> Value {
    hs_error(
        corr,
        &format!(
            "Unable to route {method} request to /{}: resource not found",
            segments.join("/")
        ),
        "OBJECT_NOT_FOUND",
    )
}

/// A random UUID v4 in HubSpot's `X-HubSpot-Correlation-Id` format.
pub(crate) fn correlation_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Buffers a request body up to `max_bytes`, answering as HubSpot does when it cannot.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    max_bytes: usize,
    corr: &str,
) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), max_bytes).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            let too_big = e.is::<http_body_util::LengthLimitError>();
            let (status, msg) = if too_big {
                (413, "Request body is too large.")
            } else {
                (400, "Request body could not be read.")
            };
            Err(json_response(
                status,
                &hs_error(corr, msg, "VALIDATION_ERROR"),
            ))
        }
    }
}

/// A path's non-empty segments, so `//a/b/` and `/a/b` route alike.
pub(crate) fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Decodes `application/x-www-form-urlencoded` pairs; malformed escapes pass through verbatim.
pub(crate) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query(Some("a=1&b=x%20y+z&c=%zz&properties=a,b")),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "%zz".into()),
                ("properties".into(), "a,b".into()),
            ]
        );
    }
}
