//! Bad input over raw sockets: conflicting framing, oversized and slow headers, bytes that
//! do not belong in headers, forward-proxy targets, dot segments (refused) and malformed
//! `X-Hubgate-*` headers. Each gets a clear 4xx (HubSpot-shaped JSON wherever hubgate
//! itself sees the request) and the gateway keeps serving.
//!
//! Some requests are refused by hyper while parsing, before any of hubgate's code runs;
//! hyper answers those with a bare status and closes the connection, and has no hook to
//! answer otherwise. Those tests assert the status, the close, and that hubgate never
//! counted a call.

use std::time::Duration;

use crate::support::echo;
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"))
}

/// A request hyper refuses itself: a bare `status`, the connection closed, nothing
/// reaching hubgate; then the gateway serves the next caller.
async fn refused_by_hyper(gateway: &Gateway, request: &[u8], status: u16) {
    let answered_before = gateway.answered().await;
    let (response, closed) = raw_until_closed(gateway.proxy, request, WAIT).await;
    assert_eq!(
        status_of(&response),
        status,
        "{:?}: {response:?}",
        String::from_utf8_lossy(request)
    );
    assert!(closed, "the connection is closed after {response:?}");
    assert_eq!(
        gateway.answered().await,
        answered_before,
        "hubgate never saw it"
    );
    still_serves(gateway).await;
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_only_and_the_connection_closed() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    // A smuggling attempt both ways round: a reader trusting Content-Length would take
    // "5\r\nh" as the body and the rest as a second request.
    for framing in [
        "content-length: 4\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 4\r\n",
    ] {
        let answered_before = gateway.answered().await;
        let request = format!(
            "POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\n{framing}\r\n\
             5\r\nhello\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
        );
        let (response, closed) = raw_until_closed(gateway.proxy, request.as_bytes(), WAIT).await;
        assert!(closed, "the connection closes after the one answer");
        assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
        let (status, _, body) = parse_response(&response);
        assert_eq!(status, StatusCode::OK);
        let seen = echo::parse(&body);
        assert_eq!(seen.target, "/crm/v3/objects/contacts");
        assert_eq!(seen.body_len, 5, "the chunked body, whole");
        assert_eq!(seen.body_sha256, echo::sha256_hex(b"hello"));
        assert_eq!(
            seen.header_values("content-length"),
            ["5"],
            "the caller's conflicting length is not passed on"
        );
        assert!(seen.header_values("transfer-encoding").is_empty());
        assert_eq!(
            gateway.answered().await,
            answered_before + 1.0,
            "the smuggled request was never read"
        );
    }
    still_serves(&gateway).await;
}

#[tokio::test]
async fn conflicting_content_lengths_get_400_and_equal_ones_pass() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    refused_by_hyper(
        &gateway,
        b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        400,
    )
    .await;
    refused_by_hyper(
        &gateway,
        b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 6\r\n\r\nhello!",
        400,
    )
    .await;
    let (response, _) = raw_until_closed(
        gateway.proxy,
        b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        WAIT,
    )
    .await;
    let (status, _, body) = parse_response(&response);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo::parse(&body).body_len, 5);
}

