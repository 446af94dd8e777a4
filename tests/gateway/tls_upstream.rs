//! TLS to the upstream: a real handshake against a server whose CA exists only in this
//! test, trusted through `[upstream] ca_file` and refused without it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::pki::{make_pki, TestPki};
use crate::support::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// A TLS acceptor with the test's server certificate, offering `alpn`.
fn acceptor(pki: &TestPki, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An HTTPS upstream on 127.0.0.1:0 that answers every call with 200 and the ALPN protocol.
async fn tls_upstream(pki: &TestPki) -> std::net::SocketAddr {
    tls_upstream_counted(pki, None).await.0
}

/// [`tls_upstream`], with a count of the connections it accepted; with `close_after`, each
/// connection is dropped that long after it was accepted, as an upstream's idle timer does.
async fn tls_upstream_counted(
    pki: &TestPki,
    close_after: Option<Duration>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let acceptor = acceptor(pki, &[b"h2", b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let body =
                            format!("tls ok {:?} {}", request.version(), request.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serving = builder.serve_connection(TokioIo::new(tls), service);
                match close_after {
                    Some(after) => drop(tokio::time::timeout(after, serving).await),
                    None => drop(serving.await),
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn upstream_tls_is_trusted_through_ca_file() {
    let pki = make_pki();
    let upstream = tls_upstream(&pki).await;
    let ca_file = pki.ca_file();
    let ca_path = ca_file.path().to_str().unwrap().to_string();

    let gateway = Gateway::start(&format!("https://{upstream}"), |c| {
        c.upstream.ca_file = ca_path
    })
    .await;
    let (status, _, body) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8(body.to_vec()).unwrap();
    // h2 is negotiated by ALPN when the upstream offers it, as api.hubapi.com does.
    assert_eq!(body, "tls ok HTTP/2.0 /crm/v3/objects/contacts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_is_one_connection_shared_by_concurrent_calls() {
    let pki = make_pki();
    let (upstream, connections) = tls_upstream_counted(&pki, None).await;
    let ca_file = pki.ca_file();
    let ca_path = ca_file.path().to_str().unwrap().to_string();
    // One worker thread, so one pool: each worker keeps connections of its own.
    let gateway = Arc::new(
        Gateway::start(&format!("https://{upstream}"), |c| {
            c.upstream.ca_file = ca_path;
            c.server.workers = hubgate::config::Workers::Count(1);
        })
        .await,
    );
    // The first call learns by ALPN that the upstream speaks h2.
    let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move { get(&gateway.url("/crm/v3/objects/contacts")).await })
        })
        .collect();
    for call in calls {
        let (status, _, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"tls ok HTTP/2.0 /crm/v3/objects/contacts");
    }
    let opened = connections.load(Ordering::SeqCst);
    eprintln!("21 calls to an h2 upstream: {opened} connections");
    assert_eq!(opened, 1, "every call shared the first h2 connection");
}

#[tokio::test]
async fn a_shared_h2_connection_the_upstream_closed_is_opened_again() {
    let pki = make_pki();
    let (upstream, connections) =
        tls_upstream_counted(&pki, Some(Duration::from_millis(200))).await;
    let ca_file = pki.ca_file();
    let ca_path = ca_file.path().to_str().unwrap().to_string();
    // The pool's reconnection, not hubgate's retries of a failed call.
    let gateway = Gateway::start(&format!("https://{upstream}"), |c| {
        c.upstream.ca_file = ca_path;
        c.retry.max_retries = 0;
    })
    .await;
    for i in 0..3 {
        let (status, _, body) = get(&gateway.url("/crm/v3/objects/contacts")).await;
        assert_eq!(status, StatusCode::OK, "call {i}: {body:?}");
        assert_eq!(&body[..], b"tls ok HTTP/2.0 /crm/v3/objects/contacts");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "one h2 connection per call"
    );
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_refused_with_502() {
    let pki = make_pki();
    let upstream = tls_upstream(&pki).await;
    let gateway = Gateway::start(&format!("https://{upstream}"), |_| {}).await;
    let (status, headers, body) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_GATEWAY);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("TLS handshake"), "{message}");
    let message = message.to_ascii_lowercase();
    assert!(
        message.contains("certificate") || message.contains("issuer"),
        "{message}"
    );
}

/// An HTTPS upstream (HTTP/1.1 only) that takes `delay` over every TLS handshake, as a far
/// HubSpot does over a new connection, and records when each call arrives.
async fn slow_handshake_upstream(
    pki: &TestPki,
    delay: Duration,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let acceptor = acceptor(pki, &[b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // The far HubSpot under test: every new connection's handshake takes `delay`.
                tokio::time::sleep(delay).await;
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |_: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(Instant::now());
                        async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_waiting_for_a_new_connection_hold_their_slot_from_when_they_left() {
    let _turn = heavy_turn().await;
    const LIMIT: usize = 10;
    const WINDOW: Duration = Duration::from_millis(1_000);
    let pki = make_pki();
    let (upstream, arrivals) = slow_handshake_upstream(&pki, Duration::from_millis(300)).await;
    let ca_file = pki.ca_file();
    let ca_path = ca_file.path().to_str().unwrap().to_string();
    let gateway = Arc::new(
        Gateway::start(&format!("https://{upstream}"), |c| {
            c.upstream.ca_file = ca_path;
            c.budgets.burst_limit = LIMIT as u32;
            c.budgets.burst_window_ms = WINDOW.as_millis() as u64;
            // Room for a busy machine between a handshake's end and the call's arrival,
            // far below the 300 ms the handshakes take.
            c.budgets.burst_margin_ms = 50;
            c.credentials = vec![hubgate::config::StaticCredential {
                token: Some("pat-na1-cold".into()),
                token_sha256: None,
                app_id: 1,
                portal_id: 1,
            }];
        })
        .await,
    );
    // From a cold pool: the first window's calls are stamped at once but leave only when
    // their handshakes end, 300 ms later; the second window's calls queue behind them and
    // go over the pooled connections without delay. Stamped at admission, they would
    // leave 1,050 ms after the first stamps, 750 ms after the first arrivals.
    let calls: Vec<_> = (0..2 * LIMIT)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let request = http::Request::get(gateway.url("/crm/v3/objects/contacts"))
                    .header("authorization", "Bearer pat-na1-cold")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                send(request).await.0
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    assert_eq!(arrivals.len(), 2 * LIMIT, "every call arrived once");
    let most_in_a_window = (0..arrivals.len())
        .map(|last| {
            arrivals[..=last]
                .iter()
                .filter(|&&at| arrivals[last].duration_since(at) < WINDOW)
                .count()
        })
        .max()
        .unwrap();
    let offsets: Vec<u128> = arrivals
        .iter()
        .map(|at| at.duration_since(arrivals[0]).as_millis())
        .collect();
    assert!(
        most_in_a_window <= LIMIT,
        "{most_in_a_window} arrivals in one rolling window of {WINDOW:?} (limit {LIMIT}); \
         arrivals at ms {offsets:?}"
    );
}
