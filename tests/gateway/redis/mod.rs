//! Shared budgets on a real `redis-server` (started here on loopback ports of its own): the
//! script's semantics against the in-memory engine, three gateways saturating one budget
//! through one Redis, and what happens when Redis dies and comes back.
//!
//! `store`: the store itself against the engine (reservations, late sends, TLS, reloads,
//! daily budgets, lessons); `replicas`: gateways sharing one budget through Redis, and
//! Redis dying and coming back under them; `cluster`: the same through a Redis Cluster,
//! and one of its masters dying under them; `batched`: Redis far away (behind a delaying
//! proxy), where a lane's reservations go in one script call; `turns`: replicas whose
//! callers arrive together, each getting its share of a window.

mod batched;
mod cluster;
mod replicas;
mod store;
mod turns;

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use hubgate::Config;
use tokio::time::Instant;

/// The replica's `hubgate_store_degraded` gauge: 1 while any budget of its store is degraded.
async fn degraded_gauge(gateway: &Gateway) -> f64 {
    metric_value(&gateway.metrics().await, "hubgate_store_degraded").expect("gauge exported")
}

/// Whether every replica's gauge says its store is degraded.
async fn every_gauge_degraded(gateways: &[Arc<Gateway>]) -> bool {
    for gateway in gateways {
        if degraded_gauge(gateway).await != 1.0 {
            return false;
        }
    }
    true
}

/// The replica's `/readyz` status and JSON body.
async fn readyz(gateway: &Gateway) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = get(&format!("http://{}/readyz", gateway.admin)).await;
    (status, json(&body))
}

/// `c` as a replica on the Redis at `url` (keys under `key_prefix`) whose callers' `owners`
/// (token, app, portal) are known in advance, so no introspection (paced through Redis
/// too) comes before their first call; margins of 40 ms, as HubSpot on loopback needs.
fn known_owners_on_redis(
    c: &mut Config,
    url: String,
    key_prefix: &str,
    owners: &[(&str, u64, u64)],
) {
    c.credentials.extend(
        owners
            .iter()
            .map(|&(token, app, portal)| known_owner(token, app, portal)),
    );
    c.budgets.burst_margin_ms = 40;
    c.store.kind = "redis".into();
    c.store.redis_url = url;
    c.store.key_prefix = key_prefix.into();
}

/// One contacts page through `gateway` with `token`: status, headers and body.
async fn contacts_page(gateway: &Gateway, token: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let request = http::Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    send(request).await
}

/// The status of one contacts page through `gateway` with `token`.
async fn contacts_as(gateway: &Gateway, token: &str) -> StatusCode {
    contacts_page(gateway, token).await.0
}

/// `callers` loops per gateway calling with `token` until `until` after `started`; every
/// answer's status and arrival time since `started` (refusals printed with their body).
async fn saturate_as(
    gateways: &[Arc<Gateway>],
    token: &str,
    callers: usize,
    started: Instant,
    until: Duration,
) -> Vec<(StatusCode, Duration)> {
    let mut tasks = Vec::new();
    for gateway in gateways {
        for _ in 0..callers {
            let (gateway, token) = (gateway.clone(), token.to_string());
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < until {
                    let (status, _, body) = contacts_page(&gateway, &token).await;
                    if status != StatusCode::OK {
                        println!("{token}: {status}: {}", String::from_utf8_lossy(&body));
                    }
                    seen.push((status, started.elapsed()));
                }
                seen
            }));
        }
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await.unwrap());
    }
    out
}
