//! The one pooled HTTP client that talks to HubSpot: rustls with webpki roots plus an
//! optional CA bundle, HTTP/1.1 and h2 by ALPN, plain http:// for tests and the simulator.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::UpstreamConfig;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Builds the client once at start-up; every call shares its connection pool.
pub fn build_client(config: &UpstreamConfig) -> anyhow::Result<UpstreamClient> {
    let mut http = HttpConnector::new();
    // The https connector decides the scheme; the inner connector must accept both.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
    let tls = tls_config(config)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
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
