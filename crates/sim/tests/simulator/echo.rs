//! Fidelity routes: `/__sim/echo` reports requests byte-exactly, `/__sim/bytes/{n}` streams a
//! reproducible pattern.

use std::convert::Infallible;

use crate::support::*;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn echo_reports_query_headers_and_method_exactly() {
    let (sim, c) = start(config()).await;
    let query = "a=1&a=2&b=%2F%20x+y&c=&%E2%9C%93=%e2%9c%93&empty";
    let req = http::Request::builder()
        .method("PATCH")
        .uri(format!("{}/__sim/echo/some/path%2Fx?{query}", c.base))
        .header("x-first", "1")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header(
            "x-latin",
            http::HeaderValue::from_bytes(b"caf\xe9").expect("hv"),
        )
        .body(full("hello"))
        .expect("req");
    let r = c.request(req).await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["method"], "PATCH");
    assert_eq!(b["path"], "/__sim/echo/some/path%2Fx");
    assert_eq!(b["query"], query);
    assert_eq!(b["body_len"], 5);
    assert_eq!(b["body_sha256"], hex::encode(Sha256::digest(b"hello")));
    let headers: Vec<(String, String)> = b["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h[0].as_str().expect("name").to_string(),
                h[1].as_str().expect("value").to_string(),
            )
        })
        .collect();
    let pos = |name: &str, value: &str| {
        headers
            .iter()
            .position(|(n, v)| n == name && v == value)
            .unwrap_or_else(|| panic!("{name}: {value} missing from {headers:?}"))
    };
    assert!(pos("x-first", "1") < pos("x-multi", "one"));
    assert!(pos("x-multi", "one") < pos("x-multi", "two"));
    pos("x-latin", "caf\u{fffd}");

    // No query at all is reported as null, an empty one as "".
    let r = c.call("GET", "/__sim/echo", None, None).await;
    assert!(r.json()["query"].is_null());
    let r = c.call("GET", "/__sim/echo/x?", None, None).await;
    assert_eq!(r.json()["query"], "");
    // Echo is free: no owner and no request counted.
    assert_eq!(sim.stats().totals.requests, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn echo_hashes_a_large_streamed_body() {
    let (sim, c) = start(config()).await;
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 80; // 20 MiB
    let chunk_bytes = |i: usize| -> Bytes {
        (0..CHUNK)
            .map(|j| ((i * 7 + j * 13) % 256) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    let mut expect = Sha256::new();
    for i in 0..CHUNKS {
        expect.update(chunk_bytes(i));
    }
    let stream = futures_util::stream::iter(
        (0..CHUNKS).map(move |i| Ok::<_, Infallible>(Frame::data(chunk_bytes(i)))),
    );
    let req = http::Request::post(format!("{}/__sim/echo/upload", c.base))
        .body(StreamBody::new(stream).boxed())
        .expect("req");
    let r = c.request(req).await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["body_len"], (CHUNK * CHUNKS) as u64);
    assert_eq!(b["body_sha256"], hex::encode(expect.finalize()));
    sim.shutdown().await;
}

#[tokio::test]
async fn bytes_route_streams_the_pattern_with_content_length() {
    let (sim, c) = start(config()).await;
    for n in [0u64, 1, 250, 251, 252, 3 * 1024 * 1024 + 17] {
        let r = c
            .call("GET", &format!("/__sim/bytes/{n}"), None, None)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(n.to_string()));
        assert_eq!(r.body.len() as u64, n);
        let expect: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            hex::encode(Sha256::digest(&r.body)),
            hex::encode(Sha256::digest(&expect)),
            "pattern differs for n={n}"
        );
    }
    assert_eq!(
        c.call("GET", "/__sim/bytes/xyz", None, None).await.status,
        400
    );
    sim.shutdown().await;
}