#[tokio::test]
async fn headers_beyond_what_hubgate_buffers_get_431_and_the_connection_closes() {
    let upstream = echo::start().await;
    // hubgate answers 4-8 KiB itself with JSON (the bounds module); beyond its 16 KiB
    // buffer hyper stops reading.
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.max_header_bytes = 4096
    })
    .await;
    let huge = format!(
        "GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\nx-huge: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    refused_by_hyper(&gateway, huge.as_bytes(), 431).await;
    let many: String = (0..150).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let many = format!("GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    refused_by_hyper(&gateway, many.as_bytes(), 431).await;
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_while_other_callers_are_served() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.header_read_timeout_ms = 500
    })
    .await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(gateway.proxy).await.unwrap();
    let trickle = async {
        let header = b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\nx-slow: ";
        for byte in header.iter().chain(std::iter::repeat(&b'a')) {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            // The slow caller under test: a byte every 50 ms, each well inside any idle
            // timeout, the whole never finishing.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut answer)).await;
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    };
    let others = async {
        for _ in 0..5 {
            still_serves(&gateway).await;
            // Spread over the trickle, so other callers are served while it goes on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ((cut_after, answer), ()) = tokio::join!(trickle, others);
    assert!(
        cut_after < Duration::from_millis(500 + 1_500),
        "a byte every 50 ms did not keep the connection past the 500 ms header timeout; cut after {cut_after:?}"
    );
    // hyper closes such a connection without an answer; it has no 408 for it.
    assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    still_serves(&gateway).await;
}

#[tokio::test]
async fn control_characters_and_bad_names_in_headers_get_400() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    for bad in [&b"\0"[..], b"\x01", b"\x1b", b"\x7f", b"\r"] {
        let request = [
            &b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\nx-bad: a"[..],
            bad,
            b"b\r\n\r\n",
        ]
        .concat();
        refused_by_hyper(&gateway, &request, 400).await;
    }
    for bad_name in [&b"x bad"[..], b"x\xe9", b"x:bad\x01"] {
        let request = [
            &b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\n"[..],
            bad_name,
            b": 1\r\n\r\n",
        ]
        .concat();
        refused_by_hyper(&gateway, &request, 400).await;
    }
}

#[tokio::test]
async fn garbage_request_lines_get_400() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"G@T /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /crm/v3/objects/contacts HTTP/9.9\r\nhost: x\r\n\r\n",
        b"GET /crm/v3/objects/con tacts HTTP/1.1\r\nhost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        // HTTP/1.0 has no chunked framing; a body framed so is refused, not guessed at.
        b"POST /crm/v3/objects/contacts HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        // A transfer coding other than chunked last leaves the body's end unknown.
        b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
    ] {
        refused_by_hyper(&gateway, request, 400).await;
    }
}

#[tokio::test]
async fn non_ascii_header_bytes_pass_through_unless_hubgate_must_read_them() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    // obs-text (0x80-0xFF) is legal in a header value: passed on byte for byte, and a
    // credential hubgate cannot read as text is HubSpot's to refuse (it answers 401).
    let request = b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\nx-custom: caf\xe9\r\nauthorization: Bearer tok\xe9n\r\nconnection: close\r\n\r\n";
    let (response, _) = raw_until_closed(gateway.proxy, request, WAIT).await;
    let (status, _, body) = parse_response(&response);
    assert_eq!(status, StatusCode::OK);
    let seen = echo::parse(&body);
    assert_eq!(seen.header_values("x-custom"), ["caf\u{fffd}"]);
    assert_eq!(seen.header_values("authorization"), ["Bearer tok\u{fffd}n"]);
    // hubgate's own headers are read by hubgate: such bytes get a 400 naming the header.
    for (name, value, shown) in [
        ("X-Hubgate-Caller", &b"caf\xe9"[..], "caf\u{fffd}"),
        ("X-Hubgate-Priority", b"h\xefgh", "h\u{fffd}gh"),
        ("X-Hubgate-Deadline-Ms", b"5\xe90", "5\u{fffd}0"),
    ] {
        let request = [
            format!(
                "GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{name}: "
            )
            .as_bytes(),
            value,
            b"\r\n\r\n",
        ]
        .concat();
        let (response, _) = raw_until_closed(gateway.proxy, &request, WAIT).await;
        let (status, headers, body) = parse_response(&response);
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(name), "{error}");
        assert!(message.contains(shown), "the value as sent: {error}");
    }
    still_serves(&gateway).await;
}

