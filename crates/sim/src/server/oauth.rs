//! The answers of HubSpot's 2026 OAuth server: the authorize stub, the token endpoint
//! (`authorization_code`, `refresh_token`), dated introspection and revocation, each taking
//! form-encoded body fields as HubSpot does.

use http::{header, Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::state::Shared;
use crate::clock::unix_ms;
use crate::config::TokenKind;
use crate::http_util::{
    empty_response, full, hs_error, json_response, parse_query, read_body, set_header, Body,
};
use crate::oauth::{AccessLookup, Refusal, TokenRequest};

/// The portal the authorize stub installs into when the request names none.
const DEFAULT_HUB_ID: u64 = 1001;

/// Which OAuth route a request is, if any: `(method, segments)` as routed.
pub(super) fn is_oauth_flow(method: &Method, segs: &[&str]) -> bool {
    matches!(
        (method, segs),
        (&Method::GET, ["oauth", "authorize"])
            | (&Method::POST, ["oauth", _, "token"])
            | (&Method::POST, ["oauth", _, "token", "revoke"])
    )
}

pub(super) async fn oauth_flow(
    shared: &Shared,
    req: Request<Incoming>,
    segs: &[&str],
    corr: &str,
) -> Response<Body> {
    if segs == ["oauth", "authorize"] {
        return authorize(shared, req.uri().query());
    }
    let form = match read_form(shared, req, corr).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    match segs {
        ["oauth", _, "token"] => token(shared, &form, corr).await,
        _ => revoke(shared, &form, corr),
    }
}

/// `POST /oauth/{version}/token/introspect` (RFC 7662): the app's own tokens only, and
/// `{"active": false}` rather than an error for any other.
pub(super) async fn dated_introspection(
    shared: &Shared,
    req: Request<Incoming>,
    corr: &str,
) -> Response<Body> {
    let form = match read_form(shared, req, corr).await {
        Ok(form) => form,
        Err(resp) => return resp,
    };
    let token = field(&form, "token");
    shared.limiter.attribute_introspection(token);
    shared.oauth.count_introspection();
    let app = match shared
        .oauth
        .client(field(&form, "client_id"), field(&form, "client_secret"))
    {
        Ok(app) => app.clone(),
        Err(refusal) => return refusal_response(refusal, corr),
    };
    let inactive = json_response(200, &json!({ "active": false }));
    let known = |app_id, hub_id, user_id, scopes: Vec<String>| {
        json!({
            "active": true,
            "app_id": app_id,
            "client_id": app.client_id,
            "hub_id": hub_id,
            "user_id": user_id,
            "scopes": scopes,
            "token": token,
            "token_type": "Bearer",
        })
    };
    if let Some(t) = shared.tokens.get(token) {
        if t.kind != TokenKind::Oauth || t.app_id != app.app_id {
            return inactive;
        }
        let expires_in = shared.config.access_token_expires_in;
        let mut body = known(t.app_id, t.portal_id, t.user_id(), t.scopes());
        body["token_use"] = json!("access_token");
        body["expires_in"] = json!(expires_in);
        body["signed_access_token"] = signed(t.app_id, t.portal_id, expires_in);
        return json_response(200, &body);
    }
    match shared.oauth.access(token, Instant::now()) {
        AccessLookup::Valid {
            app_id,
            hub_id,
            scopes,
            expires_in,
        } if app_id == app.app_id => {
            let mut body = known(app_id, hub_id, crate::oauth::user_id(hub_id), scopes);
            body["token_use"] = json!("access_token");
            body["expires_in"] = json!(expires_in.as_secs());
            body["signed_access_token"] = signed(app_id, hub_id, expires_in.as_secs());
            return json_response(200, &body);
        }
        AccessLookup::Valid { .. } | AccessLookup::Expired { .. } => return inactive,
        AccessLookup::Unknown => {}
    }
    match shared.oauth.refresh_token_owner(token) {
        Some((app_id, hub_id, scopes)) if app_id == app.app_id => {
            let mut body = known(app_id, hub_id, crate::oauth::user_id(hub_id), scopes);
            body["token_use"] = json!("refresh_token");
            json_response(200, &body)
        }
        _ => inactive,
    }
}

fn signed(app_id: u64, hub_id: u64, expires_in_s: u64) -> Value {
    json!({
        "appId": app_id,
        "hubId": hub_id,
        "hublet": "na1",
        "expiresAt": unix_ms() + (expires_in_s as i64).saturating_mul(1000),
    })
}

/// The consent screen, already accepted: back to the app's redirect URI with a code.
fn authorize(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let q = parse_query(query);
    let get = |name: &str| field(&q, name).to_string();
    let scopes: Vec<String> = [get("scope"), get("optional_scope")]
        .iter()
        .flat_map(|s| s.split([' ', ',']).map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let hub_id = match q.iter().find(|(k, _)| k == "hub_id") {
        None => DEFAULT_HUB_ID,
        Some((_, v)) => match v.parse() {
            Ok(hub) => hub,
            Err(_) => return text(400, "hub_id must be a portal id"),
        },
    };
    let redirect_uri = get("redirect_uri");
    match shared.oauth.authorize(
        &get("client_id"),
        &redirect_uri,
        scopes,
        hub_id,
        Instant::now(),
    ) {
        Ok(code) => {
            let joiner = if redirect_uri.contains('?') { '&' } else { '?' };
            let mut location = format!("{redirect_uri}{joiner}code={code}");
            let state = get("state");
            if !state.is_empty() {
                location.push_str(&format!("&state={}", encode(&state)));
            }
            let mut resp = empty_response(302);
            set_header(&mut resp, "location", location);
            resp
        }
        // HubSpot shows an error page and never redirects to an unregistered URI.
        Err(why) => text(400, why),
    }
}

async fn token(shared: &Shared, form: &[(String, String)], corr: &str) -> Response<Body> {
    let req = TokenRequest {
        grant_type: field(form, "grant_type").to_string(),
        client_id: field(form, "client_id").to_string(),
        client_secret: field(form, "client_secret").to_string(),
        code: field(form, "code").to_string(),
        redirect_uri: field(form, "redirect_uri").to_string(),
        refresh_token: field(form, "refresh_token").to_string(),
    };
    let (result, in_flight) = shared.oauth.token(&req, Instant::now());
    let latency = shared.oauth.settings().token_latency_ms;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    let resp = match result {
        Ok(grant) => json_response(200, &serde_json::to_value(grant).unwrap_or(Value::Null)),
        Err(refusal) => refusal_response(refusal, corr),
    };
    // Held to here: a refresh is in flight until its answer is ready to leave.
    drop(in_flight);
    resp
}

fn revoke(shared: &Shared, form: &[(String, String)], corr: &str) -> Response<Body> {
    match shared
        .oauth
        .client(field(form, "client_id"), field(form, "client_secret"))
    {
        Ok(app) => {
            let app = app.clone();
            shared.oauth.revoke(&app, field(form, "token"));
            empty_response(200)
        }
        Err(refusal) => refusal_response(refusal, corr),
    }
}

/// A token endpoint refusal as HubSpot words it: RFC 6749's fields and its legacy ones.
fn refusal_response(refusal: Refusal, corr: &str) -> Response<Body> {
    match refusal {
        Refusal::Grant {
            error,
            status,
            description,
        } => json_response(
            400,
            &json!({
                "error": error,
                "error_description": description,
                "status": status,
                "message": description,
                "correlationId": corr,
            }),
        ),
        Refusal::RateLimited { retry_after_s } => {
            let mut resp = json_response(
                429,
                &json!({
                    "status": "error",
                    "message": "You have reached your rate limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": corr,
                }),
            );
            set_header(&mut resp, "retry-after", retry_after_s);
            resp
        }
        Refusal::Injected(code) => json_response(
            code,
            &hs_error(corr, "Internal Server Error", "INTERNAL_ERROR"),
        ),
    }
}

/// The form body's fields; a JSON body gets HubSpot's 415, since the fields must be
/// form-encoded.
async fn read_form(
    shared: &Shared,
    req: Request<Incoming>,
    corr: &str,
) -> Result<Vec<(String, String)>, Response<Body>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    if is_json {
        return Err(json_response(
            415,
            &hs_error(
                corr,
                "Content type 'application/json' not supported; send the fields form-encoded (application/x-www-form-urlencoded)",
                "VALIDATION_ERROR",
            ),
        ));
    }
    let body = read_body(req, shared.config.max_body_bytes, corr).await?;
    Ok(parse_query(Some(&String::from_utf8_lossy(&body))))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn text(status: u16, message: &str) -> Response<Body> {
    let mut resp = Response::new(full(message.to_string()));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    set_header(&mut resp, "content-type", "text/plain; charset=utf-8");
    resp
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
