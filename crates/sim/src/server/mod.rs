//! The HTTP server: the accept loop, TLS termination per connection and graceful shutdown.
//! What a request gets is decided in `routes`; each kind of answer has its own module.

mod auth;
mod control;
mod echo;
mod introspection;
mod oauth;
mod outside;
mod rate_limit_answers;
mod routes;
mod state;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub(crate) use outside::set_outside;
pub(crate) use state::Shared;

/// A client that connects and never finishes the handshake must not hold a task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their current exchange after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Accepts until `stop` flips, then lets open connections finish briefly before cutting them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Usually fd exhaustion; back off instead of spinning.
                        tracing::warn!("simulator accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                conns.spawn(async move {
                    let svc = service_fn(move |req| routes::handle(shared.clone(), req));
                    match tls {
                        Some(acceptor) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                    }
                });
            }
            // Reaps finished connection tasks so the set does not grow with every connection.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
