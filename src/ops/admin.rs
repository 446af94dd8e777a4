//! The admin listener: liveness, readiness, Prometheus metrics and the budget API, on a
//! port of its own so that callers of the proxy never reach it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::admin_auth;
use super::admin_installs;
use super::metrics::Metrics;
use super::observe::{Cursor, Observer};
use super::reload::Reloader;
use crate::hubspot::Owner;
use crate::oauth::broker::Broker;
use crate::proxy::body::{self, Body};
use crate::store::{RedisStore, StoreHealth};

/// What the admin endpoints report on.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    pub(crate) metrics: Metrics,
    /// False once shutdown begins, so load balancers stop sending new calls.
    pub(crate) ready: Arc<AtomicBool>,
    /// Budget and queue state for `/admin/budgets` and `/admin/owners/{owner}`.
    pub(crate) observer: Observer,
    /// The shared budget store, when there is one: `/readyz` reports it degraded.
    pub(crate) store: Option<RedisStore>,
    /// `POST /admin/reload`.
    pub(crate) reloader: Reloader,
    /// `/admin/installs`, when `[[apps]]` configures the token broker.
    pub(crate) broker: Option<Broker>,
}

pub(crate) async fn handle<B>(
    state: AdminState,
    request: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    if request.uri().path().starts_with(admin_installs::PREFIX) {
        let token = state.reloader.admin_token_digest().await;
        return Ok(admin_installs::handle(state.broker.as_ref(), token, request).await);
    }
    if request.uri().path() == "/admin/reload" {
        return Ok(reload(&state.reloader, request.method(), request.headers()).await);
    }
    let get = matches!(*request.method(), Method::GET | Method::HEAD);
    let response = match (get, request.uri().path()) {
        (true, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#),
        (true, "/readyz") if state.ready.load(Ordering::Relaxed) && state.store.is_some() => {
            store_readiness(state.store.as_ref())
        }
        (true, "/readyz") if state.ready.load(Ordering::Relaxed) => {
            json(StatusCode::OK, r#"{"status":"ready"}"#)
        }
        (true, "/readyz") => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"error","message":"hubgate is shutting down","category":"HUBGATE_NOT_READY"}"#,
        ),
        (true, "/metrics") => {
            let mut response = Response::new(body::full(state.metrics.encode()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (true, "/admin/budgets") => budgets(&state.observer, request.uri().query()),
        (true, path) if path.starts_with("/admin/owners/") => {
            owner(&state.observer, &path["/admin/owners/".len()..])
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"status":"error","message":"unknown admin endpoint; use GET /healthz, /readyz, /metrics, /admin/budgets?limit=&after= or /admin/owners/{app_id}:{portal_id}, or POST /admin/reload","category":"OBJECT_NOT_FOUND"}"#,
        ),
    };
    Ok(response)
}

/// `POST /admin/reload`: reads the config file again and applies it (see `reload`); other
/// methods get 405, since a reload changes state, and callers `admin_auth` refuses get
/// its answer.
async fn reload(reloader: &Reloader, method: &Method, headers: &HeaderMap) -> Response<Body> {
    if method != Method::POST {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"status":"error","message":"a reload changes the running config: use POST /admin/reload","category":"METHOD_NOT_ALLOWED"}"#,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let token = reloader.admin_token_digest().await;
    if let Err(refusal) = admin_auth::authorize(headers, token.as_ref()) {
        let mut response = json(refusal.status(), refusal.body());
        if let Some(challenge) = refusal.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        return response;
    }
    let (status, body) = reloader.reload().await.to_json();
    json_value(status, &body)
}

/// Owners and portals per page of `/admin/budgets` unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// The largest `limit` a page of `/admin/budgets` may ask for.
const MAX_PAGE: usize = 1000;

/// `GET /admin/budgets?limit=…&after=…`: one page, or 400 naming the parameter to fix.
fn budgets(observer: &Observer, query: Option<&str>) -> Response<Body> {
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (name, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match name {
            "limit" => match value.parse::<usize>() {
                Ok(n @ 1..=MAX_PAGE) => limit = n,
                _ => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        r#"{"status":"error","message":"limit must be a whole number from 1 to 1000 (owners and portals per page; 100 if left out)","category":"VALIDATION_ERROR"}"#,
                    )
                }
            },
            "after" if value.is_empty() => after = None,
            "after" => match percent_decoded(value).as_deref().and_then(Cursor::parse) {
                Some(cursor) => after = Some(cursor),
                None => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        r#"{"status":"error","message":"after must be the next_after of the previous page: an owner (app_id:portal_id, anonymous, unidentified:<16 hex digits>) or portal:<portal_id>; leave it out for the first page","category":"VALIDATION_ERROR"}"#,
                    )
                }
            },
            _ => {}
        }
    }
    json_value(StatusCode::OK, &observer.budgets_page(limit, after))
}

