//! Faults at the socket level, against the real gateway: upstreams that reset, stall, fail
//! TLS or answer garbage, a simulator killed and restarted under load, callers that leave
//! mid-upload or while queued. Every accepted call gets exactly one answer (counted on both
//! sides), nothing hangs past its timeout, and nothing is left behind: no call in flight or
//! queued, no owner lane, no extra task.
//!
//! `upstream`: upstreams that reset, stall, fail TLS or answer garbage; `restart`: a
//! simulator killed and restarted under load; `callers`: callers that leave mid-upload or
//! while queued. The helpers below are what they share.

mod callers;
mod restart;
mod upstream;

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

pub(crate) const LIST: &str = "/crm/v3/objects/contacts";

/// Short sweeps and pools, so that leaks show within a test's time.
pub(crate) fn quick(c: &mut hubgate::Config) {
    c.budgets.idle_ttl_ms = 1_000;
    c.upstream.pool_idle_timeout_ms = 300;
    c.retry.base_delay_ms = 10;
    c.retry.max_delay_ms = 50;
}

/// One call through a fresh client: the response head and the whole body, or the error
/// the body ended with.
pub(crate) async fn call(
    request: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Result<Bytes, hyper::Error>) {
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("an answer within 20 s")
        .expect("a response head");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the body ends within 20 s")
        .map(|collected| collected.to_bytes());
    (parts.status, parts.headers, body)
}

pub(crate) fn post(gateway: &Gateway, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(gateway.url(LIST))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

pub(crate) fn get_request(gateway: &Gateway) -> Request<Full<Bytes>> {
    Request::get(gateway.url(LIST))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// After a fault: a new call on a new connection is answered (however the upstream
/// misbehaves this time), and the gateway has settled.
pub(crate) async fn recovers(gateway: &Gateway, answered_before: f64) {
    let request = Request::get(gateway.url("/after-the-fault"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = call(request).await;
    assert!(status.as_u16() >= 200, "the gateway answers new calls");
    assert_eq!(gateway.answered().await, answered_before + 1.0);
    gateway.assert_settles(Duration::from_secs(5)).await;
}
