//! Connections that stay open with no call on them: HTTP/2 and HTTP/1.1 keep-alive alike
//! are closed once idle for `[server] idle_timeout_ms`, and a call in flight is never cut.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::hubgate_with;

#[tokio::test]
async fn idle_h2_and_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let upstream = echo::start().await;
    let (gateway, _config) =
        hubgate_with(&format!("http://{upstream}"), "idle_timeout_ms = 1500", "");

    // HTTP/2 (prior knowledge): one call, then nothing.
    let stream = TcpStream::connect(gateway.proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let h2_open = tokio::spawn(connection);
    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    let h2_idle = Instant::now();

    // HTTP/1.1 keep-alive: one call, then nothing.
    let mut h1 = TcpStream::connect(gateway.proxy).await.unwrap();
    h1.write_all(b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: hubgate\r\n\r\n")
        .await
        .unwrap();
    let h1_idle = Instant::now();
    let h1_closed = tokio::spawn(async move {
        let mut seen = Vec::new();
        let _ = h1.read_to_end(&mut seen).await;
        seen
    });

    let h2_closed = tokio::time::timeout(Duration::from_secs(8), h2_open).await;
    let h2_after = h2_idle.elapsed();
    let h1_seen = tokio::time::timeout(Duration::from_secs(8), h1_closed).await;
    let h1_after = h1_idle.elapsed();
    eprintln!(
        "idle h2 connection closed: {} after {h2_after:?}; idle keep-alive connection closed: {} after {h1_after:?}",
        h2_closed.is_ok(),
        h1_seen.is_ok()
    );
    assert!(h2_closed.is_ok(), "the idle h2 connection is closed");
    assert!(
        h2_after >= Duration::from_millis(1200),
        "not before the idle timeout"
    );
    let h1_seen = h1_seen
        .expect("the idle keep-alive connection is closed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&h1_seen).starts_with("HTTP/1.1 200"),
        "its call was answered first"
    );
}

#[tokio::test]
async fn a_call_longer_than_the_idle_timeout_is_not_cut() {
    let slow = upstream(|_| async {
        // Longer than the idle timeout below.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        http::Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let (gateway, _config) = hubgate_with(&format!("http://{slow}"), "idle_timeout_ms = 1000", "");
    let (status, _, body) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"late");
}

#[tokio::test]
async fn an_h2_peer_that_stops_answering_pings_is_closed() {
    let upstream = echo::start().await;
    // The idle timeout is far away: only the keep-alive ping can close this connection.
    let (gateway, _config) = hubgate_with(
        &format!("http://{upstream}"),
        "idle_timeout_ms = 600000\nh2_keep_alive_interval_ms = 500\nh2_keep_alive_timeout_ms = 1000",
        "",
    );
    let mut peer = TcpStream::connect(gateway.proxy).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame; after that the peer reads (and so
    // sees every ping) but never acknowledges anything, like a client whose host is gone.
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut sink = [0u8; 1024];
        while peer.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    eprintln!(
        "an h2 peer that never acknowledges a ping: closed {} after {:?}",
        closed.is_ok(),
        started.elapsed()
    );
    assert!(closed.is_ok(), "closed once its ping went unanswered");
}
