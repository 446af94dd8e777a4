//! The innermost service: sends a call to the upstream and streams its answer back,
//! rewriting only what a transparent reverse proxy must.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;

use tokio::time::Instant;

use super::body::{self, Body, BoxError, CallerBodyError};
use super::hop;
use super::outcome::Outcome;
use super::upstream::pool::{PoolError, UpstreamPools};
use super::upstream::ConnectStep;
use crate::config::UpstreamTarget;
use crate::ops::metrics::Metrics;

/// Why the upstream gave no answer to a call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection: nothing was sent.
    #[error("could not connect to the upstream {upstream}: {reason}; check [upstream] base_url and that HubSpot is reachable, then retry")]
    Connect { upstream: String, reason: String },
    /// The TLS handshake failed: nothing was sent.
    #[error("the TLS handshake with the upstream {upstream} failed ({reason}); nothing was sent. Check that it serves a certificate hubgate trusts (webpki roots or [upstream] ca_file) and speaks TLS on that port")]
    Tls { upstream: String, reason: String },
    /// Sent, perhaps processed, but no answer came.
    #[error("the upstream {upstream} failed before answering ({reason}); the call may or may not have been processed")]
    Failed { upstream: String, reason: String },
    #[error("the upstream {upstream} did not answer within {timeout_ms} ms ([upstream] response_timeout_ms); the call may or may not have been processed")]
    Timeout { upstream: String, timeout_ms: u64 },
}

impl UpstreamError {
    /// Whether the call surely never reached the upstream.
    pub(crate) fn nothing_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::Tls { .. }
        )
    }
}

/// The caller's path cannot be put below the upstream's base URL.
#[derive(Debug, thiserror::Error)]
#[error("the request path is not valid: {0}")]
pub(crate) struct InvalidPath(String);

/// Forwards calls to the configured upstream.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    inner: Arc<ForwardInner>,
}

#[derive(Debug)]
struct ForwardInner {
    pools: UpstreamPools,
    target: UpstreamTarget,
    /// `Host` sent upstream: the upstream's authority, whatever the caller used.
    host: HeaderValue,
    /// The upstream as logs name it, formatted once rather than on every call.
    display: Arc<str>,
    response_timeout: Duration,
    /// `[upstream] body_idle_timeout_ms`: how long a response body may pause.
    body_idle_timeout: Duration,
    metrics: Metrics,
}

impl Forward {
    pub(crate) fn new(
        pools: UpstreamPools,
        target: UpstreamTarget,
        response_timeout: Duration,
        body_idle_timeout: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<Forward> {
        let host = HeaderValue::from_str(target.authority.as_str())?;
        let display = target.display().into();
        Ok(Forward {
            inner: Arc::new(ForwardInner {
                pools,
                target,
                host,
                display,
                response_timeout,
                body_idle_timeout,
                metrics,
            }),
        })
    }
}

impl tower::Service<Request<Body>> for Forward {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool opens connections as calls need them; readiness is decided by the
        // layers above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.forward(request).await })
    }
}

impl ForwardInner {
    async fn forward(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.upstream_uri(&parts.uri)?;
        // The pool picks h1 or h2 per connection by ALPN; callers' h2 requests are handed
        // over as h1.1 and go out as whatever the upstream connection speaks.
        parts.version = Version::HTTP_11;
        hop::strip(&mut parts.headers);
        // hyper already answered the caller's `Expect: 100-continue` when the body was
        // first read; passing it on would make the upstream wait for a second go-ahead.
        parts.headers.remove(header::EXPECT);
        strip_hubgate_headers(&mut parts.headers);
        parts.headers.insert(header::HOST, self.host.clone());
        let upstream_request = Request::from_parts(parts, body);

        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.response_timeout,
            self.pools.here().send(upstream_request),
        )
        .await;
        let response = match sent {
            Err(_elapsed) => {
                return Err(UpstreamError::Timeout {
                    upstream: self.target.display(),
                    timeout_ms: self.response_timeout.as_millis() as u64,
                }
                .into())
            }
            Ok(Err(e)) => return Err(self.classify_failure(&e)),
            Ok(Ok(response)) => response,
        };
        self.metrics
            .observe_upstream(response.status(), started.elapsed().as_secs_f64());

        let (mut parts, incoming) = response.into_parts();
        hop::strip(&mut parts.headers);
        // The caller's connection has its own protocol; an HTTP/1.0 upstream must not
        // downgrade it.
        parts.version = Version::HTTP_11;
        parts.extensions.insert(Outcome::Forwarded);
        // The status is already on its way to the caller; a body that fails or stalls now
        // can only be cut off, which the caller sees as a body that ends early.
        let upstream = self.display.clone();
        let body = body::with_idle_timeout(body::stream(incoming), self.body_idle_timeout)
            .map_err(move |e: BoxError| {
                tracing::warn!(
                    upstream = %upstream,
                    error = %e,
                    "upstream response body failed; the caller's response is cut off"
                );
                e
            })
            .boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }

    /// The caller's path and query, byte for byte, below the upstream's base URL.
    fn upstream_uri(&self, caller_uri: &Uri) -> Result<Uri, InvalidPath> {
        let invalid = |e: &dyn std::fmt::Display| InvalidPath(e.to_string());
        let path_and_query = if self.target.base_path.is_empty() {
            // The caller's own, shared rather than copied and parsed again.
            caller_uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            let caller = caller_uri
                .path_and_query()
                .map(PathAndQuery::as_str)
                .unwrap_or("/");
            PathAndQuery::from_maybe_shared(format!("{}{caller}", self.target.base_path))
                .map_err(|e| invalid(&e))?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.target.scheme.clone());
        parts.authority = Some(self.target.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| invalid(&e))
    }

    fn classify_failure(&self, error: &PoolError) -> BoxError {
        if let Some(found) = CallerBodyError::found_in(error) {
            // The caller's body failed while streaming: the upstream saw a cut-off body
            // (never a complete one), and the fault is the caller's, not the upstream's.
            return Box::new(found.detached());
        }
        let reason = describe(error);
        let failure = if let PoolError::Connect(connecting) = error {
            match ConnectStep::of(connecting.as_ref()) {
                ConnectStep::Tls => UpstreamError::Tls {
                    upstream: self.target.display(),
                    reason,
                },
                ConnectStep::Tcp | ConnectStep::TimedOut => UpstreamError::Connect {
                    upstream: self.target.display(),
                    reason,
                },
            }
        } else {
            UpstreamError::Failed {
                upstream: self.target.display(),
                reason,
            }
        };
        Box::new(failure)
    }
}

/// `X-Hubgate-*` request headers steer hubgate (deadline, caller, priority) and are no
/// business of HubSpot's.
fn strip_hubgate_headers(headers: &mut http::HeaderMap) {
    let ours: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-hubgate-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// The innermost cause, short and free of request data, for the caller's error message.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
