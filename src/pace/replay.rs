//! Request bodies kept for replay: small ones are read whole so a retry can send them
//! again; a larger one keeps streaming and its call is never retried.

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::proxy::body::{self, Body, BoxError};

/// A request body as the retry loop holds it.
pub(crate) enum Prepared {
    /// Whole, and small enough to send again.
    Replayable(Bytes),
    /// Too large to keep: what was read so far followed by the rest of the stream.
    Streaming(Body),
}

/// Reads `body` up to `max` bytes. Within the limit it becomes replayable; past it, the
/// bytes already read are put back in front of the rest, so nothing is lost or reordered.
pub(crate) async fn prepare(mut body: Body, max: usize) -> Result<Prepared, BoxError> {
    if body.is_end_stream() {
        return Ok(Prepared::Replayable(Bytes::new()));
    }
    if body.size_hint().lower() > max as u64 {
        return Ok(Prepared::Streaming(body));
    }
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        // Trailers end a request body; HubSpot does not use them, so they are dropped.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        kept.extend_from_slice(&data);
        if kept.len() > max {
            let head = futures_util::stream::once(std::future::ready(Ok::<_, BoxError>(
                http_body::Frame::data(kept.freeze()),
            )));
            let rest =
                futures_util::TryStreamExt::map_ok(body.into_data_stream(), http_body::Frame::data);
            let chained =
                http_body_util::StreamBody::new(futures_util::StreamExt::chain(head, rest));
            return Ok(Prepared::Streaming(body::stream(chained)));
        }
    }
    Ok(Prepared::Replayable(kept.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bytes_of(prepared: Prepared) -> (bool, Bytes) {
        match prepared {
            Prepared::Replayable(bytes) => (true, bytes),
            Prepared::Streaming(body) => (false, body.collect().await.unwrap().to_bytes()),
        }
    }

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c))))
            .collect();
        body::stream(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn small_bodies_are_kept_and_large_ones_stream_on_intact() {
        assert_eq!(
            bytes_of(prepare(body::empty(), 10).await.unwrap()).await,
            (true, Bytes::new())
        );
        let small = chunked(&[b"abc", b"def"]);
        assert_eq!(
            bytes_of(prepare(small, 10).await.unwrap()).await,
            (true, Bytes::from_static(b"abcdef"))
        );
        let large = chunked(&[b"0123", b"4567", b"89ab", b"cdef"]);
        assert_eq!(
            bytes_of(prepare(large, 6).await.unwrap()).await,
            (false, Bytes::from_static(b"0123456789abcdef"))
        );
        let declared = body::full(vec![7u8; 100]);
        assert!(
            !bytes_of(prepare(declared, 10).await.unwrap()).await.0,
            "a declared size over the limit is not read"
        );
    }
}
