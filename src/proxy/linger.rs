//! Reading the rest of an HTTP/1 request body hubgate answered without reading (a 413, a
//! refusal from the queue), so the caller finishes sending and reads the answer.
//!
//! An HTTP/1 client writes its whole body before it reads the answer. If hubgate answers
//! early and drops the body, hyper closes the connection under the client's writes: the
//! client sees a broken pipe or a reset instead of the 413 or 429 that explains what to
//! fix. So, as nginx's lingering close does, a body dropped before its end is read to its
//! end and thrown away on a task of its own, for a bounded time and number of bytes, and
//! only then is the connection let go.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The longest the rest of a body is read after hubgate answered without it.
const LINGER_FOR: Duration = Duration::from_secs(5);
/// A client that sends nothing for this long is not sending its body (it sent only its
/// headers, or waits for `100 Continue`): the connection is let go then.
const LINGER_IDLE: Duration = Duration::from_secs(1);
/// The most bytes read and thrown away after that answer; a client sending more is cut off.
const LINGER_MAX_BYTES: u64 = 16 << 20;

/// A caller's HTTP/1 request body that, dropped before its end, is read to its end (or to
/// the bounds above) on a task of its own.
#[derive(Debug)]
pub(crate) struct LingeringBody {
    /// `None` once the body ended or failed.
    incoming: Option<Incoming>,
}

impl LingeringBody {
    pub(crate) fn new(incoming: Incoming) -> LingeringBody {
        LingeringBody {
            incoming: Some(incoming),
        }
    }
}

impl http_body::Body for LingeringBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(incoming).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.incoming = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let Some(rest) = self.incoming.take().filter(|body| !body.is_end_stream()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(read_and_discard(rest));
        }
    }
}

async fn read_and_discard(mut rest: Incoming) {
    let reading = async {
        let mut read = 0u64;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(LINGER_IDLE, rest.frame()).await {
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > LINGER_MAX_BYTES {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_FOR, reading).await;
}
