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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::config::Config;
use crate::oauth::open_installs;
use crate::ops::admin::{self, AdminState};
use crate::ops::budget_metrics::BudgetCollector;
use crate::ops::metrics::Metrics;
use crate::ops::observe::Observer;
use crate::ops::reload::Reloader;
use crate::proxy::body::{self, Body};
use crate::proxy::peer::{LocalAddr, PeerAddr};
use crate::proxy::stack::{self, ProxyService};

/// The sockets hubgate serves on, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses from `[server]`.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |addr: String, what: &'static str| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
        };
        Ok(Listeners {
            proxy: bind(config.server.listen.clone(), "[server] listen").await?,
            admin: bind(config.server.admin_listen.clone(), "[server] admin_listen").await?,
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
    let stack::Stack {
        service,
        pacer,
        shared_store,
        live,
        broker,
    } = stack::build(
        &config,
        &metrics,
        installs.as_ref().map(|opened| opened.store.clone()),
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
    builder
        .http2()
        .timer(TokioTimer::new())
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

    let graceful = GracefulShutdown::new();
    let admin_task = tokio::spawn(serve_admin(listeners.admin, admin_state, builder.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listeners.proxy.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like pass; keep the listener.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = CallerConnection {
                    service: service.clone(),
                    peer: PeerAddr::new(peer),
                    local: stream.local_addr().unwrap_or(proxy_addr),
                };
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    ready.store(false, Ordering::Relaxed);
    drop(listeners.proxy);
    #[cfg(unix)]
    hangup_task.abort();
    // The grace in force now: a reload may have changed it.
    let grace = reloader.running().await.server.shutdown_grace();
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: finishing in-flight calls"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with calls still in flight; closing them");
    }
    admin_task.abort();
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    tracing::info!("hubgate stopped");
    Ok(())
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
}

impl hyper::service::Service<Request<Incoming>> for CallerConnection {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Oneshot<ProxyService, Request<Body>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut request = request.map(body::stream);
        request.extensions_mut().insert(self.peer.clone());
        request.extensions_mut().insert(LocalAddr(self.local));
        self.service.clone().oneshot(request)
    }
}
