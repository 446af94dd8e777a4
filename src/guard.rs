//! Inbound bounds checked before any other work: refuses tunnels and forward-proxy use,
//! oversized headers and bodies, so nothing behind it sees a call it cannot serve.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, Method, Request, Response, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{Layer, Service};

use crate::body::{self, Body, BodyStalled, BoxError};
use crate::error::GatewayError;
use crate::respond::LocalAddr;

/// Why a caller's request body ended early. Every body error is wrapped in one, so that
/// wherever it surfaces (reading the body for replay, or inside the upstream client's
/// error while streaming it) the call is answered as the caller's problem, never as an
/// upstream failure.
#[derive(Debug, thiserror::Error)]
pub enum CallerBodyError {
    #[error("request body exceeds {max} bytes")]
    TooLarge { max: u64 },
    #[error("request body stalled: {0}")]
    Stalled(#[source] BodyStalled),
    /// The caller's connection failed or closed mid-body, or its framing was invalid.
    #[error("request body broke off: {0}")]
    Broken(#[source] BoxError),
}

impl CallerBodyError {
    /// The caller's body error in `error`'s chain, if that is what it was.
    pub fn found_in<'e>(
        error: &'e (dyn std::error::Error + 'static),
    ) -> Option<&'e CallerBodyError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<CallerBodyError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }

    /// What the caller is told.
    pub fn to_gateway_error(&self) -> GatewayError {
        match self {
            CallerBodyError::TooLarge { max } => GatewayError::BodyTooLarge { max: *max },
            CallerBodyError::Stalled(stalled) => GatewayError::RequestBodyStalled {
                idle_ms: u64::try_from(stalled.idle.as_millis()).unwrap_or(u64::MAX),
            },
            CallerBodyError::Broken(e) => GatewayError::BadRequest(format!(
                "the request body could not be read ({e}); send the call again"
            )),
        }
    }

    fn wrap(error: BoxError, max: u64) -> BoxError {
        let wrapped = if error.is::<LengthLimitError>() {
            CallerBodyError::TooLarge { max }
        } else {
            match error.downcast::<BodyStalled>() {
                Ok(stalled) => CallerBodyError::Stalled(*stalled),
                Err(other) => CallerBodyError::Broken(other),
            }
        };
        Box::new(wrapped)
    }
}

/// What the guard enforces, from `[server]`.
#[derive(Debug, Clone)]
pub struct InboundLimits {
    /// Host of the upstream: the only host an absolute-form target may name.
    pub upstream_host: String,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// `[server] body_idle_timeout_ms`.
    pub body_idle_timeout: std::time::Duration,
}

#[derive(Clone)]
pub struct GuardLayer {
    limits: std::sync::Arc<InboundLimits>,
}

impl GuardLayer {
    pub fn new(limits: InboundLimits) -> Self {
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

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    limits: std::sync::Arc<InboundLimits>,
}

impl<S> Service<Request<Body>> for Guard<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match check(&self.limits, request) {
            Ok(request) => Box::pin(self.inner.call(request)),
            Err(error) => Box::pin(std::future::ready(Err(error))),
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

fn check(limits: &InboundLimits, request: Request<Body>) -> Result<Request<Body>, GatewayError> {
    if request.method() == Method::CONNECT {
        return Err(GatewayError::ConnectRefused);
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
                return Err(GatewayError::NotAForwardProxy {
                    host: authority.host().to_string(),
                });
            }
        }
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
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
        return Err(GatewayError::BodyTooLarge { max });
    }
    // A body without a declared length is counted while it streams; it is never buffered.
    let max_usize = usize::try_from(max).unwrap_or(usize::MAX);
    let idle = limits.body_idle_timeout;
    Ok(request.map(|body| {
        Limited::new(body::with_idle_timeout(body, idle), max_usize)
            .map_err(move |e: BoxError| CallerBodyError::wrap(e, max))
            .boxed_unsync()
    }))
}