#[tokio::test]
async fn malformed_hubgate_headers_get_400_json_naming_the_header() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let long_name = "a".repeat(200);
    let cases = [
        ("X-Hubgate-Deadline-Ms", "soon"),
        ("X-Hubgate-Deadline-Ms", "-1"),
        ("X-Hubgate-Deadline-Ms", "1.5"),
        ("X-Hubgate-Deadline-Ms", "5000ms"),
        ("X-Hubgate-Deadline-Ms", ""),
        ("X-Hubgate-Deadline-Ms", "99999999999999999999999"),
        ("X-Hubgate-Priority", "urgent"),
        ("X-Hubgate-Priority", "high,low"),
        ("X-Hubgate-Priority", ""),
        ("X-Hubgate-Caller", "has space"),
        ("X-Hubgate-Caller", ""),
        ("X-Hubgate-Caller", &long_name),
    ];
    for (name, value) in cases {
        let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, headers, body) = send(request).await;
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(
            error["message"].as_str().unwrap().contains(name),
            "{name}: {value:?}: {error}"
        );
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="bad_request"}"#),
        Some(cases.len() as f64)
    );
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="forwarded"}"#),
        Some(0.0),
        "none reached the upstream"
    );
    still_serves(&gateway).await;
}

#[tokio::test]
async fn absolute_form_targets_may_name_hubgate_or_the_upstream_only() {
    let upstream = echo::start().await;
    // The upstream by name, so that it and hubgate (127.0.0.1) are different hosts.
    let upstream = format!("localhost:{}", upstream.port());
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let port = gateway.proxy.port();
    for allowed in [
        format!("http://{}/crm/v3/objects/contacts?a=1", gateway.proxy),
        format!("http://{upstream}/crm/v3/objects/contacts?a=1"),
    ] {
        let request = format!("GET {allowed} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let (response, _) = raw_until_closed(gateway.proxy, request.as_bytes(), WAIT).await;
        let (status, _, body) = parse_response(&response);
        assert_eq!(status, StatusCode::OK, "{allowed}: {response}");
        assert_eq!(
            echo::parse(&body).target,
            "/crm/v3/objects/contacts?a=1",
            "{allowed}"
        );
    }
    for refused in [
        "http://evil.example/".to_string(),
        format!("http://evil.example:{port}/crm/v3/objects/contacts"),
        format!("http://127.0.0.2:{port}/crm/v3/objects/contacts"),
        "https://evil.example/crm/v3/objects/contacts".to_string(),
    ] {
        let request =
            format!("GET {refused} HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n");
        let (response, _) = raw_until_closed(gateway.proxy, request.as_bytes(), WAIT).await;
        let (status, headers, body) = parse_response(&response);
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::MISDIRECTED_REQUEST);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("not a forward proxy"),
            "{refused}: {error}"
        );
    }
    still_serves(&gateway).await;
}

#[tokio::test]
async fn dot_segments_are_refused_never_resolved() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    for (target, why) in [
        ("/crm/v3/objects/../../x/%2e%2e/y?q=..", "'.' or '..'"),
        ("/crm/v3/objects/./contacts/..%2f..%2fadmin", "'.' or '..'"),
        ("/crm/v3/objects/contacts/..;/..;/x", "';'"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let (response, _) = raw_until_closed(gateway.proxy, request.as_bytes(), WAIT).await;
        let (status, headers, body) = parse_response(&response);
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(
            error["message"].as_str().unwrap().contains(why),
            "{target}: {error}"
        );
    }
    // Never forwarded: every answer was hubgate's own.
    assert_eq!(
        metric_sum(
            &gateway.metrics().await,
            "hubgate_upstream_responses_total{"
        ),
        0.0
    );
    // A `..` inside a segment or in the query is data, and passes byte for byte.
    let target = "/crm/v3/objects/a..b/%2E%2E%2E?q=../..";
    let request = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let (response, _) = raw_until_closed(gateway.proxy, request.as_bytes(), WAIT).await;
    let (status, _, body) = parse_response(&response);
    assert_eq!(status, StatusCode::OK, "{target}");
    assert_eq!(echo::parse(&body).target, target, "byte for byte");
    still_serves(&gateway).await;
}
