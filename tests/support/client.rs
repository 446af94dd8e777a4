//! Clients over real sockets: hyper's, and raw bytes for what a client library would hide.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 client (fresh connection pool per call keeps tests independent).
pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) async fn send(request: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("gateway answered within 30 s")
        .expect("request completed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    (parts.status, parts.headers, body)
}

pub(crate) async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

/// Sends raw bytes on a new connection and reads until the peer closes (`true`) or `wait`
/// passes (`false`).
pub(crate) async fn raw_until_closed(
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Sends raw bytes on a new connection and reads until the peer closes or `wait` passes.
pub(crate) async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    raw_until_closed(addr, bytes, wait).await.0
}

/// Splits a raw HTTP/1.1 response with a Content-Length (or no) body into its parts.
pub(crate) fn parse_response(response: &str) -> (StatusCode, HeaderMap, Bytes) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {response:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    (
        StatusCode::from_u16(status).unwrap(),
        headers,
        Bytes::from(body.to_string()),
    )
}

pub(crate) fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Asserts the HubSpot error shape hubgate promises for its own errors.
pub(crate) fn assert_hubspot_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
    expected: StatusCode,
) -> serde_json::Value {
    assert_eq!(status, expected, "body: {}", String::from_utf8_lossy(body));
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let value = json(body);
    assert_eq!(value["status"], "error");
    assert!(
        value["message"].as_str().is_some_and(|m| m.len() > 20),
        "message explains: {value}"
    );
    assert!(value["category"].is_string());
    let correlation = value["correlationId"].as_str().expect("correlationId");
    assert_eq!(headers["x-request-id"].to_str().unwrap(), correlation);
    value
}
