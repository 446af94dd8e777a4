//! TLS termination for the simulator: PEM loading and a rustls acceptor offering h2 and http/1.1.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

pub(crate) fn acceptor(cert_file: &Path, key_file: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert_file)
            .with_context(|| format!("opening TLS certificate {}", cert_file.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading TLS certificate {}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        cert_file.display()
    );
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key_file)
            .with_context(|| format!("opening TLS key {}", key_file.display()))?,
    ))
    .with_context(|| format!("reading TLS key {}", key_file.display()))?
    .with_context(|| format!("no private key in {}", key_file.display()))?;
    // The provider is explicit so that the choice never depends on which crypto features
    // other crates in the graph happen to enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("building TLS server config")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
