//! hubgate's own answers: oversized input, slow callers, unreachable or slow upstreams.
//! Each is a clear HubSpot-shaped error and the gateway keeps serving afterwards.

use std::time::Duration;

use crate::support::echo;
use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

#[tokio::test]
async fn declared_oversized_body_gets_413_before_any_upload() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.max_body_bytes = 1024
    })
    .await;
    // Only the headers are sent: the answer must not wait for a body that never comes.
    let request = "POST /files/v3/files HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n";
    let response = raw(gateway.proxy, request.as_bytes(), Duration::from_secs(5)).await;
    let (status, headers, body) = parse_response(&response);
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    still_serves(&gateway).await;
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="bad_request"}"#),
        Some(1.0)
    );
}

/// POSTs `chunks` chunks of `chunk_bytes` each as one streamed body (no declared length)
/// through a gateway that accepts 10,000 bytes, and checks that the answer is its 413.
async fn streamed_body_over_the_limit_gets_413(chunks: usize, chunk_bytes: usize) {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.max_body_bytes = 10_000
    })
    .await;
    for _ in 0..3 {
        let frames = (0..chunks).map(move |_| {
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![7u8; chunk_bytes])))
        });
        let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
        let request = Request::post(gateway.url("/files/v3/files"))
            .body(StreamBody::new(stream::iter(frames)))
            .unwrap();
        let response = client
            .request(request)
            .await
            .expect("an answer, not a broken pipe");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        assert_hubspot_error(
            parts.status,
            &parts.headers,
            &body,
            StatusCode::PAYLOAD_TOO_LARGE,
        );
    }
    still_serves(&gateway).await;
}

#[tokio::test]
async fn streamed_oversized_body_gets_413() {
    streamed_body_over_the_limit_gets_413(100, 1000).await;
}

/// An HTTP/1 client writes its whole body before it reads the answer: hubgate reads the
/// rest of a body it refused (and throws it away), so the client gets its 413 and not a
/// broken pipe.
#[tokio::test]
async fn a_body_megabytes_over_the_limit_is_read_to_its_end_so_the_caller_gets_its_413() {
    streamed_body_over_the_limit_gets_413(64, 64 * 1024).await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.max_header_bytes = 4096
    })
    .await;
    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("x-big", "a".repeat(5000))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(request).await;
    assert_hubspot_error(
        status,
        &headers,
        &body,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    );
    still_serves(&gateway).await;
}

#[tokio::test]
async fn connect_is_refused_with_405() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let request = "CONNECT api.hubapi.com:443 HTTP/1.1\r\nHost: api.hubapi.com:443\r\n\r\n";
    let response = raw(gateway.proxy, request.as_bytes(), Duration::from_secs(2)).await;
    let (status, headers, body) = parse_response(&response);
    assert_hubspot_error(status, &headers, &body, StatusCode::METHOD_NOT_ALLOWED);
    still_serves(&gateway).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_by_the_header_read_timeout() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.header_read_timeout_ms = 300
    })
    .await;
    let started = Instant::now();
    // Headers that never finish: the connection must be closed, not held open forever.
    let response = raw(
        gateway.proxy,
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        Duration::from_secs(10),
    )
    .await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    assert!(!response.contains("200 OK"), "{response}");
    still_serves(&gateway).await;
}

#[tokio::test]
async fn unreachable_upstream_gets_502() {
    let closed = ClosedPort::new();
    let gateway = Gateway::start(&closed.url(), |_| {}).await;
    let (status, headers, body) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_GATEWAY);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{error}"
    );
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="upstream_error"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    let upstream = upstream(|_| async {
        // The slow upstream under test: far past the 200 ms response timeout.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.upstream.response_timeout_ms = 200
    })
    .await;
    let started = Instant::now();
    // A POST: a call that may have been processed is not sent again, so one timeout ends it.
    let request = Request::post(gateway.url("/crm/v3/objects/contacts"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (status, headers, body) = send(request).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("response_timeout_ms"),
        "{error}"
    );
}

#[tokio::test]
async fn forwarded_calls_are_counted_in_metrics() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    for _ in 0..3 {
        still_serves(&gateway).await;
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="forwarded"}"#),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_upstream_responses_total{status_class="2xx"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&metrics, "hubgate_upstream_duration_seconds_count"),
        Some(3.0)
    );
}
