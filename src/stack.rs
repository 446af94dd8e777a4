//! The request path, assembled in one place: which layer wraps which, and why.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use tower::util::BoxCloneService;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::body::Body;
use crate::config::Config;
use crate::forward::Forward;
use crate::guard::{GuardLayer, InboundLimits};
use crate::metrics::Metrics;
use crate::respond::RespondLayer;
use crate::upstream;

/// The whole request path as one cloneable service that never fails: every call gets a
/// response, errors included.
pub type ProxyService = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

pub fn build(config: &Config, metrics: &Metrics) -> anyhow::Result<ProxyService> {
    let target = config
        .upstream_target()
        .map_err(|e| anyhow::anyhow!("[upstream] base_url: {e}"))?;
    let client = upstream::build_client(&config.upstream)?;
    let limits = InboundLimits {
        upstream_host: target.host().to_string(),
        max_header_bytes: config.server.max_header_bytes,
        max_body_bytes: config.server.max_body_bytes,
    };
    let forward = Forward::new(
        client,
        target,
        Duration::from_millis(config.upstream.response_timeout_ms),
        metrics.clone(),
    )?;
    let service = ServiceBuilder::new()
        // Outermost: a call gets its id (the caller's X-Request-Id, or a new one) before
        // anything can answer it, so even hubgate's own errors carry it.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Sees the final answer of everything inside: turns errors into responses, logs
        // and counts each call exactly once.
        .layer(RespondLayer::new(metrics.clone()))
        // Cheap refusals first, before later layers (identity, budgets, retries) spend
        // lookups or budget on a call that cannot be served.
        .layer(GuardLayer::new(limits))
        .service(forward);
    Ok(BoxCloneService::new(service))
}
