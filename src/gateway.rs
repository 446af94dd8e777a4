//! Listeners and connection lifecycle: accepts callers (HTTP/1.1 and h2), applies
//! connection-level bounds, serves the admin port, and shuts down gracefully.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::config::Config;
use crate::connection::{self, Activity, CallerIo, ConnectionCap, Counted};
use crate::oauth::open_installs;
use crate::ops::admin::{self, AdminState};
use crate::ops::budget_metrics::BudgetCollector;
use crate::ops::metrics::Metrics;
use crate::ops::observe::Observer;
use crate::ops::reload::Reloader;
use crate::proxy::body::{self, Body};
use crate::proxy::linger::LingeringBody;
use crate::proxy::peer::{LocalAddr, PeerAddr};
use crate::proxy::stack::{self, ProxyService};
use crate::workers::Workers;

/// The sockets hubgate serves on, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses from `[server]`.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let backlog = config.server.listen_backlog;
        let bind = |addr: &str, what: &'static str| {
            let parsed: std::net::SocketAddr = addr
                .parse()
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))?;
            connection::bind(parsed, backlog)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
        };
        Ok(Listeners {
            proxy: bind(&config.server.listen, "[server] listen")?,
            admin: bind(&config.server.admin_listen, "[server] admin_listen")?,
        })
    }
}

/// Runs the gateway until `shutdown` completes, then lets in-flight calls finish within
/// `[server] shutdown_grace_ms`. `config` must be valid (`Config::validate` is empty).
/// It has no file behind it, so a reload (SIGHUP, `POST /admin/reload`) changes nothing
/// and says so.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve(config, None, listeners, shutdown).await
}

/// `run` for a gateway whose `config` was read from `config_path`: SIGHUP and
/// `POST /admin/reload` read that file again and apply it in place (see `reload`).
pub async fn run_from_file(
    config_path: PathBuf,
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve(config, Some(config_path), listeners, shutdown).await
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Before anything is served: SIGHUP's default action ends the process, and an
    // operator's reload must never do that.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP (config reload): {e}"))?;
    // Held until the gateway stops: the embedded database's file stays locked to this
    // process for as long as it may write installs.
    let installs = open_installs(&config, false, |name| std::env::var(name).ok()).await?;
    if let Some(opened) = &installs {
        tracing::info!(
            store = opened.kind,
            installs = opened.count,
            "OAuth installs loaded"
        );
    } else if !config.apps.is_empty() {
        tracing::warn!(
            "the OAuth token broker is off: [[apps]] are configured but no secret key is set to seal their installs; set HUBGATE_SECRET_KEY or [oauth] key_file to turn it on"
        );
    }
    let metrics = Metrics::with_max_owner_series(config.metrics.max_owner_series);
    // With `[server] workers`, caller connections are served on threads of their own;
    // everything else (admin, reloads, background tasks) stays on this runtime.
    let workers = match config.server.workers.threads() {
        0 => None,
        count => Some(Arc::new(Workers::start(count).map_err(|e| {
            anyhow::anyhow!("cannot start the worker threads ([server] workers): {e}")
        })?)),
    };
    let stack::Stack {
        service,
        pacer,
        last_send,
        shared_store,
        live,
        broker,
    } = stack::build(
        &config,
        &metrics,
        installs.as_ref().map(|opened| opened.store.clone()),
        workers.as_ref().map_or(0, |workers| workers.len()),
    )?;
    // Budget and queue gauges are read from the pacer at scrape time, not kept per call.
    let observer = Observer::new(
        pacer,
        config.metrics.max_owner_series,
        Duration::from_millis(config.queue.max_wait_ms),
    );
    metrics.register(Box::new(BudgetCollector::new(observer.clone())))?;
    let reloader = Reloader::new(
        config_path,
        config.clone(),
        live,
        observer.clone(),
        &metrics,
    )?;
    #[cfg(unix)]
    let hangup_task = tokio::spawn(reload_on_hangup(hangups, reloader.clone()));
    let refresher = broker
        .clone()
        .map(|broker| tokio::spawn(broker.run_refresher()));
    let ready = Arc::new(AtomicBool::new(true));
    let admin_state = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        observer,
        store: shared_store,
        broker,
        reloader: reloader.clone(),
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout())
        // hubgate answers oversized headers itself with JSON (guard); this is the hard
        // stop for what it will even buffer, with room for the request line.
        .max_buf_size((config.server.max_header_bytes * 2).max(16 * 1024));
    let keep_alive = config.server.h2_keep_alive_interval_ms;
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval((keep_alive > 0).then(|| Duration::from_millis(keep_alive)))
        .keep_alive_timeout(Duration::from_millis(
            config.server.h2_keep_alive_timeout_ms,
        ))
        .max_header_list_size(
            u32::try_from(config.server.max_header_bytes * 2).unwrap_or(u32::MAX),
        );
    let builder = Arc::new(builder);

    let proxy_addr = listeners.proxy.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        upstream = %config.upstream.base_url,
        "hubgate listening"
    );
    if !admin_addr.ip().is_loopback() && config.admin.token_digest().is_none() {
        tracing::warn!(
            admin = %admin_addr,
            "the admin listener is reachable beyond this host and anyone reaching it may \
             POST /admin/reload: set [admin] token_sha256 (from `hubgate hash-key`)"
        );
    }

    // Every caller connection holds a receiver: once all are dropped, none is left.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(serve_admin(listeners.admin, admin_state, builder.clone()));
    let accepting = Accepting {
        builder,
        service,
        cap: ConnectionCap::new(config.server.max_connections),
        opening_timeout: config.server.header_read_timeout(),
        write_timeout: config.server.response_write_timeout(),
        idle_timeout: config.server.idle_timeout(),
        proxy_addr,
        stopping,
        workers: workers.clone(),
    };
    tokio::select! {
        () = accepting.clone().serve(&listeners.proxy) => {}
        () = shutdown => {}
    }

    // The drain and grace in force now: a reload may have changed them.
    let (drain, grace, response_timeout) = {
        let running = reloader.running().await;
        (
            running.server.drain(),
            running.server.shutdown_grace(),
            Duration::from_millis(running.upstream.response_timeout_ms),
        )
    };
    let now = tokio::time::Instant::now();
    let ends = now + drain + grace;
    // A call sent later might still be on its way to HubSpot when the process exits.
    last_send.close_at(ends.checked_sub(response_timeout).unwrap_or(now).max(now));
    // Unready first, still accepting: load balancers see /readyz fail and stop sending
    // before the listener closes (without a drain, both in one step).
    ready.store(false, Ordering::Relaxed);
    #[cfg(unix)]
    hangup_task.abort();
    if !drain.is_zero() {
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: draining"
        );
        let draining = accepting.clone().serve(&listeners.proxy);
        let _ = tokio::time::timeout(drain, draining).await;
    }
    drop(listeners.proxy);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: finishing in-flight calls"
    );
    drop(accepting);
    let _ = stop.send(true);
    if tokio::time::timeout(grace, stop.closed()).await.is_err() {
        tracing::warn!("shutdown grace elapsed with calls still in flight; closing them");
    }
    admin_task.abort();
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    // Ends the worker threads, and any connection the grace left open.
    drop(workers);
    tracing::info!("hubgate stopped");
    Ok(())
}

