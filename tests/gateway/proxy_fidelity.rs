//! The proxy is transparent: methods, targets, headers and bodies reach the upstream as
//! the caller sent them, and answers come back unchanged, over real sockets.

use std::time::Duration;

use crate::support::echo;
use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn methods_paths_and_queries_arrive_byte_for_byte() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let targets = [
        "/crm/v3/objects/contacts?properties=email&properties=firstname&archived=false",
        "/crm/objects/2026-03/contacts/123?idProperty=email",
        "/crm/objects/2026-09-beta/deals/search",
        "/files/v3/files/a..b/%2E%2E%2E/passwd?x=%2e%2e%2F&y=..",
        "/a//b/%7Ec/?q=%2F%20b&b=%E2%9C%93&c=&&d&e=1+2&f=a%26b",
        "/contacts/v1/lists/all/contacts/all?hapikey=abc&count=2&vidOffset=0",
    ];
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        for target in targets {
            let request = Request::builder()
                .method(method)
                .uri(gateway.url(target))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let (status, headers, body) = send(request).await;
            assert_eq!(status, StatusCode::OK);
            let seen = echo::parse(&body);
            assert_eq!(seen.method, method);
            assert_eq!(
                seen.target, target,
                "target must not be normalised or re-encoded"
            );
            assert_eq!(headers["x-hubspot-correlation-id"], "corr-echo-1");
        }
    }
}

#[tokio::test]
async fn end_to_end_headers_pass_and_hop_by_hop_headers_do_not() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let request = "GET /crm/v3/objects/contacts HTTP/1.1\r\n\
        Host: hubgate.internal:8080\r\n\
        Authorization: Bearer pat-na1-11111111-2222-3333-4444-555555555555\r\n\
        X-Custom: first\r\n\
        X-Custom: second\r\n\
        User-Agent: hubspot-api-client-python; 12.0.0\r\n\
        Accept-Encoding: gzip\r\n\
        Connection: close, X-Hop-Secret\r\n\
        X-Hop-Secret: must-not-pass\r\n\
        Keep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        TE: trailers\r\n\
        Upgrade: h2c\r\n\
        \r\n";
    let response = raw(gateway.proxy, request.as_bytes(), Duration::from_secs(5)).await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = echo::parse(&Bytes::from(body.to_string()));
    assert_eq!(
        seen.header_values("authorization"),
        ["Bearer pat-na1-11111111-2222-3333-4444-555555555555"]
    );
    assert_eq!(seen.header_values("x-custom"), ["first", "second"]);
    assert_eq!(
        seen.header_values("user-agent"),
        ["hubspot-api-client-python; 12.0.0"]
    );
    assert_eq!(seen.header_values("accept-encoding"), ["gzip"]);
    assert_eq!(seen.header_values("host"), [upstream.to_string()]);
    for hop in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(seen.header_values(hop).is_empty(), "{hop} must be stripped");
    }
    let request_id = seen.header_values("x-request-id");
    assert_eq!(request_id.len(), 1, "a request id is generated");
    assert_eq!(request_id[0].len(), 36, "uuid: {}", request_id[0]);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-request-id: {}", request_id[0])),
        "the caller sees the same id: {head}"
    );
}

#[tokio::test]
async fn a_callers_request_id_is_kept() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let request = Request::get(gateway.url("/crm/v3/objects/deals"))
        .header("x-request-id", "job-42-call-7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, headers, body) = send(request).await;
    assert_eq!(
        echo::parse(&body).header_values("x-request-id"),
        ["job-42-call-7"]
    );
    assert_eq!(headers["x-request-id"], "job-42-call-7");
}

#[tokio::test]
async fn binary_multipart_and_chunked_bodies_arrive_intact() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;

    let binary: Vec<u8> = (0..=255u8).cycle().take(256 * 1000).collect();
    let request = Request::post(gateway.url("/files/v3/files"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(binary.clone())))
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    let seen = echo::parse(&body);
    assert_eq!(seen.body_len, binary.len() as u64);
    assert_eq!(seen.body_sha256, echo::sha256_hex(&binary));

    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\nemail,name\r\na@b.c,\xff\xfe\x00\r\n--XyZ\r\nContent-Disposition: form-data; name=\"importRequest\"\r\n\r\n{\"name\":\"x\"}\r\n--XyZ--\r\n".to_vec();
    let request = Request::post(gateway.url("/crm/v3/imports"))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(Full::new(Bytes::from(multipart.clone())))
        .unwrap();
    let (_, _, body) = send(request).await;
    let seen = echo::parse(&body);
    assert_eq!(
        seen.header_values("content-type"),
        ["multipart/form-data; boundary=XyZ"]
    );
    assert_eq!(seen.body_sha256, echo::sha256_hex(&multipart));

    // No Content-Length: the body is chunked on both hops and must still arrive whole.
    let chunks: Vec<Bytes> = (0..50u8)
        .map(|i| Bytes::from(vec![i; 1000 + i as usize]))
        .collect();
    let mut expected = Sha256::new();
    chunks.iter().for_each(|c| expected.update(c));
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let seen = stream_upload(&gateway, chunks).await;
    assert_eq!(seen.body_len, total as u64);
    assert_eq!(seen.body_sha256, hex::encode(expected.finalize()));
}

