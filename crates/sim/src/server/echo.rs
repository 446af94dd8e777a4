//! Fidelity routes: `/__sim/echo/...` reports exactly what arrived, `/__sim/bytes/{n}`
//! streams a reproducible pattern, so tests can check the gateway alters nothing in transit.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::http_util::{json_response, Body};

/// Reports exactly what arrived. The body is hashed frame by frame and never held whole,
/// because fidelity tests push hundreds of MiB through it.
pub(super) async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            [
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    len += d.len() as u64;
                }
            }
            Err(e) => {
                return json_response(400, &json!({ "message": format!("body error: {e}") }));
            }
        }
    }
    json_response(
        200,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_len": len,
            "body_sha256": hex::encode(hasher.finalize()),
        }),
    )
}

const PATTERN_CHUNK: usize = 64 * 1024;

/// Streams `len` bytes where byte i is `i % 251`, slicing one shared buffer so that large
/// downloads cost no per-chunk allocation.
struct PatternBody {
    pattern: Bytes,
    pos: u64,
    len: u64,
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.pos).min(PATTERN_CHUNK as u64) as usize;
        let off = (self.pos % 251) as usize;
        let chunk = self.pattern.slice(off..off + n);
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.pos)
    }
}

pub(super) fn pattern_response(len: u64) -> Response<Body> {
    // One chunk plus a full period, so any chunk can start at any phase of the pattern.
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    let pattern = PATTERN
        .get_or_init(|| (0..PATTERN_CHUNK + 251).map(|i| (i % 251) as u8).collect())
        .clone();
    let mut resp = Response::new(
        PatternBody {
            pattern,
            pos: 0,
            len,
        }
        .boxed(),
    );
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}