/// A query value with its `%XX` escapes decoded (a client may send `123%3A456`); `None`
/// for a broken escape or bytes that are not UTF-8.
fn percent_decoded(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `/admin/owners/{owner}`: the owner's budgets and queue, 400 for a malformed owner, 404
/// for one hubgate holds nothing for. Error messages never echo the path back, which a
/// confused caller might have put a token in.
fn owner(observer: &Observer, text: &str) -> Response<Body> {
    let Some(owner) = Owner::parse(text) else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"status":"error","message":"name the owner as app_id:portal_id (e.g. /admin/owners/123:456), anonymous or unidentified:<16 hex digits>","category":"VALIDATION_ERROR"}"#,
        );
    };
    match observer.owner_json(&owner) {
        Some(view) => json_value(StatusCode::OK, &view),
        None => json(
            StatusCode::NOT_FOUND,
            r#"{"status":"error","message":"no active owner by that name: it has no queue and no live budget (unknown, or idle longer than budgets.idle_ttl_ms)","category":"OBJECT_NOT_FOUND"}"#,
        ),
    }
}

fn json_value(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

/// Ready, or degraded: serving local shares (200, so load balancers keep it) or refusing
/// every call until Redis is back (503); a cluster with some slots away stays 200.
fn store_readiness(store: Option<&RedisStore>) -> Response<Body> {
    match store.map(|s| s.health()) {
        Some(StoreHealth::DegradedLocalShare) => json(
            StatusCode::OK,
            r#"{"status":"degraded","store":"redis unreachable","message":"serving each budget's local share ([store] on_failure = \"local_share\") until Redis answers again"}"#,
        ),
        Some(StoreHealth::DegradedFailClosed) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"degraded","store":"redis unreachable","message":"refusing calls ([store] on_failure = \"fail_closed\") until Redis answers again","category":"HUBGATE_STORE_UNAVAILABLE"}"#,
        ),
        Some(StoreHealth::SlotsDegraded) => json(
            StatusCode::OK,
            r#"{"status":"degraded","store":"redis cluster slots unreachable","message":"budgets on unreachable slots serve their local share (or 503 with [store] on_failure = \"fail_closed\") until a replica takes over; every other budget is shared"}"#,
        ),
        Some(StoreHealth::Healthy) | None => json(StatusCode::OK, r#"{"status":"ready"}"#),
    }
}

fn json(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

/// The `/healthz` URL of an admin listener bound to `admin_listen`; an unspecified address
/// (`0.0.0.0`, `[::]`, as in containers) is reached on this host's loopback.
pub fn health_url(admin_listen: &str) -> Result<String, String> {
    let mut addr: std::net::SocketAddr = admin_listen
        .parse()
        .map_err(|_| format!("'{admin_listen}' is not an address like 127.0.0.1:9090"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{addr}/healthz"))
}

/// `Ok` when `url` answers 200 within `timeout`; the error says what happened instead.
pub async fn probe_health(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("'{url}' is not a URL ({e})"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = Request::get(uri).body(body::empty())?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {} ms", timeout.as_millis()))?
        .map_err(|e| anyhow::anyhow!("{url} could not be reached: {e}"))?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "{url} answered {}",
        response.status()
    );
    Ok(())
}
