//! Identical GETs in flight at once share one upstream call: the first goes (paced like
//! any call), the others wait for its answer and each gets a copy of it. Only while the
//! call is in flight: nothing is kept once it is answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::hubspot::Owner;
use crate::proxy::body::{self, Body, BoxError};

/// Answers larger than this are not copied: the first caller streams its own, the others
/// ask for themselves.
const MAX_SHARED_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What makes two GETs the same call: who asks (owner and credential exactly as sent),
/// what (path and query), and in which form (`Accept`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct GetKey {
    owner: Owner,
    authorization: Option<HeaderValue>,
    target: String,
    accept: Option<HeaderValue>,
}

/// A shared call's answer as every waiting caller copies it; `None` while in flight.
pub(crate) type Outcome = Option<Shared>;

#[derive(Clone)]
pub(crate) enum Shared {
    Copy(Arc<(StatusCode, HeaderMap, Bytes)>),
    /// The first call did not end in an answer that can be copied: each asks for itself.
    EachAlone,
}

/// The GETs in flight that identical ones may share.
#[derive(Default)]
pub(crate) struct InFlight {
    calls: Mutex<HashMap<GetKey, watch::Receiver<Outcome>>>,
}

impl GetKey {
    pub(crate) fn of(owner: Owner, head: &http::request::Parts) -> GetKey {
        GetKey {
            owner,
            authorization: head.headers.get(http::header::AUTHORIZATION).cloned(),
            target: head
                .uri
                .path_and_query()
                .map_or_else(String::new, |p| p.as_str().to_string()),
            accept: head.headers.get(http::header::ACCEPT).cloned(),
        }
    }
}

impl InFlight {
    /// Joins the call in flight for `key`, or (`Ok`) makes this one it.
    pub(crate) fn enter(
        &self,
        key: &GetKey,
    ) -> Result<watch::Sender<Outcome>, watch::Receiver<Outcome>> {
        let mut calls = lock(&self.calls);
        match calls.get(key) {
            Some(receiver) => Err(receiver.clone()),
            None => {
                let (outcome, receiver) = watch::channel(None);
                calls.insert(key.clone(), receiver);
                Ok(outcome)
            }
        }
    }

    /// The call for `key` is answered: later identical GETs make a new one.
    pub(crate) fn leave(&self, key: &GetKey) {
        lock(&self.calls).remove(key);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("calls", &lock(&self.calls).len())
            .finish()
    }
}

/// The first caller's answer, and the copy the others get.
pub(crate) async fn read_for_copies(
    response: Response<Body>,
) -> (Result<Response<Body>, BoxError>, Shared) {
    let (parts, mut body) = response.into_parts();
    let mut kept = BytesMut::new();
    while kept.len() <= MAX_SHARED_BODY_BYTES {
        match body.frame().await {
            None => {
                let bytes = kept.freeze();
                let copy = Arc::new((parts.status, parts.headers.clone(), bytes.clone()));
                let mut response = Response::from_parts(parts, body::full(bytes));
                response.headers_mut().remove(http::header::CONTENT_LENGTH);
                return (Ok(response), Shared::Copy(copy));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    kept.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => return (Err(error), Shared::EachAlone),
        }
    }
    // Too large to copy: the first caller streams what was read and the rest.
    let head = futures_util::stream::once(std::future::ready(Ok::<_, BoxError>(
        http_body::Frame::data(kept.freeze()),
    )));
    let rest = http_body_util::BodyStream::new(body);
    let streamed = http_body_util::StreamBody::new(futures_util::StreamExt::chain(head, rest));
    (
        Ok(Response::from_parts(parts, body::stream(streamed))),
        Shared::EachAlone,
    )
}

pub(crate) fn copied(answer: &(StatusCode, HeaderMap, Bytes)) -> Response<Body> {
    let (status, headers, bytes) = answer;
    let mut response = Response::new(body::full(bytes.clone()));
    *response.status_mut() = *status;
    *response.headers_mut() = headers.clone();
    response.headers_mut().remove(http::header::CONTENT_LENGTH);
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each step leaves the map whole, so a panic elsewhere cannot break it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
