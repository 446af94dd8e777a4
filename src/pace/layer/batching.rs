//! How the pacing layer hands a read that would wait to a batch, and how a batch's task
//! waits as one call, sends one batch read and answers each of its readers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};

use super::{finish, Call, PaceError, PacePolicy, PaceShared, Sender};
use crate::pace::coalesce::read::Read;
use crate::pace::coalesce::split::{self, Answers};
use crate::pace::coalesce::{read_whole, Batch, Coalesced, Delivery, Offer};
use crate::pace::pacer::{Ask, Refusal};

impl PaceShared {
    /// Offers `read` to a batch: it joins one already waiting, goes at once when a slot is
    /// free, or opens a batch of its own. Waits for its answer within its deadline.
    pub(super) async fn coalesce(
        self: Arc<Self>,
        read: Read,
        call: Offer,
        send: &Sender,
        pacing: &Arc<PacePolicy>,
    ) -> Coalesced {
        let cap = read.key.cap(pacing.coalesce.max_batch);
        let joined = match self.batches.join(&read, cap, false) {
            Some(joined) => joined,
            None => {
                let ask = Ask {
                    owner: call.owner,
                    keys: call.keys.clone(),
                    seat: call.seat,
                    max_wait: call.max_wait,
                    retry: false,
                };
                let tight = self
                    .pacer
                    .is_tight(&call.keys, pacing.coalesce.gather_below_free_percent);
                let at_once = if tight {
                    None
                } else {
                    self.pacer.admit_now(&ask)
                };
                match at_once {
                    Some(Ok(admission)) => return Coalesced::Admitted(admission),
                    Some(Err(refusal)) => {
                        return Coalesced::Answered(Err(self.refused(call.owner, refusal).into()))
                    }
                    None => {}
                }
                let Some(joined) = self.batches.join(&read, cap, true) else {
                    return Coalesced::Alone;
                };
                joined
            }
        };
        let (receiver, place, opened) = joined;
        if let Some(batch) = opened {
            let first = BatchCall {
                ask: Ask {
                    owner: call.owner,
                    keys: call.keys.clone(),
                    seat: call.seat,
                    max_wait: pacing.max_wait,
                    retry: false,
                },
                headers: call.headers,
                version: call.version,
            };
            tokio::spawn(
                self.clone()
                    .run_batch(batch, first, send.clone(), pacing.clone()),
            );
        }
        let remaining = call.max_wait.saturating_sub(call.started.elapsed());
        let delivery = tokio::time::timeout(remaining, receiver).await;
        drop(place);
        match delivery {
            Ok(Ok(Delivery::Answer(response))) => Coalesced::Answered(Ok(response)),
            Ok(Ok(Delivery::Refused(refusal))) => {
                Coalesced::Answered(Err(self.refused(call.owner, refusal).into()))
            }
            // No answer without a verdict only when the batch's task ended early (the
            // runtime is stopping): the read still gets one, its own.
            Ok(Ok(Delivery::Alone)) | Ok(Err(_)) => Coalesced::Alone,
            Err(_) => {
                let waited = call.started.elapsed();
                let (now, unix_ms) = (self.clock.now(), self.clock.unix_ms());
                let retry_after = self
                    .pacer
                    .store()
                    .estimate_wait(
                        &call.keys,
                        now,
                        unix_ms,
                        self.pacer.queue_depth(&call.owner),
                    )
                    .unwrap_or(Duration::ZERO);
                let refusal = Refusal::DeadlineExpired {
                    waited,
                    retry_after,
                };
                Coalesced::Answered(Err(self.refused(call.owner, refusal).into()))
            }
        }
    }

    /// Waits in the owner's lane as one call, then answers every reader still there from
    /// one batch read.
    async fn run_batch(
        self: Arc<Self>,
        batch: Arc<Batch>,
        first: BatchCall,
        send: Sender,
        pacing: Arc<PacePolicy>,
    ) {
        let BatchCall {
            ask,
            headers,
            version,
        } = first;
        let (owner, keys, seat) = (ask.owner, ask.keys.clone(), ask.seat);
        if pacing.coalesce.gather_below_free_percent > 0 {
            // The budget is tight: one batch per slot interval keeps the owner's sends at
            // the rate slots free, so each carries the readers of a whole interval instead
            // of the window's last slots going one read each.
            let gather = self.pacer.burst_slot_interval();
            tokio::select! {
                () = tokio::time::sleep(gather) => {}
                () = batch.full.notified() => {}
            }
        }
        let admit = self.pacer.admit(ask);
        tokio::pin!(admit);
        let verdict = loop {
            tokio::select! {
                verdict = &mut admit => break verdict,
                () = batch.emptied.notified() => {
                    if self.batches.close_if_empty(&batch) {
                        return;
                    }
                }
            }
        };
        let admitted_at = tokio::time::Instant::now();
        let readers = self.batches.close(&batch);
        let admission = match verdict {
            Ok(admission) => admission,
            Err(refusal) => {
                for reader in readers {
                    let _ = reader.reply.send(Delivery::Refused(refusal.clone()));
                }
                return;
            }
        };
        // Every reader left while the slot was being reserved: the slot stays spent (the
        // safe side of the limit).
        if readers.is_empty() {
            return;
        }
        let mut ids: Vec<&str> = readers.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let (uri, body) = batch.key.batch_request(&ids);
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = Method::POST;
        parts.uri = uri;
        parts.version = version;
        parts.headers = batch.key.batch_headers(&headers);
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let call = Call {
            parts,
            replayable: Some(Bytes::from(body)),
            streaming: None,
            owner,
            keys,
            seat,
            max_wait: pacing.max_wait,
            started: tokio::time::Instant::now(),
            retried_as: Method::GET,
        };
        let answer = self.attempts(call, &send, &pacing, Some(admission)).await;
        let size = readers.len();
        self.metrics.observe_batch(size);
        let answer = match answer {
            Ok(response) => read_whole(response).await,
            Err(error) => Err(error),
        };
        let (status, headers, body) = match answer {
            Ok(whole) => whole,
            Err(error) => {
                // A refusal met on a retry is every reader's; a failed send is not
                // shared, each reader's own GET meets (and reports) it.
                let refusal = match error.downcast_ref::<PaceError>() {
                    Some(PaceError::Refused { refusal, .. }) => Some(refusal.clone()),
                    _ => None,
                };
                for reader in readers {
                    let delivery = refusal.clone().map_or(Delivery::Alone, Delivery::Refused);
                    let _ = reader.reply.send(delivery);
                }
                return;
            }
        };
        let answers = split::answers(status, &body);
        for reader in readers {
            let response = match &answers {
                Answers::EachAlone => {
                    let _ = reader.reply.send(Delivery::Alone);
                    continue;
                }
                Answers::Same => split::same(status, &headers, body.clone(), size),
                Answers::Records(records) => match records.get(&reader.id) {
                    Some(record) => split::found(record.clone(), &headers, size),
                    None => split::missing(&headers, size),
                },
            };
            let queued = admitted_at.saturating_duration_since(reader.arrived);
            let retries = headers
                .get("x-hubgate-retries")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let response = finish(response, owner, queued, retries, None);
            let _ = reader.reply.send(Delivery::Answer(response));
        }
    }
}

/// What the batch's task needs of the reader that opened it.
struct BatchCall {
    ask: Ask,
    headers: HeaderMap,
    version: http::Version,
}
