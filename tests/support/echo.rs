//! An upstream that answers every call with what arrived, hashing the body as it streams.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

/// What the echo upstream saw of one call.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body_len: u64,
    pub(crate) body_sha256: String,
}

impl Seen {
    pub(crate) fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub(crate) async fn start() -> SocketAddr {
    super::upstream(|request: http::Request<hyper::body::Incoming>| async move {
        let (parts, mut body) = request.into_parts();
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                len += data.len() as u64;
                hasher.update(&data);
            }
        }
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let seen = serde_json::json!({
            "method": parts.method.as_str(),
            "target": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
            "headers": headers,
            "body_len": len,
            "body_sha256": hex::encode(hasher.finalize()),
        });
        Response::builder()
            .header("content-type", "application/json")
            .header("x-hubspot-correlation-id", "corr-echo-1")
            .body(Full::new(Bytes::from(seen.to_string())))
            .unwrap()
    })
    .await
}

pub(crate) fn parse(body: &Bytes) -> Seen {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("echo JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
