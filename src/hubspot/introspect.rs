//! Asking HubSpot who owns a token: the introspection request for each token kind, and
//! what its answer says (owner and how long that holds, or that the token is not valid).
//!
//! OAuth access tokens: `GET /oauth/v1/access-tokens/{token}` answers snake_case
//! `{hub_id, app_id, expires_in, ...}`. Private-app tokens (`pat-…`):
//! `POST /oauth/v2/private-apps/get/access-token-info` with `{"tokenKey": …}` answers
//! camelCase `{hubId, appId, ...}` and never expires. Sources: docs/hubspot.md.

use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Limited};
use serde::Deserialize;

use super::{Owner, TokenKind};
use crate::config::UpstreamTarget;
use crate::proxy::body::{self, Body};

/// OAuth tokens live 30 minutes; an answer claiming far more is not trusted for longer.
pub(crate) const MAX_OAUTH_TTL: Duration = Duration::from_secs(24 * 3600);

/// Introspection answers are a few hundred bytes; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The path that asks HubSpot about an OAuth token, the token percent-encoded as one
/// segment whatever bytes it holds.
pub fn oauth_introspection_path(token: &str) -> String {
    format!("/oauth/v1/access-tokens/{}", encode_component(token))
}

/// What an introspection answer concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The token belongs to `owner`; that holds for `ttl`.
    Owner { owner: Owner, ttl: Duration },
    /// HubSpot refused the token (a 4xx other than 408 and 429).
    Invalid(StatusCode),
    /// No `[[apps]]` entry's dated introspection knows the token, and the v1 lookup is off:
    /// its owner cannot be learned.
    Unclaimed,
}

/// The request asking `target` (HubSpot's base URL) who owns `token`.
pub(crate) fn request(token: &str, target: &UpstreamTarget) -> Result<Request<Body>, String> {
    let uri = |path: &str| {
        Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(format!("{}{path}", target.base_path))
            .build()
            .map_err(|e| format!("building the introspection URI: {e}"))
    };
    match TokenKind::of(token) {
        TokenKind::PrivateApp => {
            let body = serde_json::json!({ "tokenKey": token }).to_string();
            Request::builder()
                .method(Method::POST)
                .uri(uri("/oauth/v2/private-apps/get/access-token-info")?)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json")
                .body(body::full(body))
        }
        TokenKind::OAuth => Request::builder()
            .method(Method::GET)
            .uri(uri(&oauth_introspection_path(token))?)
            .header(header::ACCEPT, "application/json")
            .body(body::empty()),
    }
    .map_err(|e| format!("building the request: {e}"))
}

/// The JSON body of an introspection answer (`what` names it in errors): `Ok(Err(status))`
/// when HubSpot refused the question (a 4xx other than 408 and 429); `Err` says why no
/// answer could be read (HubSpot failed, the body is not `what`).
pub(crate) async fn read_json<T, B>(
    response: Response<B>,
    what: &str,
) -> Result<Result<T, StatusCode>, String>
where
    T: serde::de::DeserializeOwned,
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let status = response.status();
    if status.is_client_error()
        && status != StatusCode::TOO_MANY_REQUESTS
        && status != StatusCode::REQUEST_TIMEOUT
    {
        return Ok(Err(status));
    }
    if !status.is_success() {
        return Err(format!("HubSpot answered {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    // serde's message may quote the body, and OAuth answers echo the token: say only where.
    serde_json::from_slice(&body).map(Ok).map_err(|e| {
        format!(
            "answer is not {what} JSON ({:?} at {}:{})",
            e.classify(),
            e.line(),
            e.column()
        )
    })
}

/// What HubSpot's `response` to the introspection of a `kind` token says. Private-app
/// owners hold for `private_app_ttl`; OAuth owners until the token expires. `Err` says
/// why no answer could be read (HubSpot failed, the body is not token info): the token is
/// then neither known nor refused.
pub(crate) async fn read_answer<B>(
    response: Response<B>,
    kind: TokenKind,
    private_app_ttl: Duration,
) -> Result<Answer, String>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let info: TokenInfo = match read_json(response, "token info").await? {
        Ok(info) => info,
        Err(status) => return Ok(Answer::Invalid(status)),
    };
    let private_app = kind == TokenKind::PrivateApp;
    let (app, portal) = if private_app {
        (info.app_id_camel, info.hub_id_camel)
    } else {
        (info.app_id, info.hub_id)
    };
    let (Some(app_id), Some(portal_id)) = (
        app.and_then(Number::into_u64),
        portal.and_then(Number::into_u64),
    ) else {
        return Err("answer names no app and portal".to_string());
    };
    let ttl = if private_app {
        private_app_ttl
    } else {
        info.expires_in
            .and_then(Number::into_u64)
            .map(|s| Duration::from_secs(s).min(MAX_OAUTH_TTL))
            .ok_or("OAuth answer has no expires_in")?
    };
    Ok(Answer::Owner {
        owner: Owner::App { app_id, portal_id },
        ttl,
    })
}

/// Both introspection answers in one shape: OAuth's snake_case and private apps' camelCase.
#[derive(Deserialize)]
struct TokenInfo {
    app_id: Option<Number>,
    hub_id: Option<Number>,
    expires_in: Option<Number>,
    #[serde(rename = "appId")]
    app_id_camel: Option<Number>,
    #[serde(rename = "hubId")]
    hub_id_camel: Option<Number>,
}

/// An id or duration as HubSpot may send it: a JSON number, or a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Number {
    Int(u64),
    Float(f64),
    Text(String),
    #[allow(dead_code)]
    Other(serde_json::Value),
}