async fn stream_upload(gateway: &Gateway, chunks: Vec<Bytes>) -> echo::Seen {
    let body = StreamBody::new(stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(c))),
    ));
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(gateway.url("/files/v3/files"))
        .body(body)
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    echo::parse(&response.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn twenty_mib_streams_both_ways() {
    const SIZE: usize = 20 * 1024 * 1024;
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;

    let chunk: Bytes = (0..64 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let chunks = vec![chunk.clone(); SIZE / chunk.len()];
    let mut expected = Sha256::new();
    chunks.iter().for_each(|c| expected.update(c));
    let seen = stream_upload(&gateway, chunks).await;
    assert_eq!(seen.body_len, SIZE as u64);
    assert_eq!(seen.body_sha256, hex::encode(expected.finalize()));

    let download: Bytes = (0..SIZE)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let served = download.clone();
    let big = upstream_with(move |_| {
        let served = served.clone();
        async move { Response::new(Full::new(served)) }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{big}"), |_| {}).await;
    let (status, _, body) = get(&gateway.url("/files/v3/files/1/download")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), SIZE);
    assert_eq!(echo::sha256_hex(&body), echo::sha256_hex(&download));
}

async fn upstream_with<F, Fut>(handler: F) -> std::net::SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    upstream(handler).await
}

#[tokio::test]
async fn gzip_bodies_pass_through_untouched() {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(br#"{"results":[{"id":"1","properties":{"email":"a@b.c"}}]}"#)
        .unwrap();
    let gzipped = Bytes::from(encoder.finish().unwrap());
    let served = gzipped.clone();
    let upstream = upstream(move |request: Request<hyper::body::Incoming>| {
        let served = served.clone();
        async move {
            assert_eq!(request.headers()["accept-encoding"], "gzip, deflate");
            Response::builder()
                .header("content-encoding", "gzip")
                .header("content-type", "application/json;charset=utf-8")
                .body(Full::new(served))
                .unwrap()
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("accept-encoding", "gzip, deflate")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(
        body, gzipped,
        "compressed bytes are passed on, not re-encoded"
    );
}

#[tokio::test]
async fn head_204_and_304_come_back_without_bodies() {
    let upstream = upstream(|request: Request<hyper::body::Incoming>| async move {
        let status = match request.uri().path() {
            "/no-content" => StatusCode::NO_CONTENT,
            "/not-modified" => StatusCode::NOT_MODIFIED,
            _ => StatusCode::OK,
        };
        let body = if status == StatusCode::OK {
            "twelve bytes"
        } else {
            ""
        };
        Response::builder()
            .status(status)
            .header("etag", "\"v1\"")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    })
    .await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    for (method, path, status) in [
        ("HEAD", "/crm/v3/objects/contacts", 200),
        ("DELETE", "/no-content", 204),
        ("GET", "/not-modified", 304),
    ] {
        // Raw bytes: a client library would hide a body that should not be there.
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = raw(gateway.proxy, request.as_bytes(), Duration::from_secs(5)).await;
        let (head, body) = response.split_once("\r\n\r\n").expect("complete response");
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert_eq!(body, "", "{method} {path} must have no body");
        assert!(head.to_ascii_lowercase().contains("etag: \"v1\""), "{head}");
        if method == "HEAD" {
            assert!(
                head.to_ascii_lowercase().contains("content-length: 12"),
                "{head}"
            );
        }
    }
}

#[tokio::test]
async fn a_path_in_the_base_url_is_kept_in_front_of_the_callers_target() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}/hubspot/"), |_| {}).await;
    for target in [
        "/crm/v3/objects/contacts?properties=email&archived=false",
        "/a//b/%7Ec?q=%2F%20b",
    ] {
        let (status, _, body) = get(&gateway.url(target)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo::parse(&body).target, format!("/hubspot{target}"));
    }
}

#[tokio::test]
async fn http2_callers_are_served() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::builder()
        .method(Method::POST)
        .uri(gateway.url("/crm/v3/objects/contacts?x=1&x=2"))
        .header("authorization", "Bearer oauth-token")
        .body(Full::new(Bytes::from_static(b"{\"properties\":{}}")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen = echo::parse(&response.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(seen.target, "/crm/v3/objects/contacts?x=1&x=2");
    assert_eq!(seen.header_values("authorization"), ["Bearer oauth-token"]);
    assert_eq!(seen.header_values("host"), [upstream.to_string()]);
    assert_eq!(seen.body_len, 17);
}

#[tokio::test]
async fn absolute_form_is_accepted_only_for_the_upstream_host() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let to_upstream = format!(
        "GET http://{upstream}/crm/v3/objects/contacts HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n"
    );
    let response = raw(
        gateway.proxy,
        to_upstream.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let forward_proxy_use =
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let response = raw(
        gateway.proxy,
        forward_proxy_use.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    let (status, headers, body) = parse_response(&response);
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::MISDIRECTED_REQUEST);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("not a forward proxy"));
}
