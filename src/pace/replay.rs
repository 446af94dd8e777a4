//! Request bodies kept for replay: small ones are read whole so a retry can send them
//! again; a larger one, or one that finds the shared replay buffer full, keeps streaming
//! and its call is never retried.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::proxy::body::{self, Body, BoxError};

/// Room for request bodies kept for replay over all calls at once (`[retry]
/// max_buffered_bytes`): without it, every queued call could hold a whole body in memory.
#[derive(Debug, Clone)]
pub(crate) struct ReplayBuffer {
    room: Arc<Semaphore>,
}

impl ReplayBuffer {
    pub(crate) fn new(max_bytes: usize) -> ReplayBuffer {
        ReplayBuffer {
            room: Arc::new(Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Room for `bytes` more, added to `held`; `false` (nothing taken) when there is none.
    fn take(&self, bytes: usize, held: &mut Option<OwnedSemaphorePermit>) -> bool {
        let Ok(bytes) = u32::try_from(bytes) else {
            return false;
        };
        match self.room.clone().try_acquire_many_owned(bytes) {
            Ok(more) => {
                match held {
                    Some(held) => held.merge(more),
                    None => *held = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// A request body as the retry loop holds it.
pub(crate) enum Prepared {
    /// Whole, and small enough to send again; `held` is its room in the replay buffer,
    /// kept until the call ends.
    Replayable {
        bytes: Bytes,
        held: Option<OwnedSemaphorePermit>,
    },
    /// Too large to keep: what was read so far followed by the rest of the stream.
    Streaming(Body),
}

/// Reads `body` up to `max` bytes, each taking room in `buffer`. Within both it becomes
/// replayable; past either, the bytes already read are put back in front of the rest, so
/// nothing is lost or reordered.
pub(crate) async fn prepare(
    mut body: Body,
    max: usize,
    buffer: &ReplayBuffer,
) -> Result<Prepared, BoxError> {
    if body.is_end_stream() {
        return Ok(Prepared::Replayable {
            bytes: Bytes::new(),
            held: None,
        });
    }
    if body.size_hint().lower() > max as u64 {
        return Ok(Prepared::Streaming(body));
    }
    let mut kept = BytesMut::new();
    let mut held = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        // Trailers end a request body; HubSpot does not use them, so they are dropped.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = kept.len() + data.len() <= max && buffer.take(data.len(), &mut held);
        kept.extend_from_slice(&data);
        if !room {
            // The room taken so far is given back once the head is sent on.
            let head = futures_util::stream::once(async move {
                drop(held);
                Ok::<_, BoxError>(http_body::Frame::data(kept.freeze()))
            });
            let rest =
                futures_util::TryStreamExt::map_ok(body.into_data_stream(), http_body::Frame::data);
            let chained =
                http_body_util::StreamBody::new(futures_util::StreamExt::chain(head, rest));
            return Ok(Prepared::Streaming(body::stream(chained)));
        }
    }
    Ok(Prepared::Replayable {
        bytes: kept.freeze(),
        held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bytes_of(prepared: Prepared) -> (bool, Bytes) {
        match prepared {
            Prepared::Replayable { bytes, .. } => (true, bytes),
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
        let roomy = ReplayBuffer::new(1 << 20);
        assert_eq!(
            bytes_of(prepare(body::empty(), 10, &roomy).await.unwrap()).await,
            (true, Bytes::new())
        );
        let small = chunked(&[b"abc", b"def"]);
        assert_eq!(
            bytes_of(prepare(small, 10, &roomy).await.unwrap()).await,
            (true, Bytes::from_static(b"abcdef"))
        );
        let large = chunked(&[b"0123", b"4567", b"89ab", b"cdef"]);
        assert_eq!(
            bytes_of(prepare(large, 6, &roomy).await.unwrap()).await,
            (false, Bytes::from_static(b"0123456789abcdef"))
        );
        let declared = body::full(vec![7u8; 100]);
        assert!(
            !bytes_of(prepare(declared, 10, &roomy).await.unwrap())
                .await
                .0,
            "a declared size over the limit is not read"
        );
    }

    #[tokio::test]
    async fn a_body_that_finds_the_shared_buffer_full_streams_on_and_frees_its_room() {
        let buffer = ReplayBuffer::new(8);
        let first = prepare(chunked(&[b"abcd", b"ef"]), 10, &buffer)
            .await
            .unwrap();
        let second = prepare(chunked(&[b"0123", b"4567"]), 10, &buffer)
            .await
            .unwrap();
        assert_eq!(
            bytes_of(second).await,
            (false, Bytes::from_static(b"01234567")),
            "2 bytes of room left: streamed, intact"
        );
        assert!(matches!(first, Prepared::Replayable { .. }));
        drop(first);
        let third = prepare(chunked(&[b"0123", b"4567"]), 10, &buffer)
            .await
            .unwrap();
        assert!(
            bytes_of(third).await.0,
            "the first call's room came back when it ended"
        );
    }
}
