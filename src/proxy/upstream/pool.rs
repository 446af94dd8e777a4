//! The connection pool forwarded calls go out on: hubgate's own, over hyper's
//! `client::conn::{http1, http2}`, for the one upstream `[upstream] base_url` names.
//!
//! The forwarding hot path has its own pool rather than hyper-util's legacy `Client`
//! (which identity introspection, the load tool and OAuth keep) because the legacy pool
//! costs a forwarded call more than the rest of hyper's client does: a pool key hashed
//! three times, large futures moved from frame to frame, and a task spawned per HTTP/1
//! call to put its connection back once the response ends. Here a call takes the most
//! recently used idle HTTP/1.1 connection (or the one shared h2 connection, when the
//! upstream chose h2 by ALPN) from a short list, and its response body hands the
//! connection back itself once read to the end.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower::ServiceExt;

use super::UpstreamConnector;
use crate::config::UpstreamTarget;
use crate::proxy::body::{Body, BoxError};

/// Why a call got no answer from the pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// No connection could be opened (TCP, TLS or the connect timeout): nothing was sent.
    #[error("{0}")]
    Connect(#[source] BoxError),
    /// The call went out on a connection (or may have) and failed there.
    #[error("{0}")]
    Sent(#[source] hyper::Error),
}

/// How often a request a reused connection handed back unsent goes out again: enough for
/// a few connections the upstream closed at once, and an end to it should a connection
/// keep refusing one (an h2 upstream refusing streams without closing).
const UNSENT_RETRIES: u32 = 4;

/// What the upstream speaks, learned from the first connection's ALPN.
const PROTOCOL_UNKNOWN: u8 = 0;
const PROTOCOL_HTTP1: u8 = 1;
const PROTOCOL_HTTP2: u8 = 2;

/// A pool per worker thread (`crate::workers`) and one for calls made anywhere else: a
/// worker's calls go out on connections whose tasks run on that worker, so no call
/// crosses threads on its way to the upstream and back.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamPools {
    per_worker: Arc<[UpstreamPool]>,
    shared: UpstreamPool,
}

impl UpstreamPools {
    /// One pool for each of `workers`, and a shared one.
    pub(crate) fn new(
        connector: &UpstreamConnector,
        target: &UpstreamTarget,
        settings: PoolSettings,
        workers: usize,
    ) -> UpstreamPools {
        let pool = || UpstreamPool::new(connector.clone(), target, settings);
        UpstreamPools {
            per_worker: (0..workers).map(|_| pool()).collect(),
            shared: pool(),
        }
    }

    /// The pool for the thread this runs on.
    pub(crate) fn here(&self) -> &UpstreamPool {
        crate::workers::current()
            .and_then(|worker| self.per_worker.get(worker))
            .unwrap_or(&self.shared)
    }
}

/// `[upstream] pool_max_idle_per_host` and `pool_idle_timeout_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
}

/// Connections to one upstream.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    connector: UpstreamConnector,
    /// Scheme and authority only: where connections go.
    destination: Uri,
    scheme: Scheme,
    settings: PoolSettings,
    protocol: AtomicU8,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Mutex<Vec<IdleConnection>>,
    /// The one h2 connection every call shares; held while it is being opened, so that
    /// concurrent first calls wait for it rather than each opening one.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
    /// Whether the idle sweep runs (it starts with the first connection, on the runtime
    /// that connection's task runs on).
    sweeping: AtomicBool,
}

