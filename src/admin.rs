//! The admin listener: liveness, readiness and Prometheus metrics, on a port of its own
//! so that callers of the proxy never reach it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::metrics::Metrics;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    /// False once shutdown begins, so load balancers stop sending new calls.
    pub ready: Arc<AtomicBool>,
    /// The shared budget store, when there is one: `/readyz` reports it degraded.
    pub store: Option<crate::redis_store::RedisStore>,
}

pub async fn handle<B>(
    state: AdminState,
    request: Request<B>,
) -> Result<Response<Body>, Infallible> {
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
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"status":"error","message":"unknown admin endpoint; use GET /healthz, /readyz or /metrics","category":"OBJECT_NOT_FOUND"}"#,
        ),
    };
    Ok(response)
}

/// Ready, or degraded: serving local shares (200, so load balancers keep it) or refusing
/// every call until Redis is back (503).
fn store_readiness(store: Option<&crate::redis_store::RedisStore>) -> Response<Body> {
    use crate::redis_store::StoreHealth;
    match store.map(|s| s.health()) {
        Some(StoreHealth::DegradedLocalShare) => json(
            StatusCode::OK,
            r#"{"status":"degraded","store":"redis unreachable","message":"serving each budget's local share ([store] on_failure = \"local_share\") until Redis answers again"}"#,
        ),
        Some(StoreHealth::DegradedFailClosed) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"degraded","store":"redis unreachable","message":"refusing calls ([store] on_failure = \"fail_closed\") until Redis answers again","category":"HUBGATE_STORE_UNAVAILABLE"}"#,
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
