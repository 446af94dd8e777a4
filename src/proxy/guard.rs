//! Inbound bounds checked before any other work: refuses tunnels and forward-proxy use,
//! paths servers read differently, oversized headers and bodies, so nothing behind it
//! sees a call it cannot serve.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, Method, Request, Response, Version};
use http_body_util::{BodyExt, Limited};
use tower::{Layer, Service};

use super::body::{self, Body, BoxError, CallerBodyError};
use super::peer::LocalAddr;
use crate::hubspot::path::{self, AmbiguousPath};

/// A call the guard refuses before anything else looks at it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardRefusal {
    #[error("hubgate forwards HubSpot API calls only and refuses CONNECT tunnels; send the request to hubgate's base URL with a path, e.g. GET /crm/v3/objects/contacts")]
    ConnectRefused,
    #[error("hubgate is not a forward proxy: the absolute-form target for host '{host}' is refused; send origin-form requests (just the path, e.g. /crm/v3/objects/contacts) to hubgate's base URL")]
    NotAForwardProxy { host: String },
    #[error("request headers take {size} bytes, more than the {max} bytes hubgate accepts ([server] max_header_bytes); send fewer or smaller headers")]
    HeadersTooLarge { size: usize, max: usize },
    /// The declared `Content-Length` is over `[server] max_body_bytes`; a body without one
    /// is refused while it streams, as a [`CallerBodyError`].
    #[error("request body is larger than the {max} bytes hubgate accepts ([server] max_body_bytes); send a smaller body or raise the limit")]
    BodyTooLarge { max: u64 },
    /// Classified by one reading, it could be served by another; see `hubspot::path`.
    #[error(transparent)]
    AmbiguousPath(#[from] AmbiguousPath),
}

/// What the guard enforces, from `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct InboundLimits {
    /// Host of the upstream: the only host an absolute-form target may name.
    pub(crate) upstream_host: String,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: u64,
    /// `[server] body_idle_timeout_ms`.
    pub(crate) body_idle_timeout: std::time::Duration,
    /// `[server] body_read_timeout_ms`.
    pub(crate) body_read_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct GuardLayer {
    limits: std::sync::Arc<InboundLimits>,
}

impl GuardLayer {
    pub(crate) fn new(limits: InboundLimits) -> Self {
        GuardLayer {
            limits: std::sync::Arc::new(limits),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    limits: std::sync::Arc<InboundLimits>,
}

impl<S> Service<Request<Body>> for Guard<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match check(&self.limits, request) {
            Ok(request) => Box::pin(self.inner.call(request)),
            Err(refusal) => Box::pin(std::future::ready(Err(refusal.into()))),
        }
    }
}

/// Whether `authority` is `address` itself (an IP literal and port, port 80 by default).
fn names_address(authority: &http::uri::Authority, address: std::net::SocketAddr) -> bool {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == address.ip())
        && authority.port_u16().unwrap_or(80) == address.port()
}

fn check(limits: &InboundLimits, request: Request<Body>) -> Result<Request<Body>, GuardRefusal> {
    if request.method() == Method::CONNECT {
        return Err(GuardRefusal::ConnectRefused);
    }
    // Over HTTP/2 every request names an authority, like Host in HTTP/1.1; only an
    // HTTP/1 absolute-form target is a sign of a client using hubgate as a forward proxy,
    // unless it names the upstream or hubgate itself (RFC 9112 §3.2.2: servers accept it).
    if request.version() < Version::HTTP_2 {
        if let Some(authority) = request.uri().authority() {
            let names_hubgate = request
                .extensions()
                .get::<LocalAddr>()
                .is_some_and(|local| names_address(authority, local.0));
            if !names_hubgate && !authority.host().eq_ignore_ascii_case(&limits.upstream_host) {
                return Err(GuardRefusal::NotAForwardProxy {
                    host: authority.host().to_string(),
                });
            }
        }
    }
    path::check(request.uri().path())?;
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(GuardRefusal::HeadersTooLarge {
            size: header_bytes,
            max: limits.max_header_bytes,
        });
    }
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = limits.max_body_bytes;
    if declared_length.is_some_and(|length| length > max) {
        return Err(GuardRefusal::BodyTooLarge { max });
    }
    // A body without a declared length is counted while it streams; it is never buffered.
    let max_usize = usize::try_from(max).unwrap_or(usize::MAX);
    let (idle, total) = (limits.body_idle_timeout, limits.body_read_timeout);
    Ok(request.map(|body| {
        let timed = body::with_read_deadline(body::with_idle_timeout(body, idle), total);
        Limited::new(timed, max_usize)
            .map_err(move |e: BoxError| CallerBodyError::wrap(e, max))
            .boxed_unsync()
    }))
}
