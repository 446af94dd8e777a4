//! `/admin/installs`: the token broker's installs, listed (never a token), imported from
//! an existing refresh token, and revoked; the changing ones need the admin token.

use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::admin_auth;
use crate::oauth::broker::{Broker, BrokerError};
use crate::oauth::InstallKey;
use crate::proxy::body::{self, Body};

pub(crate) const PREFIX: &str = "/admin/installs";

/// An import body is one small JSON object.
const MAX_IMPORT_BYTES: usize = 16 * 1024;

/// Answers a call under `/admin/installs`; `admin_token` is the digest of `[admin]
/// token_sha256`, which the changing calls must present.
pub(crate) async fn handle<B>(
    broker: Option<&Broker>,
    admin_token: Option<[u8; 32]>,
    request: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    let Some(broker) = broker else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "the token broker is off: configure an app in [[apps]] and a secret key (HUBGATE_SECRET_KEY or [oauth] key_file) to hold installs",
        );
    };
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if method != Method::GET && method != Method::HEAD {
        if let Some(refused) = refusal(admin_token.as_ref(), request.headers()) {
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

/// The answer refusing a changing call `admin_auth` does not let through, if any.
fn refusal(token: Option<&[u8; 32]>, headers: &HeaderMap) -> Option<Response<Body>> {
    admin_auth::authorize(headers, token).err().map(|refusal| {
        let mut response = json_response(refusal.status(), refusal.body().to_string());
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

fn json_value(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_response(status, value.to_string())
}

fn json_response(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}
