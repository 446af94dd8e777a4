//! How hubgate talks to HubSpot: one connector (rustls with webpki roots plus an optional
//! CA bundle, HTTP/1.1 and h2 by ALPN, plain http:// for tests and the simulator), under
//! the pools of forwarded calls ([`pool`]) and hyper-util's client for hubgate's own calls.
//! Opening a connection (TCP, then TLS) is bounded as a whole, and its failures say which
//! step failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::{Body, BoxError};
use crate::config::UpstreamConfig;

pub mod pool;

/// hyper-util's pooled client, for calls hubgate makes of its own (introspection, OAuth,
/// the load tool); forwarded calls go out through [`pool`].
pub type UpstreamClient = Client<UpstreamConnector, Body>;

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Why no connection to the upstream could be opened, where it is not TLS's own error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// The TCP connection failed (refused, unreachable, DNS); TLS never started.
    #[error("{0}")]
    Tcp(#[source] BoxError),
    /// TCP and TLS together took longer than `[upstream] connect_timeout_ms`.
    #[error("no connection within {} ms ([upstream] connect_timeout_ms)", .0.as_millis())]
    TimedOut(Duration),
}

/// The step at which opening an upstream connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStep {
    Tcp,
    /// The TLS handshake: an untrusted certificate, a peer that closed mid-handshake, ...
    Tls,
    TimedOut,
}

impl ConnectStep {
    /// Reads the step from a connect error's chain: anything the TCP step or the overall
    /// timeout did not mark happened in the TLS handshake.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> ConnectStep {
        let mut current = Some(error);
        while let Some(e) = current {
            match e.downcast_ref::<ConnectFailure>() {
                Some(ConnectFailure::Tcp(_)) => return ConnectStep::Tcp,
                Some(ConnectFailure::TimedOut(_)) => return ConnectStep::TimedOut,
                None => current = e.source(),
            }
        }
        ConnectStep::Tls
    }
}

/// The TCP step, with its failures marked as [`ConnectFailure::Tcp`].
#[derive(Debug, Clone)]
pub struct TcpConnector(HttpConnector);

impl tower::Service<Uri> for TcpConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting<TokioIo<TcpStream>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| Box::new(ConnectFailure::Tcp(e.into())) as BoxError)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            connecting
                .await
                .map_err(|e| Box::new(ConnectFailure::Tcp(e.into())) as BoxError)
        })
    }
}

/// TCP, then TLS for https://, within `[upstream] connect_timeout_ms` as a whole: a peer
/// that accepts TCP but never finishes the handshake is a connect failure (nothing was
/// sent), not a response timeout.
#[derive(Debug, Clone)]
pub struct UpstreamConnector {
    https: HttpsConnector<TcpConnector>,
    timeout: Duration,
}

impl tower::Service<Uri> for UpstreamConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting<Self::Response>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.https.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or_else(|_| Err(Box::new(ConnectFailure::TimedOut(timeout))))
        })
    }
}

/// Builds one client, whose connection pool every call through it shares.
pub fn build_client(config: &UpstreamConfig) -> anyhow::Result<UpstreamClient> {
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector(config)?))
}

/// The pools forwarded calls go out on: one for each of `workers`, and a shared one.
pub(crate) fn build_pools(
    config: &UpstreamConfig,
    target: &crate::config::UpstreamTarget,
    workers: usize,
) -> anyhow::Result<pool::UpstreamPools> {
    let settings = pool::PoolSettings {
        max_idle: config.pool_max_idle_per_host,
        idle_timeout: Duration::from_millis(config.pool_idle_timeout_ms),
    };
    Ok(pool::UpstreamPools::new(
        &connector(config)?,
        target,
        settings,
        workers,
    ))
}

fn connector(config: &UpstreamConfig) -> anyhow::Result<UpstreamConnector> {
    let mut http = HttpConnector::new();
    // The https connector decides the scheme; the inner connector must accept both.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    let tls = tls_config(config)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(TcpConnector(http));
    Ok(UpstreamConnector {
        https,
        timeout: Duration::from_millis(config.connect_timeout_ms),
    })
}

fn tls_config(config: &UpstreamConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if !config.ca_file.is_empty() {
        let pem = std::fs::read(&config.ca_file)
            .with_context(|| format!("reading [upstream] ca_file {}", config.ca_file))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.with_context(|| format!("parsing PEM in {}", config.ca_file))?;
            roots
                .add(cert)
                .with_context(|| format!("adding a CA from {}", config.ca_file))?;
            added += 1;
        }
        anyhow::ensure!(
            added > 0,
            "[upstream] ca_file {} holds no certificate",
            config.ca_file
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
