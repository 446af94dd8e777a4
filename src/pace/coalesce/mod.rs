//! Budget multipliers, the state they keep: the batches open for reads that would wait
//! (here), what a batch read carries and answers (`read`, `split`), and the GETs in flight
//! that identical ones share (`identical`). The pacing layer drives them (its `batching`
//! and `sharing` parts).
//!
//! Only what would wait is merged: a read that finds a free slot goes at once, unchanged.
//! A read that would queue joins the open batch of its kind (same owner, credential,
//! object type and query), or opens one; the batch's task waits in the owner's lane as one
//! call, and when admitted closes the batch, sends one batch read for every reader still
//! there and hands each its own answer. A reader that leaves (its caller went away, or its
//! deadline passed) simply is not asked for; a batch everyone left leaves the queue
//! without spending anything.

pub(crate) mod identical;
pub(crate) mod read;
pub(crate) mod split;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, Notify};

pub(crate) use identical::InFlight;
use read::{BatchKey, Read};

use super::pacer::{Admission, Refusal};
use crate::proxy::body::{Body, BoxError};

/// A batch read's answer is 100 records at most; more than this is not one to split.
pub(crate) const MAX_BATCH_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// What became of a read offered to a batch.
pub(crate) enum Coalesced {
    /// A batch read answered it (or the pacer refused it): this is its answer.
    Answered(Result<Response<Body>, BoxError>),
    /// It found a free slot and was admitted at once: it goes alone.
    Admitted(Admission),
    /// It must go alone through the queue (its batch could not answer it).
    Alone,
}

/// The batches open for more readers, by what their readers share.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    open: Mutex<HashMap<BatchKey, Arc<Batch>>>,
}

#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) key: BatchKey,
    readers: Mutex<Vec<Reader>>,
    /// Readers whose caller still waits; the batch stops waiting when none does.
    waiting: AtomicUsize,
    pub(crate) emptied: Notify,
    /// Signalled when the batch holds as many readers as one batch read carries.
    pub(crate) full: Notify,
}

#[derive(Debug)]
pub(crate) struct Reader {
    pub(crate) id: String,
    pub(crate) arrived: tokio::time::Instant,
    pub(crate) reply: oneshot::Sender<Delivery>,
}

#[derive(Debug)]
pub(crate) enum Delivery {
    Answer(Response<Body>),
    Alone,
    Refused(Refusal),
}

/// A reader's place in a batch: counts it as waiting until dropped.
pub(crate) struct Place {
    batch: Arc<Batch>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.batch.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.batch.emptied.notify_one();
        }
    }
}

/// A reader's way to its answer, its place, and the batch when it opened one.
pub(crate) type Joined = (oneshot::Receiver<Delivery>, Place, Option<Arc<Batch>>);

impl Batches {
    /// Puts `read` in the open batch of its kind, or, with `open`, in a new one (returned
    /// too, for its task to run). `None` when there is no open batch and `open` is false.
    pub(crate) fn join(&self, read: &Read, cap: usize, open: bool) -> Option<Joined> {
        let mut batches = lock(&self.open);
        let (batch, opened) = match batches.get(&read.key) {
            Some(batch) => (batch.clone(), None),
            None if open => {
                let batch = Arc::new(Batch {
                    key: read.key.clone(),
                    readers: Mutex::new(Vec::new()),
                    waiting: AtomicUsize::new(0),
                    emptied: Notify::new(),
                    full: Notify::new(),
                });
                batches.insert(read.key.clone(), batch.clone());
                (batch.clone(), Some(batch))
            }
            None => return None,
        };
        let (reply, receiver) = oneshot::channel();
        let mut readers = lock(&batch.readers);
        readers.push(Reader {
            id: read.id.clone(),
            arrived: tokio::time::Instant::now(),
            reply,
        });
        if readers.len() >= cap {
            batches.remove(&read.key);
            batch.full.notify_one();
        }
        drop(readers);
        batch.waiting.fetch_add(1, Ordering::AcqRel);
        let place = Place {
            batch: batch.clone(),
        };
        Some((receiver, place, opened))
    }

    /// Closes `batch` to new readers and hands over those still waiting.
    pub(crate) fn close(&self, batch: &Arc<Batch>) -> Vec<Reader> {
        let mut batches = lock(&self.open);
        if batches
            .get(&batch.key)
            .is_some_and(|open| Arc::ptr_eq(open, batch))
        {
            batches.remove(&batch.key);
        }
        let mut readers = std::mem::take(&mut *lock(&batch.readers));
        readers.retain(|reader| !reader.reply.is_closed());
        readers
    }

    /// Closes `batch` if no reader waits any more; a reader may have joined meanwhile.
    pub(crate) fn close_if_empty(&self, batch: &Arc<Batch>) -> bool {
        let batches = lock(&self.open);
        let empty = batch.waiting.load(Ordering::Acquire) == 0;
        drop(batches);
        if empty {
            self.close(batch);
        }
        empty
    }
}

/// What a read offered to a batch brings: whose it is and how long it may wait, and the
/// head of its request (a batch it opens goes out with its client's headers).
pub(crate) struct Offer {
    pub(crate) owner: crate::hubspot::Owner,
    pub(crate) keys: crate::hubspot::Keys,
    pub(crate) seat: hubgate_engine::Seat,
    pub(crate) max_wait: Duration,
    pub(crate) started: tokio::time::Instant,
    pub(crate) headers: HeaderMap,
    pub(crate) version: http::Version,
}

/// A batch read's answer in memory, to split. Read by hand rather than through
/// `http_body_util::Limited`, whose error conversion trips rustc's higher-ranked `Send`
/// check in a spawned task (rust-lang/rust#64552).
pub(crate) async fn read_whole(
    response: Response<Body>,
) -> Result<(http::StatusCode, HeaderMap, Bytes), BoxError> {
    let (parts, mut body) = response.into_parts();
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            kept.extend_from_slice(&data);
            if kept.len() > MAX_BATCH_ANSWER_BYTES {
                return Err("the batch read's answer is too large to split".into());
            }
        }
    }
    Ok((parts.status, parts.headers, kept.freeze()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each step leaves the map and lists whole, so a panic elsewhere cannot break them.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
