//! Where every call ends: typed errors become HubSpot-shaped responses, and each call is
//! logged once and counted once, by outcome.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, Request, Response};
use tower::{Layer, Service};
use tower_http::request_id::RequestId;

use crate::body::Body;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::redact;

/// The caller's socket address, attached by the server to each request, with its IP
/// address as text: a caller without `X-Hubgate-Caller` is named by it, and formatting it
/// once per connection spares every call on it.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    pub ip: Arc<str>,
}

impl PeerAddr {
    pub fn new(addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            addr,
            ip: addr.ip().to_string().into(),
        }
    }
}

const CORRELATION_ID: HeaderName = HeaderName::from_static("x-hubspot-correlation-id");

/// A value as it is printed, or "-" when there is none.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

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
        // Kept as they are (cheap clones) and turned into text only for a log line that
        // is written: at a level above info, formatting them would be work for nothing.
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.header_value().clone());
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.addr);
        let method = request.method().clone();
        let uri = request.uri().clone();
        let metrics = self.metrics.clone();
        // Boxed before the async block: naming `S::Future` inside it trips rustc's
        // higher-ranked `Send` check (rust-lang/rust#64552) on the boxed error type.
        let future: Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>> =
            Box::pin(self.inner.call(request));
        Box::pin(async move {
            let request_id = request_id.as_ref().and_then(|id| id.to_str().ok());
            let response = match future.await {
                Ok(response) => response,
                Err(error) => error.into_response(request_id.unwrap_or("-")),
            };
            let outcome = response
                .extensions()
                .get::<Outcome>()
                .copied()
                .unwrap_or(Outcome::Forwarded);
            metrics.count_request(outcome);
            tracing::info!(
                request_id = %request_id.unwrap_or("-"),
                correlation_id = %response
                    .headers()
                    .get(CORRELATION_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
                peer = %OrDash(peer),
                method = %method,
                target = %redact::path_and_query(uri.path(), uri.query()),
                status = response.status().as_u16(),
                outcome = outcome.as_label(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "call"
            );
            Ok(response)
        })
    }
}
