//! Where every call ends: typed errors become HubSpot-shaped responses, and each call is
//! logged once and counted once, by outcome.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};
use tower_http::request_id::RequestId;

use crate::body::Body;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::redact;

/// The caller's socket address, attached by the server to each request.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

const CORRELATION_ID: &str = "x-hubspot-correlation-id";

#[derive(Clone)]
pub struct RespondLayer {
    metrics: Metrics,
}

impl RespondLayer {
    pub fn new(metrics: Metrics) -> Self {
        RespondLayer { metrics }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;
    fn layer(&self, inner: S) -> Respond<S> {
        Respond {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Respond<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request<Body>> for Respond<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness errors are answered per call below; never fail the connection.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or("-")
            .to_string();
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map_or_else(|| "-".to_string(), |p| p.0.to_string());
        let method = request.method().clone();
        let target = redact::path_and_query(request.uri().path(), request.uri().query());
        let metrics = self.metrics.clone();
        // Boxed before the async block: naming `S::Future` inside it trips rustc's
        // higher-ranked `Send` check (rust-lang/rust#64552) on the boxed error type.
        let future: Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>> =
            Box::pin(self.inner.call(request));
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => response,
                Err(error) => error.into_response(&request_id),
            };
            let outcome = response
                .extensions()
                .get::<Outcome>()
                .copied()
                .unwrap_or(Outcome::Forwarded);
            metrics.count_request(outcome);
            let correlation_id = response
                .headers()
                .get(CORRELATION_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                request_id = %request_id,
                correlation_id = %correlation_id,
                peer = %peer,
                method = %method,
                target = %target,
                status = response.status().as_u16(),
                outcome = outcome.as_label(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "call"
            );
            Ok(response)
        })
    }
}
