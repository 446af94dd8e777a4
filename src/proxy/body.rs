//! The one body type that flows through the request path, in both directions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, LengthLimitError};

/// Errors carried inside bodies: hyper's, the size limiter's, or an upstream's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A streaming body. Boxed so that every layer of the stack speaks one type, and
/// `Unsync` because hyper's `Incoming` is all we stream and needs no `Sync`.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`, already complete.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body with nothing in it.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Streams anything implementing `http_body::Body` (hyper's `Incoming`, a limited body, ...).
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A small body read whole: `None` once it passes `max` bytes or fails. Read by hand
/// rather than through `http_body_util::Limited`, whose error conversion trips rustc's
/// higher-ranked `Send` check in async callers (rust-lang/rust#64552).
pub async fn read_at_most(mut body: Body, max: usize) -> Option<Bytes> {
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            kept.extend_from_slice(&data);
            if kept.len() > max {
                return None;
            }
        }
    }
    Some(kept.freeze())
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyStalled`] when, while it is being read, nothing arrives
    /// for `idle`: a stalled upload or a stalled upstream answer ends its call instead of
    /// holding it (and its connection) forever. Time the reader spends elsewhere (a caller
    /// reading slowly, a call waiting in its queue) does not count; only waiting on it does.
    pub struct IdleTimeout<B> {
        idle: Duration,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        #[pin]
        body: B,
    }
}

/// The error an [`IdleTimeout`] body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes arrived for {} ms", .idle.as_millis())]
pub struct BodyStalled {
    pub idle: Duration,
}

/// `body`, failing with [`BodyStalled`] once it pauses for `idle` while being read.
pub fn with_idle_timeout(body: Body, idle: Duration) -> Body {
    IdleTimeout {
        idle,
        timer: None,
        body,
    }
    .boxed_unsync()
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        // The body first: bytes that are ready win over a timer that ran out meanwhile.
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            this.timer.set(None);
            return Poll::Ready(frame);
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(*this.idle)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => {
                Poll::Ready(Some(Err(Box::new(BodyStalled { idle: *this.idle }))))
            }
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTooSlow`] once `total` has passed since it was first
    /// read: a body trickled just fast enough to never pause for long still ends.
    pub struct ReadDeadline<B> {
        total: Duration,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
        #[pin]
        body: B,
    }
}

/// The error a [`ReadDeadline`] body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {} ms", .total.as_millis())]
pub struct BodyTooSlow {
    pub total: Duration,
}

/// `body`, failing with [`BodyTooSlow`] unless it ends within `total` of its first read.
pub fn with_read_deadline(body: Body, total: Duration) -> Body {
    ReadDeadline {
        total,
        deadline: None,
        body,
    }
    .boxed_unsync()
}

impl<B> http_body::Body for ReadDeadline<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.deadline.is_none() {
            this.deadline.set(Some(tokio::time::sleep(*this.total)));
        }
        if let Some(Poll::Ready(())) = this.deadline.as_pin_mut().map(|d| d.poll(cx)) {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow { total: *this.total }))));
        }
        this.body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a caller's request body ended early. Every body error is wrapped in one, so that
/// wherever it surfaces (reading the body for replay, or inside the upstream client's
/// error while streaming it) the call is answered as the caller's problem, never as an
/// upstream failure.
/// Its message is what the caller is told.
#[derive(Debug, thiserror::Error)]
pub enum CallerBodyError {
    #[error("request body is larger than the {max} bytes hubgate accepts ([server] max_body_bytes); send a smaller body or raise the limit")]
    TooLarge { max: u64 },
    #[error("the request body stopped: no bytes arrived for {} ms ([server] body_idle_timeout_ms); send the body without long pauses, then retry", .0.idle.as_millis())]
    Stalled(#[source] BodyStalled),
    #[error("the request body did not arrive within {} ms ([server] body_read_timeout_ms); send it faster, or in smaller calls, then retry", .0.total.as_millis())]
    TooSlow(#[source] BodyTooSlow),
    /// The caller's connection failed or closed mid-body, or its framing was invalid.
    #[error("the request body could not be read ({0}); send the call again")]
    Broken(#[source] BoxError),
}

impl CallerBodyError {
    /// The caller's body error in `error`'s chain, if that is what it was.
    pub fn found_in<'e>(
        error: &'e (dyn std::error::Error + 'static),
    ) -> Option<&'e CallerBodyError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<CallerBodyError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }

    /// An owned copy of an error found inside another (a hyper client error that carried
    /// it), to answer the call with.
    pub(crate) fn detached(&self) -> CallerBodyError {
        match self {
            CallerBodyError::TooLarge { max } => CallerBodyError::TooLarge { max: *max },
            CallerBodyError::Stalled(stalled) => {
                CallerBodyError::Stalled(BodyStalled { idle: stalled.idle })
            }
            CallerBodyError::TooSlow(slow) => {
                CallerBodyError::TooSlow(BodyTooSlow { total: slow.total })
            }
            CallerBodyError::Broken(e) => CallerBodyError::Broken(e.to_string().into()),
        }
    }

    /// Wraps whatever error a caller's body ended with (`max` is the body limit that
    /// applied).
    pub(crate) fn wrap(error: BoxError, max: u64) -> BoxError {
        let wrapped = if error.is::<LengthLimitError>() {
            CallerBodyError::TooLarge { max }
        } else {
            match error.downcast::<BodyStalled>() {
                Ok(stalled) => CallerBodyError::Stalled(*stalled),
                Err(other) => match other.downcast::<BodyTooSlow>() {
                    Ok(slow) => CallerBodyError::TooSlow(*slow),
                    Err(other) => CallerBodyError::Broken(other),
                },
            }
        };
        Box::new(wrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_pauses_too_long_fails_and_one_that_keeps_coming_does_not() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
        let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let data = receiver.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(data)), receiver))
        });
        let mut body = with_idle_timeout(
            stream(http_body_util::StreamBody::new(frames)),
            Duration::from_millis(100),
        );
        sender.send(Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Time nobody was reading does not count; a frame ready on the next read wins.
        sender.send(Bytes::from_static(b"b")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<BodyStalled>(), "{error}");

        let whole = with_idle_timeout(full("whole"), Duration::from_millis(1));
        assert_eq!(
            http_body::Body::size_hint(&whole).exact(),
            Some(5),
            "the size still shows"
        );
    }
}
