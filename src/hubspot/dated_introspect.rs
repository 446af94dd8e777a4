//! Asking HubSpot's dated introspection who owns an OAuth access token:
//! `POST /oauth/2026-03/token/introspect` with one app's client credentials as form fields,
//! and what its answer says (the owner and until when, that the app does not know the token,
//! or that HubSpot refused the app's credentials). Sources: docs/hubspot.md.

use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode, Uri};
use serde::Deserialize;

use super::introspect::{encode_component, read_json, Number, MAX_OAUTH_TTL};
use super::Owner;
use crate::config::UpstreamTarget;
use crate::proxy::body::{self, Body};

/// The dated introspection route; the date is HubSpot's API version, not a deadline.
pub const DATED_INTROSPECTION_PATH: &str = "/oauth/2026-03/token/introspect";

/// One app's client credentials, as introspection sends them.
pub(crate) struct ClientCredentials<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
}

/// What one app's introspection of a token concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatedAnswer {
    /// The token is active and belongs to `owner`; that holds for `ttl`.
    Active { owner: Owner, ttl: Duration },
    /// Not active for this app: another app's, expired, revoked or unknown.
    Inactive,
    /// HubSpot refused the app's client credentials (a 4xx); the app's entry is wrong.
    ClientRefused(StatusCode),
}

/// The request asking `target` whether `token` is an active token of the app `client`.
pub(crate) fn request(
    token: &str,
    client: &ClientCredentials<'_>,
    target: &UpstreamTarget,
) -> Result<Request<Body>, String> {
    let uri = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(format!("{}{DATED_INTROSPECTION_PATH}", target.base_path))
        .build()
        .map_err(|e| format!("building the introspection URI: {e}"))?;
    let form = [
        ("client_id", client.client_id),
        ("client_secret", client.client_secret),
        ("token", token),
        ("token_type_hint", "access_token"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", encode_component(v)))
    .collect::<Vec<_>>()
    .join("&");
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(body::full(form))
        .map_err(|e| format!("building the request: {e}"))
}

/// What HubSpot's `response` says; `now_unix_ms` reads an absolute expiry. `Err` says why
/// no answer could be read (HubSpot failed, the body is not an introspection answer).
pub(crate) async fn read_answer<B>(
    response: Response<B>,
    now_unix_ms: i64,
) -> Result<DatedAnswer, String>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let info: Introspection = match read_json(response, "introspection").await? {
        Ok(info) => info,
        Err(status) => return Ok(DatedAnswer::ClientRefused(status)),
    };
    if info.active != Some(true) {
        return Ok(DatedAnswer::Inactive);
    }
    let signed = info.signed_access_token.unwrap_or_default();
    let app = info.app_id.or(signed.app_id).and_then(Number::into_u64);
    let portal = info.hub_id.or(signed.hub_id).and_then(Number::into_u64);
    let (Some(app_id), Some(portal_id)) = (app, portal) else {
        return Err("answer names no app and portal".to_string());
    };
    let expires_in = info.expires_in.and_then(Number::into_u64).or_else(|| {
        let at = signed.expires_at.and_then(Number::into_u64)?;
        Some((at as i64).saturating_sub(now_unix_ms).max(0) as u64 / 1000)
    });
    let ttl = expires_in
        .map(|s| Duration::from_secs(s).min(MAX_OAUTH_TTL))
        .ok_or("answer gives no expiry (expires_in or signed_access_token.expiresAt)")?;
    Ok(DatedAnswer::Active {
        owner: Owner::App { app_id, portal_id },
        ttl,
    })
}

/// The fields of a dated introspection answer hubgate reads.
#[derive(Deserialize)]
struct Introspection {
    active: Option<bool>,
    app_id: Option<Number>,
    hub_id: Option<Number>,
    expires_in: Option<Number>,
    signed_access_token: Option<Signed>,
}

#[derive(Deserialize, Default)]
struct Signed {
    #[serde(rename = "appId")]
    app_id: Option<Number>,
    #[serde(rename = "hubId")]
    hub_id: Option<Number>,
    /// Unix milliseconds.
    #[serde(rename = "expiresAt")]
    expires_at: Option<Number>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static str) -> Response<http_body_util::Full<bytes::Bytes>> {
        Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap()
    }

    #[tokio::test]
    async fn answers_name_the_owner_or_say_why_not() {
        let owner = Owner::App {
            app_id: 42,
            portal_id: 7,
        };
        let read = |status, body| read_answer(answer(status, body), 1_000_000);
        assert_eq!(
            read(
                200,
                r#"{"active":true,"app_id":42,"hub_id":7,"expires_in":1800}"#
            )
            .await,
            Ok(DatedAnswer::Active {
                owner,
                ttl: Duration::from_secs(1800)
            })
        );
        assert_eq!(
            read(
                200,
                r#"{"active":true,"signed_access_token":{"appId":42,"hubId":"7","expiresAt":1600000}}"#
            )
            .await,
            Ok(DatedAnswer::Active {
                owner,
                ttl: Duration::from_secs(600)
            })
        );
        assert_eq!(
            read(200, r#"{"active":false}"#).await,
            Ok(DatedAnswer::Inactive)
        );
        assert_eq!(
            read(400, r#"{"error":"invalid_client"}"#).await,
            Ok(DatedAnswer::ClientRefused(StatusCode::BAD_REQUEST))
        );
        assert!(read(503, "").await.is_err());
        assert!(read(200, r#"{"active":true,"app_id":42,"hub_id":7}"#)
            .await
            .is_err());
        assert!(read(200, "not json").await.is_err());
    }

    #[test]
    fn the_form_encodes_every_field() {
        let target = UpstreamTarget::parse("http://127.0.0.1:9/base").unwrap();
        let client = ClientCredentials {
            client_id: "id",
            client_secret: "s&e=c ret",
        };
        let req = request("tok/en+", &client, &target).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:9/base/oauth/2026-03/token/introspect"
        );
        assert_eq!(
            req.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
    }
}
