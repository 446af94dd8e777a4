//! The `/oauth/*` token introspection endpoints the gateway uses to learn who a token bills,
//! and the dispatch of the rest of `/oauth/*` to the OAuth server (`oauth`). They need no
//! bearer token and are never rate limited, but every call is counted.

use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::oauth::{dated_introspection, is_oauth_flow, oauth_flow};
use super::state::Shared;
use crate::clock::{iso_ms, unix_ms};
use crate::config::TokenKind;
use crate::http_util::{hs_error, json_response, read_body, route_not_found, Body};
use crate::limits::IntrospectionKind;
use crate::oauth::AccessLookup;

/// Counts an introspection call at arrival, so calls that faults later fail still count.
pub(super) fn count_introspection(shared: &Shared, req: &Request<Incoming>, segs: &[&str]) {
    let kind = match (req.method(), segs) {
        (&Method::GET, ["oauth", "v1", "access-tokens", _]) => IntrospectionKind::OauthAccessToken,
        (&Method::POST, ["oauth", "v2", "private-apps", "get", "access-token-info"]) => {
            IntrospectionKind::PrivateAppTokenInfo
        }
        (&Method::POST, ["oauth", _, "token", "introspect"]) => IntrospectionKind::TokenIntrospect,
        _ => return,
    };
    // The private-app token travels in the body; it is attributed once the body is read.
    let token = match segs {
        ["oauth", "v1", "access-tokens", t] => (*t).to_string(),
        _ => String::new(),
    };
    shared.limiter.count_introspection(kind, &token);
}

pub(super) async fn introspect(
    shared: &Shared,
    req: Request<Incoming>,
    segs: &[&str],
    corr: &str,
) -> Response<Body> {
    let method = req.method().clone();
    if segs.get(1) == Some(&"v1") && !shared.oauth.settings().v1_oauth {
        // Every v1 OAuth route is gone, as from 2027-02-16; a token in the path is not echoed.
        let shown: Vec<&str> = segs.iter().take(3).copied().collect();
        return json_response(404, &route_not_found(corr, method.as_str(), &shown));
    }
    if is_oauth_flow(&method, segs) {
        return oauth_flow(shared, req, segs, corr).await;
    }
    match (&method, segs) {
        (&Method::GET, ["oauth", "v1", "access-tokens", token]) => {
            oauth_access_token(shared, token, corr)
        }
        (&Method::POST, ["oauth", "v2", "private-apps", "get", "access-token-info"]) => {
            let body = match read_body(req, shared.config.max_body_bytes, corr).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            private_app_token_info(shared, &body, corr)
        }
        (&Method::POST, ["oauth", _, "token", "introspect"]) => {
            dated_introspection(shared, req, corr).await
        }
        _ => json_response(404, &route_not_found(corr, method.as_str(), segs)),
    }
}

/// `GET /oauth/v1/access-tokens/{token}`: OAuth tokens only.
fn oauth_access_token(shared: &Shared, token: &str, corr: &str) -> Response<Body> {
    match shared
        .tokens
        .get(token)
        .filter(|t| t.kind == TokenKind::Oauth)
    {
        Some(t) => json_response(
            200,
            &json!({
                "token": t.token,
                "user": t.user(),
                "hub_domain": t.hub_domain(),
                "scopes": t.scopes(),
                "scope_to_scope_group_pks": [],
                "trial_scopes": [],
                "trial_scope_to_scope_group_pks": [],
                "hub_id": t.portal_id,
                "app_id": t.app_id,
                "expires_in": shared.config.access_token_expires_in,
                "user_id": t.user_id(),
                "token_type": "access",
            }),
        ),
        None => issued_access_token(shared, token, corr),
    }
}

/// v1 metadata of an access token the OAuth server issued.
fn issued_access_token(shared: &Shared, token: &str, corr: &str) -> Response<Body> {
    match shared.oauth.access(token, tokio::time::Instant::now()) {
        AccessLookup::Valid {
            app_id,
            hub_id,
            scopes,
            expires_in,
        } => json_response(
            200,
            &json!({
                "token": token,
                "user": format!("sim-user-{hub_id}@example.com"),
                "hub_domain": format!("sim-portal-{hub_id}.hubspot.com"),
                "scopes": scopes,
                "scope_to_scope_group_pks": [],
                "trial_scopes": [],
                "trial_scope_to_scope_group_pks": [],
                "hub_id": hub_id,
                "app_id": app_id,
                "expires_in": expires_in.as_secs(),
                "user_id": crate::oauth::user_id(hub_id),
                "token_type": "access",
            }),
        ),
        AccessLookup::Expired { ago } => expired_token(ago, corr),
        AccessLookup::Unknown => {
            json_response(404, &hs_error(corr, "Token not found", "OBJECT_NOT_FOUND"))
        }
    }
}

/// HubSpot's 401 for an access token past its expiry.
pub(super) fn expired_token(ago: std::time::Duration, corr: &str) -> Response<Body> {
    let mut body = hs_error(
        corr,
        &format!(
            "The OAuth token used to make this call expired {} second(s) ago.",
            ago.as_secs()
        ),
        "EXPIRED_AUTHENTICATION",
    );
    let expired_at = unix_ms() - ago.as_millis() as i64;
    body["context"] = json!({ "expire time": [iso_ms(expired_at)] });
    json_response(401, &body)
}

/// `POST /oauth/v2/private-apps/get/access-token-info` with `{"tokenKey": ...}`: private
/// app tokens only.
fn private_app_token_info(shared: &Shared, body: &[u8], corr: &str) -> Response<Body> {
    let key = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("tokenKey")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(k) = &key {
        shared.limiter.attribute_introspection(k);
    }
    let Some(key) = key else {
        return json_response(
            400,
            &hs_error(
                corr,
                "Request body must be {\"tokenKey\": \"...\"}",
                "VALIDATION_ERROR",
            ),
        );
    };
    match shared
        .tokens
        .get(&key)
        .filter(|t| t.kind == TokenKind::Private)
    {
        Some(t) => json_response(
            200,
            &json!({
                "userId": t.user_id(),
                "hubId": t.portal_id,
                "appId": t.app_id,
                "scopes": t.scopes(),
            }),
        ),
        None => json_response(
            401,
            &hs_error(
                corr,
                "The access token provided is invalid or does not belong to a private app.",
                "INVALID_AUTHENTICATION",
            ),
        ),
    }
}
