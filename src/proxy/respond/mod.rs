//! Where every call ends: typed errors become HubSpot-shaped responses (`rescue`), and
//! each call is logged once and counted once, by outcome; a call stays counted in flight
//! until its response body has ended or been dropped.

mod rescue;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use prometheus::IntGauge;
use tokio::time::Instant;
use tower::{Layer, Service};
use tower_http::request_id::RequestId;

use super::body::{Body, BoxError};
use super::outcome::Outcome;
use super::peer::PeerAddr;
use crate::ops::metrics::Metrics;
use crate::ops::redact;

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

#[derive(Debug, Clone)]
pub(crate) struct RespondLayer {
    metrics: Metrics,
}

impl RespondLayer {
    pub(crate) fn new(metrics: Metrics) -> Self {
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

#[derive(Debug, Clone)]
pub(crate) struct Respond<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request<Body>> for Respond<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
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
        let call = Call {
            started: Instant::now(),
            request_id: request
                .extensions()
                .get::<RequestId>()
                .map(|id| id.header_value().clone()),
            peer: request.extensions().get::<PeerAddr>().map(|p| p.addr),
            method: request.method().clone(),
            uri: request.uri().clone(),
        };
        let mut in_flight = InFlight::start(call, self.metrics.clone());
        // Boxed before the async block: naming `S::Future` inside it trips rustc's
        // higher-ranked `Send` check (rust-lang/rust#64552) on the boxed error type.
        let future: Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>> =
            Box::pin(self.inner.call(request));
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => response,
                Err(error) => rescue::rescue(&*error, in_flight.request_id()),
            };
            let outcome = response
                .extensions()
                .get::<Outcome>()
                .copied()
                .unwrap_or(Outcome::Forwarded);
            let correlation_id = response
                .headers()
                .get(CORRELATION_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            in_flight.answered(Some(response.status().as_u16()), outcome, correlation_id);
            Ok(response.map(|body| {
                Tracked {
                    body,
                    _in_flight: in_flight,
                }
                .boxed_unsync()
            }))
        })
    }
}

/// What the call log line says about a call. Kept as they are (cheap clones) and turned
/// into text only for a log line that is written: at a level above info, formatting them
/// would be work for nothing.
#[derive(Debug)]
struct Call {
    started: Instant,
    request_id: Option<HeaderValue>,
    peer: Option<SocketAddr>,
    method: Method,
    uri: Uri,
}

impl Call {
    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-")
    }

    fn log(&self, status: Option<u16>, outcome: Outcome, correlation_id: &str) {
        tracing::info!(
            request_id = %self.request_id(),
            correlation_id = %correlation_id,
            peer = %OrDash(self.peer),
            method = %self.method,
            target = %redact::path_and_query(self.uri.path(), self.uri.query()),
            status = status.unwrap_or(0),
            outcome = outcome.as_label(),
            elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "call"
        );
    }
}

/// One accepted call, from arrival until its response body ends or is dropped: it holds
/// `hubgate_requests_in_flight` up meanwhile, so a leak shows as a gauge that never
/// returns to 0. Dropped before an answer, it counts and logs the call as `caller_gone`,
/// so every accepted call is counted exactly once.
#[derive(Debug)]
struct InFlight {
    gauge: IntGauge,
    metrics: Metrics,
    call: Call,
    answered: bool,
}

impl InFlight {
    fn start(call: Call, metrics: Metrics) -> InFlight {
        let gauge = metrics.requests_in_flight();
        gauge.inc();
        InFlight {
            gauge,
            metrics,
            call,
            answered: false,
        }
    }

    fn request_id(&self) -> &str {
        self.call.request_id()
    }

    fn answered(&mut self, status: Option<u16>, outcome: Outcome, correlation_id: &str) {
        self.answered = true;
        self.metrics.count_request(outcome);
        self.call.log(status, outcome, correlation_id);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            self.answered(None, Outcome::CallerGone, "-");
        }
        self.gauge.dec();
    }
}

/// A response body that keeps its call in flight until hyper has sent it or dropped it.
#[derive(Debug)]
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