#[derive(Debug)]
struct IdleConnection {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// A connection a call goes out on.
enum Checkout {
    Http1 {
        sender: http1::SendRequest<Body>,
        reused: bool,
    },
    Http2 {
        sender: http2::SendRequest<Body>,
        reused: bool,
    },
}

impl UpstreamPool {
    fn new(connector: UpstreamConnector, target: &UpstreamTarget, settings: PoolSettings) -> Self {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(target.scheme.clone());
        parts.authority = Some(target.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        let destination = Uri::from_parts(parts).expect("a parsed target is a valid URI");
        UpstreamPool {
            inner: Arc::new(PoolInner {
                connector,
                destination,
                scheme: target.scheme.clone(),
                settings,
                protocol: AtomicU8::new(PROTOCOL_UNKNOWN),
                idle: Mutex::new(Vec::new()),
                h2: tokio::sync::Mutex::new(None),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` (its URI's path and query are used) and returns the answer, whose
    /// body gives its HTTP/1.1 connection back to the pool once read to the end. A request
    /// that a reused connection closed before sending any of it goes out on another one.
    pub(crate) async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let inner = &self.inner;
        let mut retries = 0;
        loop {
            match inner.checkout().await? {
                Checkout::Http1 { mut sender, reused } => {
                    origin_form(request.uri_mut());
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            let giveback = Giveback {
                                sender,
                                pool: Arc::downgrade(inner),
                            };
                            return Ok(PooledBody::wrap(response, Some(giveback)));
                        }
                        Err(mut failed) => match failed.take_message() {
                            Some(unsent) if reused && retries < UNSENT_RETRIES => {
                                retries += 1;
                                request = unsent;
                            }
                            _ => return Err(PoolError::Sent(failed.into_error())),
                        },
                    }
                }
                Checkout::Http2 { mut sender, reused } => {
                    inner.absolute_form(request.uri_mut());
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok(PooledBody::wrap(response, None)),
                        Err(mut failed) => match failed.take_message() {
                            Some(unsent) if reused && retries < UNSENT_RETRIES => {
                                retries += 1;
                                request = unsent;
                            }
                            _ => return Err(PoolError::Sent(failed.into_error())),
                        },
                    }
                }
            }
        }
    }
}

impl PoolInner {
    async fn checkout(self: &Arc<Self>) -> Result<Checkout, PoolError> {
        if self.protocol.load(Ordering::Relaxed) == PROTOCOL_HTTP2 {
            return self.shared_h2().await;
        }
        while let Some(mut sender) = self.take_idle() {
            // A connection whose last answer just ended becomes ready once its task has
            // polled it; one that closed meanwhile fails here and is dropped.
            if sender.ready().await.is_ok() {
                return Ok(Checkout::Http1 {
                    sender,
                    reused: true,
                });
            }
        }
        // Until the first connection's ALPN says what the upstream speaks, calls connect
        // side by side, as they would to an HTTP/1.1 upstream; an h2 one found this way
        // becomes the shared one unless another already did (then it serves its one call).
        let connected = self.connect().await?;
        if let Checkout::Http2 { sender, .. } = &connected {
            let mut shared = self.h2.lock().await;
            if shared.as_ref().is_none_or(|shared| shared.is_closed()) {
                *shared = Some(sender.clone());
            }
        }
        Ok(connected)
    }

    /// The shared h2 connection, opened again (once, however many calls wait) if it closed.
    async fn shared_h2(self: &Arc<Self>) -> Result<Checkout, PoolError> {
        let mut shared = self.h2.lock().await;
        if let Some(sender) = shared.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok(Checkout::Http2 {
                sender: sender.clone(),
                reused: true,
            });
        }
        *shared = None;
        let connected = self.connect().await?;
        if let Checkout::Http2 { sender, .. } = &connected {
            *shared = Some(sender.clone());
        }
        Ok(connected)
    }

    async fn connect(self: &Arc<Self>) -> Result<Checkout, PoolError> {
        self.start_sweep();
        let io = self
            .connector
            .clone()
            .oneshot(self.destination.clone())
            .await
            .map_err(PoolError::Connect)?;
        if io.connected().is_negotiated_h2() {
            self.protocol.store(PROTOCOL_HTTP2, Ordering::Relaxed);
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(PoolError::Sent)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            Ok(Checkout::Http2 {
                sender,
                reused: false,
            })
        } else {
            self.protocol.store(PROTOCOL_HTTP1, Ordering::Relaxed);
            let (sender, connection) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(PoolError::Sent)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Checkout::Http1 {
                sender,
                reused: false,
            })
        }
    }

    /// The most recently used idle connection still open and within its idle time.
    fn take_idle(&self) -> Option<http1::SendRequest<Body>> {
        let now = Instant::now();
        let mut idle = self.lock_idle();
        while let Some(connection) = idle.pop() {
            if now.duration_since(connection.since) >= self.settings.idle_timeout {
                // The rest went idle earlier still.
                idle.clear();
                return None;
            }
            if !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    fn give_back(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < self.settings.max_idle {
            idle.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes idle connections past their idle time (or closed by the upstream) every
    /// half idle timeout, so that without calls they do not stay open; ends with the pool.
    fn start_sweep(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let period = (self.settings.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep();
            }
        });
    }

    fn sweep(&self) {
        let now = Instant::now();
        let timeout = self.settings.idle_timeout;
        self.lock_idle().retain(|connection| {
            now.duration_since(connection.since) < timeout && !connection.sender.is_closed()
        });
    }

    /// h2 carries the scheme and authority as pseudo-headers, so the URI must be absolute.
    fn absolute_form(&self, uri: &mut Uri) {
        if uri.scheme().is_some() {
            return;
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = self.destination.authority().cloned();
        parts.path_and_query = uri.path_and_query().cloned();
        if let Ok(absolute) = Uri::from_parts(parts) {
            *uri = absolute;
        }
    }
}

/// HTTP/1.1 puts only the path and query on the request line (`Host` names the upstream).
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::from(path);
}

/// An HTTP/1.1 connection waiting for its answer's body to end.
struct Giveback {
    sender: http1::SendRequest<Body>,
    pool: Weak<PoolInner>,
}

impl Giveback {
    fn give(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(self.sender);
        }
    }
}

/// An upstream answer's body. Read to the end, it gives its HTTP/1.1 connection back to
/// the pool; dropped early or failed, the connection goes with it (hyper closes it).
pub(crate) struct PooledBody {
    incoming: Incoming,
    giveback: Option<Giveback>,
}

impl PooledBody {
    fn wrap(response: Response<Incoming>, giveback: Option<Giveback>) -> Response<PooledBody> {
        response.map(|incoming| {
            let mut body = PooledBody { incoming, giveback };
            // An answer with no body (HEAD, 204, 304, `Content-Length: 0`) may never be read.
            if http_body::Body::is_end_stream(&body.incoming) {
                body.give_back();
            }
            body
        })
    }

    fn give_back(&mut self) {
        if let Some(giveback) = self.giveback.take() {
            giveback.give();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.incoming).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            // hyper's server stops reading a body that says it ended, so the last frame
            // is the moment to give the connection back.
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.giveback = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