/// What accepting a caller connection needs.
#[derive(Clone)]
struct Accepting {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: ProxyService,
    cap: ConnectionCap,
    /// `[server] header_read_timeout_ms`, which covers the first bytes too.
    opening_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
    proxy_addr: std::net::SocketAddr,
    /// Turns true on shutdown: each connection then closes once its calls are answered.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Where accepted connections are served: the worker threads, or this runtime.
    workers: Option<Arc<Workers>>,
}

impl Accepting {
    /// Accepts callers until dropped.
    async fn serve(self, listener: &TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like pass; keep the listener.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(seat) = self.cap.seat() else {
                // Debug, not warn: a flood of connections must not become a flood of logs.
                tracing::debug!(peer = %peer, "connection refused: [server] max_connections reached");
                self.cap.refuse(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let activity = Arc::new(Activity::default());
            let service = CallerConnection {
                service: self.service.clone(),
                peer: PeerAddr::new(peer),
                local: stream.local_addr().unwrap_or(self.proxy_addr),
                activity: activity.clone(),
            };
            // Handed over unregistered: the reactor of the runtime that serves it watches it
            // from then on.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "connection lost before it was served");
                    continue;
                }
            };
            let (builder, mut stopping) = (self.builder.clone(), self.stopping.clone());
            let (opening_timeout, write_timeout) = (self.opening_timeout, self.write_timeout);
            let idle_timeout = self.idle_timeout;
            let serving = async move {
                let Ok(mut stream) = TcpStream::from_std(stream) else {
                    return;
                };
                // A connection that has not spoken yet has no call to finish on shutdown.
                let opening = tokio::select! {
                    opening = connection::read_opening(&mut stream, opening_timeout) => opening,
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                let Some(opening) = opening else {
                    tracing::debug!(peer = %peer, "connection closed: no request within [server] header_read_timeout_ms");
                    return;
                };
                let io = CallerIo::new(stream, opening, write_timeout);
                let connection = builder.serve_connection(TokioIo::new(io), service);
                tokio::pin!(connection);
                let mut closing = false;
                let ended = loop {
                    tokio::select! {
                        ended = connection.as_mut() => break ended,
                        _ = stopping.wait_for(|stop| *stop), if !closing => {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        () = activity.idle_for(idle_timeout), if !closing => {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                drop((seat, stopping));
            };
            match &self.workers {
                Some(workers) => workers.spawn(serving),
                None => drop(tokio::spawn(serving)),
            }
        }
    }
}

async fn serve_admin(
    listener: TcpListener,
    state: AdminState,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let service =
            hyper::service::service_fn(move |request| admin::handle(state.clone(), request));
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Reloads the config on every SIGHUP; the reload logs how it went.
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, reloader: Reloader) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        reloader.reload().await;
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Adapts the tower stack to hyper for one caller connection, tagging each request with
/// the caller's address and handing the stack a streaming body.
#[derive(Clone)]
struct CallerConnection {
    service: ProxyService,
    peer: PeerAddr,
    local: std::net::SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for CallerConnection {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Counted<Oneshot<ProxyService, Request<Body>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // HTTP/2 ends a stream's unread body on its own, without closing the connection.
        let mut request = if request.version() == http::Version::HTTP_2 {
            request.map(body::stream)
        } else {
            request.map(|incoming| body::stream(LingeringBody::new(incoming)))
        };
        request.extensions_mut().insert(self.peer.clone());
        request.extensions_mut().insert(LocalAddr(self.local));
        Counted::new(self.service.clone().oneshot(request), self.activity.begin())
    }
}
