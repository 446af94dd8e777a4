//! TLS: the simulator serves HTTPS with ALPN h2 and http/1.1 from PEM files.
//!
//! Real time: on paused time the server's handshake timeout would fire while the handshake
//! is still on the wire.

use std::sync::Arc;

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hubgate_sim::{SimConfig, Simulator};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls;

struct Pki {
    ca_der: Vec<u8>,
    /// Holds cert.pem and key.pem; removed when the test ends, even by a panic.
    dir: tempfile::TempDir,
}

fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");

    let dir = tempfile::tempdir().expect("tmp dir");
    std::fs::write(dir.path().join("cert.pem"), leaf.pem() + &ca_cert.pem()).expect("cert");
    std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).expect("key");
    Pki {
        ca_der: ca_cert.der().to_vec(),
        dir,
    }
}

fn connector(ca_der: &[u8], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn request(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {PAT}"))
        .header("host", "localhost")
        .body(Empty::new())
        .expect("req")
}

#[tokio::test]
async fn serves_https_over_h2_and_http1() {
    let pki = make_pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = Simulator::start(
        SimConfig {
            tls_cert_file: Some(pki.dir.path().join("cert.pem")),
            tls_key_file: Some(pki.dir.path().join("key.pem")),
            ..config()
        },
        listener,
    )
    .await
    .expect("start");
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");

    // h2 negotiated through ALPN.
    let tcp = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .expect("connect");
    let tls = connector(&pki.ca_der, &[b"h2", b"http/1.1"])
        .connect(name.clone(), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let resp = send
        .send_request(request("/crm/v3/objects/contacts"))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert!(resp.headers().contains_key("x-hubspot-ratelimit-max"));
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(v["results"].is_array());

    // http/1.1 only.
    let tcp = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .expect("connect");
    let tls = connector(&pki.ca_der, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let resp = send
        .send_request(request("/__sim/bytes/1000"))
        .await
        .expect("h1 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), 1000);

    sim.shutdown().await;
}

#[tokio::test]
async fn bad_tls_files_fail_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dir = tempfile::tempdir().expect("tmp dir");
    let missing = dir.path().join("missing.pem");
    let r = Simulator::start(
        SimConfig {
            tls_cert_file: Some(missing.clone()),
            tls_key_file: Some(missing),
            ..SimConfig::default()
        },
        listener,
    )
    .await;
    assert!(r.is_err());
}
