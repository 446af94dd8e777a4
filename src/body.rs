//! The one body type that flows through the request path, in both directions.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

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
