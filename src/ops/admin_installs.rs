//! `/admin/installs`: the token broker's installs, listed (never a token), imported from
//! an existing refresh token, and revoked; the changing ones need the admin token.

use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::admin::{json, json_value, AdminState};
use super::admin_auth;
use crate::oauth::broker::{Broker, BrokerError};
use crate::oauth::InstallKey;
use crate::proxy::body::{self, Body};

pub(crate) const PREFIX: &str = "/admin/installs";

/// An import body is one small JSON object.
const MAX_IMPORT_BYTES: usize = 16 * 1024;

pub(crate) async fn handle<B>(state: &AdminState, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    let Some(broker) = &state.broker else {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"status":"error","message":"the token broker is off: configure an app in [[apps]] to hold installs","category":"OBJECT_NOT_FOUND"}"#,
        );
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if method != Method::GET && method != Method::HEAD {
        if let Err(refused) = authorized(state, request.headers()).await {
            return refused;
        }
    }
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, PREFIX) => list(broker).await,
        (Method::POST, PREFIX) => import(broker, request).await,
        (Method::DELETE, rest) => match parse_key(&rest[PREFIX.len()..]) {
            Some(key) => forget(broker, key).await,
            None => error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "name the install as /admin/installs/{app_id}/{hub_id}",
            ),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "use GET /admin/installs, POST /admin/installs {\"app_id\":…,\"refresh_token\":\"…\"} or DELETE /admin/installs/{app_id}/{hub_id}",
        ),
    }
}

async fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Response<Body>> {
    let token = state.reloader.admin_token_digest().await;
    admin_auth::authorize(headers, token.as_ref()).map_err(|refusal| {
        let mut response = json(refusal.status(), refusal.body());
        if let Some(challenge) = refusal.challenge() {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    })
}

/// `/{app_id}/{hub_id}`.
fn parse_key(rest: &str) -> Option<InstallKey> {
    let (app, hub) = rest.strip_prefix('/')?.split_once('/')?;
    Some(InstallKey {
        app_id: app.parse().ok()?,
        hub_id: hub.parse().ok()?,
    })
}

async fn list(broker: &Broker) -> Response<Body> {
    let installs = match broker.list().await {
        Ok(installs) => installs,
        Err(e) => return failure(&e),
    };
    let rows: Vec<serde_json::Value> = installs
        .iter()
        .map(|install| {
            serde_json::json!({
                "app_id": install.key.app_id,
                "hub_id": install.key.hub_id,
                "scopes": install.scopes,
                "status": install.status.as_str(),
                "access_expires_at_unix_ms": install.access_expires_at_unix_ms,
                "updated_at_unix_ms": install.updated_at_unix_ms,
            })
        })
        .collect();
    json_value(StatusCode::OK, &serde_json::json!({ "installs": rows }))
}

#[derive(Deserialize)]
struct Import {
    app_id: u64,
    refresh_token: String,
}

async fn import<B>(broker: &Broker, request: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    let bytes = match body::read_at_most(body::stream(request.into_body()), MAX_IMPORT_BYTES).await
    {
        Some(bytes) => bytes,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "the body must be one JSON object of at most 16 KiB",
            )
        }
    };
    let Ok(wanted) = serde_json::from_slice::<Import>(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "send {\"app_id\": <a configured app id>, \"refresh_token\": \"…\"}",
        );
    };
    match broker
        .import(wanted.app_id, wanted.refresh_token.trim())
        .await
    {
        Ok(install) => json_value(
            StatusCode::CREATED,
            &serde_json::json!({
                "app_id": install.key.app_id,
                "hub_id": install.key.hub_id,
                "scopes": install.scopes,
                "status": install.status.as_str(),
            }),
        ),
        Err(e) => failure(&e),
    }
}

async fn forget(broker: &Broker, key: InstallKey) -> Response<Body> {
    match broker.forget(key).await {
        Ok(()) => json_value(
            StatusCode::OK,
            &serde_json::json!({"app_id": key.app_id, "hub_id": key.hub_id, "status": "revoked"}),
        ),
        Err(e) => failure(&e),
    }
}

fn failure(e: &BrokerError) -> Response<Body> {
    let (status, category) = match e {
        BrokerError::UnknownApp(_) => (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        BrokerError::UnknownInstall { .. } => (StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND"),
        BrokerError::NeedsReauth { .. } | BrokerError::Token(_) => {
            (StatusCode::BAD_GATEWAY, "HUBGATE_TOKEN_ENDPOINT")
        }
        BrokerError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "HUBGATE_STORE_UNAVAILABLE"),
    };
    error(status, category, &e.to_string())
}

fn error(status: StatusCode, category: &str, message: &str) -> Response<Body> {
    json_value(
        status,
        &serde_json::json!({"status": "error", "message": message, "category": category}),
    )
}
