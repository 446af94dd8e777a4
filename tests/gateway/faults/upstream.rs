//! Upstreams that reset, stall, fail the TLS handshake or answer garbage: a clear answer
//! (or a cut-off body once the status is out), and a call that may have arrived is never
//! sent again.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::*;

#[tokio::test]
async fn an_upstream_reset_mid_body_cuts_the_callers_response_and_is_not_sent_again() {
    // Headers and part of the body, then a TCP reset: once for a chunked answer, once for
    // one with a Content-Length. The reset waits until the caller has the head, so the cut
    // is mid-body and never before the answer.
    let head_arrived = Arc::new(tokio::sync::Notify::new());
    let reset_after = head_arrived.clone();
    let upstream = raw_upstream(move |mut stream| {
        let head_arrived = reset_after.clone();
        async move {
            let head = read_head(&mut stream).await;
            let text = String::from_utf8_lossy(&head).into_owned();
            let partial: &[u8] = if text.contains("chunked-answer") {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n10\r\n{\"results\":[1,2,\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"results\":[1,2,"
            };
            let _ = stream.write_all(partial).await;
            if text.contains("-answer") {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), head_arrived.notified()).await;
            }
            reset(stream);
            head
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), quick).await;
    let tasks_before = alive_tasks();

    for (n, marker) in ["chunked-answer", "sized-answer"].into_iter().enumerate() {
        let request = Request::post(gateway.url(&format!("{LIST}?{marker}")))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
            .await
            .expect("an answer within 20 s")
            .expect("a response head");
        head_arrived.notify_one();
        let status = response.status();
        let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
            .await
            .expect("the body ends within 20 s")
            .map(|collected| collected.to_bytes());
        assert_eq!(status, StatusCode::OK, "the head came before the reset");
        assert!(
            body.is_err(),
            "{marker}: the cut body must end with an error, got {body:?}"
        );
        assert_eq!(
            upstream.connections(),
            n + 1,
            "{marker}: a POST is sent once"
        );
    }
    assert_eq!(gateway.answered().await, 2.0);
    recovers(&gateway, 2.0).await;
    assert_tasks_return_to(tasks_before, 2, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_upstream_reset_before_answering_is_a_502_and_only_idempotent_calls_go_again() {
    let upstream = raw_upstream(|mut stream| async move {
        let head = read_head(&mut stream).await;
        reset(stream);
        head
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        quick(c);
        c.retry.max_retries = 2;
    })
    .await;

    let (status, headers, body) = call(post(&gateway, "{}")).await;
    let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("may or may not"),
        "{error}"
    );
    assert_eq!(
        upstream.connections(),
        1,
        "a POST that may have arrived goes once"
    );

    let (status, headers, body) = call(get_request(&gateway)).await;
    assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.connections(), 1 + 3, "a GET goes again, twice");
    assert_eq!(gateway.answered().await, 2.0);
    recovers(&gateway, 2.0).await;
}

#[tokio::test]
async fn an_upstream_stalling_after_its_headers_is_cut_at_the_body_idle_timeout() {
    let upstream = raw_upstream(|mut stream| async move {
        let head = read_head(&mut stream).await;
        let chunked = String::from_utf8_lossy(&head).contains("chunked-answer");
        let partial: &[u8] = if chunked {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello"
        };
        let _ = stream.write_all(partial).await;
        // Then nothing (the stall under test), with the connection open, for longer than
        // any test.
        tokio::time::sleep(Duration::from_secs(120)).await;
        head
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        quick(c);
        c.upstream.body_idle_timeout_ms = 500;
    })
    .await;

    for marker in ["chunked-answer", "sized-answer"] {
        let started = Instant::now();
        let request = Request::get(gateway.url(&format!("{LIST}?{marker}")))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = call(request).await;
        let waited = started.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.is_err(),
            "{marker}: a stalled body is cut off: {body:?}"
        );
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_millis(500 + 1_500),
            "{marker}: cut after {waited:?}, the idle timeout is 500 ms"
        );
    }
    // The stalled upstream connections are dropped with the cut responses, not pooled.
    assert_eq!(gateway.answered().await, 2.0);
    gateway.assert_settles(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_peer_closing_or_stalling_the_tls_handshake_is_a_502_naming_tls() {
    // Reads the ClientHello and hangs up.
    let closes = raw_upstream(|mut stream| async move {
        let mut hello = vec![0u8; 512];
        let n = stream.read(&mut hello).await.unwrap_or(0);
        hello.truncate(n);
        hello
    })
    .await;
    let gateway = Gateway::start(&format!("https://{}", closes.addr), |c| {
        quick(c);
        c.retry.max_retries = 1;
    })
    .await;
    let (status, headers, body) = call(post(&gateway, "{}")).await;
    let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("TLS handshake"), "{message}");
    assert!(message.contains("nothing was sent"), "{message}");
    // Nothing was sent, so even a POST is tried again.
    assert_eq!(closes.connections(), 2);
    let hello = closes.received.lock().unwrap()[0].clone();
    assert_eq!(
        hello.first(),
        Some(&0x16),
        "a TLS handshake record was sent"
    );

    // Reads the ClientHello and never answers: a connect failure within
    // connect_timeout_ms, not a response timeout.
    let stalls = raw_upstream(|mut stream| async move {
        let mut hello = vec![0u8; 512];
        let _ = stream.read(&mut hello).await;
        // The stall under test: silence, the connection open, for longer than any test.
        tokio::time::sleep(Duration::from_secs(120)).await;
        hello
    })
    .await;
    let gateway = Gateway::start(&format!("https://{}", stalls.addr), |c| {
        quick(c);
        c.retry.max_retries = 0;
        c.upstream.connect_timeout_ms = 300;
        c.upstream.response_timeout_ms = 10_000;
    })
    .await;
    let started = Instant::now();
    let (status, headers, body) = call(post(&gateway, "{}")).await;
    let waited = started.elapsed();
    let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("connect_timeout_ms"),
        "{error}"
    );
    assert!(waited < Duration::from_millis(300 + 1_500), "{waited:?}");
    gateway.assert_settles(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn garbage_from_the_upstream_is_a_502_and_a_post_is_not_sent_again() {
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("not-http", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        (
            "bad-status",
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        (
            "two-lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
        ),
        ("huge-header", {
            let mut huge = b"HTTP/1.1 200 OK\r\nx-huge: ".to_vec();
            huge.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
            huge.extend_from_slice(b"\r\n\r\n");
            huge
        }),
    ];
    let answers = Arc::new(garbage.clone());
    let upstream = raw_upstream(move |mut stream| {
        let answers = answers.clone();
        async move {
            let head = read_head(&mut stream).await;
            let text = String::from_utf8_lossy(&head).into_owned();
            if let Some((_, answer)) = answers.iter().find(|(name, _)| text.contains(name)) {
                let _ = stream.write_all(answer).await;
            }
            let _ = stream.shutdown().await;
            head
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), quick).await;
    for (n, (name, _)) in garbage.iter().enumerate() {
        let request = Request::post(gateway.url(&format!("{LIST}?{name}")))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (status, headers, body) = call(request).await;
        let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("failed before answering"),
            "{name}: {error}"
        );
        assert_eq!(upstream.connections(), n + 1, "{name}: sent once");
    }
    assert_eq!(gateway.answered().await, garbage.len() as f64);
    recovers(&gateway, garbage.len() as f64).await;
}