impl Number {
    pub(crate) fn into_u64(self) -> Option<u64> {
        match self {
            Number::Int(n) => Some(n),
            Number::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => {
                Some(f as u64)
            }
            Number::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any token is one path
/// segment or one form value.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_arrive_in_any_shape() {
        let info: TokenInfo =
            serde_json::from_str(r#"{"app_id":"42","hub_id":7.0,"expires_in":1800,"x":[1]}"#)
                .unwrap();
        assert_eq!(info.app_id.and_then(Number::into_u64), Some(42));
        assert_eq!(info.hub_id.and_then(Number::into_u64), Some(7));
        assert_eq!(info.expires_in.and_then(Number::into_u64), Some(1800));
        let info: TokenInfo = serde_json::from_str(r#"{"appId":null,"hubId":-1}"#).unwrap();
        assert_eq!(info.app_id_camel.and_then(Number::into_u64), None);
        assert_eq!(info.hub_id_camel.and_then(Number::into_u64), None);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_component("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(encode_component("CKm-._~9"), "CKm-._~9");
    }

    #[tokio::test]
    async fn answers_name_the_owner_or_refuse_the_token() {
        let answer = |status: u16, body: &'static str| {
            Response::builder()
                .status(status)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap()
        };
        let hour = Duration::from_secs(3600);
        let oauth = read_answer(
            answer(200, r#"{"hub_id":7,"app_id":42,"expires_in":1800}"#),
            TokenKind::OAuth,
            hour,
        )
        .await;
        assert_eq!(
            oauth,
            Ok(Answer::Owner {
                owner: Owner::App {
                    app_id: 42,
                    portal_id: 7
                },
                ttl: Duration::from_secs(1800)
            })
        );
        let private = read_answer(
            answer(200, r#"{"hubId":7,"appId":42}"#),
            TokenKind::PrivateApp,
            hour,
        )
        .await;
        assert!(matches!(private, Ok(Answer::Owner { ttl, .. }) if ttl == hour));
        assert_eq!(
            read_answer(answer(401, ""), TokenKind::OAuth, hour).await,
            Ok(Answer::Invalid(StatusCode::UNAUTHORIZED))
        );
        for status in [429, 408, 503] {
            assert!(read_answer(answer(status, ""), TokenKind::OAuth, hour)
                .await
                .is_err());
        }
        let no_expiry = read_answer(
            answer(200, r#"{"hub_id":7,"app_id":42}"#),
            TokenKind::OAuth,
            hour,
        )
        .await;
        assert!(
            no_expiry.is_err(),
            "an OAuth answer must say when it expires"
        );
    }
}
