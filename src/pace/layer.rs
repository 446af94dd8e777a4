//! The pacing layer: classifies each call into the budgets it spends, waits in its
//! owner's queue until they all have room, sends it, learns from HubSpot's answer, and
//! sends it again (paced like any call) when HubSpot says no for a reason that passes.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hubgate_engine::Seat;
use tower::{Layer, Service, ServiceExt};

use super::clock::Clock;
use super::closing::LastSend;
use super::coalesce::{read, Batches, Coalesced, InFlight, Offer};
use super::learn;
use super::pacer::{Admission, Ask, Pacer, Refusal};
use super::replay::{self, Prepared, ReplayBuffer};
use super::retry::{self, Failure, Skip};
use crate::config::{CoalesceConfig, RetryConfig};
use crate::hubspot::rate_limit::{self, Policy};
use crate::hubspot::{budgets_for, Classifier, Keys, Owner};
use crate::ops::metrics::Metrics;
use crate::proxy::body::{self, Body, BoxError, CallerBodyError};
use crate::proxy::callers::Callers;
use crate::proxy::forward::UpstreamError;

/// A caller's own, shorter deadline for this call, in milliseconds.
const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-hubgate-deadline-ms");
const QUEUE_MS_HEADER: HeaderName = HeaderName::from_static("x-hubgate-queue-ms");
const OWNER_HEADER: HeaderName = HeaderName::from_static("x-hubgate-owner");
const RETRIES_HEADER: HeaderName = HeaderName::from_static("x-hubgate-retries");
const RETRY_SKIPPED_HEADER: HeaderName = HeaderName::from_static("x-hubgate-retry-skipped");

/// HubSpot's 429 bodies are a few hundred bytes; more than this is not a rate-limit answer
/// worth reading whole.
const MAX_429_BODY_BYTES: usize = 64 * 1024;

/// Longest a call with an unproven credential waits for the budget they all share: junk
/// must be answered quickly, not pile up in a queue, and a real credential is proven by
/// its first call that gets through.
const UNPROVEN_MAX_WAIT: Duration = Duration::from_secs(1);

pub(crate) use error::PaceError;

mod batching;
mod error;
mod on_its_way;
mod sharing;

pub(crate) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

#[derive(Debug, Clone)]
pub(crate) struct PaceLayer {
    shared: Arc<PaceShared>,
}

/// What every paced call needs, built once.
#[derive(Debug)]
pub(crate) struct PaceShared {
    pub(crate) pacer: Pacer,
    pub(crate) last_send: LastSend,
    /// `[retry] max_buffered_bytes`, shared by every call.
    pub(crate) replay_buffer: ReplayBuffer,
    /// What the config says about pacing; a reload swaps it whole, and each call reads it
    /// once on arrival and keeps that view to its end.
    pub(crate) policy: Arc<ArcSwap<PacePolicy>>,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
    /// Reads waiting together for one batch read (`[coalesce] reads`).
    pub(crate) batches: Batches,
    /// GETs in flight that identical ones may share (`[coalesce] identical_gets`).
    pub(crate) in_flight: InFlight,
}

/// The reloadable part of pacing.
#[derive(Debug)]
pub(crate) struct PacePolicy {
    pub(crate) classifier: Classifier,
    /// `[queue] max_wait_ms`: the longest any call waits, retries included.
    pub(crate) max_wait: Duration,
    /// How long a `SECONDLY` 429 pauses the portal's search budget: one search window.
    pub(crate) search_pause: Duration,
    pub(crate) retry: RetryConfig,
    pub(crate) callers: Callers,
    pub(crate) coalesce: CoalesceConfig,
    /// How often a call still on its way has its sends bounded (see
    /// `PaceShared::on_its_way`): half the shortest span of any window.
    pub(crate) still_out_every: Duration,
}

impl PaceLayer {
    pub(crate) fn new(shared: PaceShared) -> Self {
        PaceLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;
    fn layer(&self, inner: S) -> Pace<S> {
        Pace {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Pace<S> {
    inner: S,
    shared: Arc<PaceShared>,
}

impl<S> Service<Request<Body>> for Pace<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        // A boxed sender, and `oneshot` rather than an async block: naming `S::Future` inside
        // an async block trips rustc's higher-ranked `Send` check (rust-lang/rust#64552).
        // Each attempt clones the inner service, as tower's own retry layer does.
        // Shared (a batch read goes out with its first reader's sender, while that reader
        // may still need it for its own GET), hence the lock around a service that need
        // not be `Sync`; it is held only to clone.
        let inner = std::sync::Mutex::new(inner);
        let send: Sender = Arc::new(move |request| {
            let service = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            Box::pin(service.oneshot(request))
        });
        let shared = self.shared.clone();
        Box::pin(async move { shared.serve(request, send).await })
    }
}

pub(crate) type Sender = Arc<dyn Fn(Request<Body>) -> ResponseFuture + Send + Sync>;

/// One call as the attempt loop sends it: its head and body, the budgets it spends and
/// for whom, and how long it may take.
pub(crate) struct Call {
    pub(crate) parts: http::request::Parts,
    pub(crate) replayable: Option<bytes::Bytes>,
    pub(crate) streaming: Option<Body>,
    pub(crate) owner: Owner,
    pub(crate) keys: Keys,
    pub(crate) seat: Seat,
    pub(crate) max_wait: Duration,
    pub(crate) started: tokio::time::Instant,
    /// A batch read changes nothing: it is retried as the GETs it carries would be.
    pub(crate) retried_as: Method,
}

impl PaceShared {
    async fn serve(
        self: Arc<Self>,
        request: Request<Body>,
        send: Sender,
    ) -> Result<Response<Body>, BoxError> {
        let pacing = self.policy.load_full();
        if pacing.coalesce.identical_gets && request.method() == Method::GET {
            return self.share_identical(request, send, pacing).await;
        }
        self.serve_one(request, send, pacing).await
    }

    /// Paces, sends and retries one caller's call (or, for a read that would wait, has a
    /// batch read answer it).
    pub(crate) async fn serve_one(
        self: Arc<Self>,
        request: Request<Body>,
        send: Sender,
        pacing: Arc<PacePolicy>,
    ) -> Result<Response<Body>, BoxError> {
        let started = tokio::time::Instant::now();
        let (owner, class) = self.owner_of(&request, &pacing);
        let max_wait = self.max_wait(&request, owner, &pacing)?;
        let caller = pacing.callers.identify(&request, owner)?;
        pacing
            .callers
            .check_cap(&caller.name)
            .map_err(|retry_after| PaceError::CallerCapped {
                caller: caller.name.to_string(),
                retry_after,
            })?;
        let keys = budgets_for(owner, class);
        let read = if pacing.coalesce.reads && !keys.is_empty() {
            read::single_read(owner, request.method(), request.uri(), request.headers())
        } else {
            None
        };
        let (parts, body) = request.into_parts();
        let max_replay = if pacing.retry.max_retries == 0 {
            0
        } else {
            pacing.retry.max_body_bytes
        };
        let prepared = replay::prepare(body, max_replay, &self.replay_buffer).await;
        // `_replay_room` holds the body's room in the replay buffer until the call ends.
        let (replayable, streaming, _replay_room) = match prepared {
            Ok(Prepared::Replayable { bytes, held }) => (Some(bytes), None, held),
            Ok(Prepared::Streaming(body)) => (None, Some(body), None),
            Err(e) => return Err(unreadable_body(e)),
        };
        let retried_as = parts.method.clone();
        let call = Call {
            parts,
            replayable,
            streaming,
            owner,
            keys,
            seat: caller.seat,
            max_wait,
            started,
            retried_as,
        };
        let admitted = match read {
            Some(read) => {
                let offer = Offer {
                    owner,
                    keys: call.keys.clone(),
                    seat: call.seat,
                    max_wait,
                    started,
                    headers: call.parts.headers.clone(),
                    version: call.parts.version,
                };
                match self.clone().coalesce(read, offer, &send, &pacing).await {
                    Coalesced::Answered(answer) => return answer,
                    Coalesced::Admitted(admission) => Some(admission),
                    Coalesced::Alone => None,
                }
            }
            None => None,
        };
        self.attempts(call, &send, &pacing, admitted).await
    }

    /// The owner a call is billed to, and what kind of call it is.
    pub(crate) fn owner_of(
        &self,
        request: &Request<Body>,
        pacing: &PacePolicy,
    ) -> (Owner, crate::hubspot::CallClass) {
        let class = pacing
            .classifier
            .classify(request.method(), request.uri().path());
        // A token call is billed to no app, whatever credential it carries: it waits in the
        // one token lane, so a credential header (real or junk) buys it no lane of its own.
        let owner = match request.extensions().get::<Owner>() {
            Some(&owner) if !class.token => owner,
            _ => Owner::Anonymous,
        };
        (owner, class)
    }

    /// The longest `request` may wait for budget, retries included.
    fn max_wait(
        &self,
        request: &Request<Body>,
        owner: Owner,
        pacing: &PacePolicy,
    ) -> Result<Duration, PaceError> {
        let unproven_wait = if owner == Owner::UNPROVEN {
            UNPROVEN_MAX_WAIT
        } else {
            Duration::MAX
        };
        Ok(pacing
            .max_wait
            .min(unproven_wait)
            .min(caller_deadline(request)?.unwrap_or(Duration::MAX)))
    }

    /// Sends `call` until HubSpot answers for good: waits for budget before each attempt
    /// (but the first, when `admitted_first` says it was already admitted), learns from
    /// every answer, retries what passes.
    pub(crate) async fn attempts(
        &self,
        call: Call,
        send: &Sender,
        pacing: &PacePolicy,
        mut admitted_first: Option<Admission>,
    ) -> Result<Response<Body>, BoxError> {
        let Call {
            parts,
            replayable,
            mut streaming,
            owner,
            keys,
            seat,
            max_wait,
            started,
            retried_as,
        } = call;
        let mut retries = 0u32;
        let mut queued = Duration::ZERO;
        loop {
            let admission = match admitted_first.take() {
                Some(admission) => Some(admission),
                None if !keys.is_empty() => {
                    let admitting = self.pacer.admit(Ask {
                        owner,
                        keys: keys.clone(),
                        seat,
                        max_wait: max_wait.saturating_sub(started.elapsed()),
                        retry: retries > 0,
                    });
                    // Dropping the wait on shutdown leaves the queue with nothing spent.
                    Some(tokio::select! {
                        biased;
                        () = self.last_send.reached() => return Err(PaceError::ShuttingDown.into()),
                        admission = admitting => admission.map_err(|refusal| self.refused(owner, refusal))?,
                    })
                }
                None => None,
            };
            // The tick this attempt's sends were stamped at in its budgets' logs; a call
            // that spends no budget has none, and its own time is as good as any.
            let admitted = match admission {
                Some(admission) => {
                    // Only admitted calls: refusals are counted by outcome in
                    // hubgate_requests_total.
                    self.metrics
                        .observe_queue_wait(seat.priority.as_label(), admission.waited);
                    queued += admission.waited;
                    admission.at
                }
                None => self.clock.now(),
            };
            if self.last_send.passed() {
                return Err(PaceError::ShuttingDown.into());
            }
            let body = match (&replayable, streaming.take()) {
                (Some(bytes), _) => body::full(bytes.clone()),
                (None, Some(body)) => body,
                // A streaming body is never retried, so it is only ever taken once.
                (None, None) => {
                    return Err(
                        PaceError::UnreadableBody("request body already sent".into()).into(),
                    )
                }
            };
            let sending = send(Request::from_parts(attempt_head(&parts), body));
            let (attempt, sent) = self
                .on_its_way(sending, &keys, admitted, pacing.still_out_every)
                .await;
            let (failure, answer) = match attempt {
                Ok(response) => {
                    let answered = self.clock.now();
                    let lessons = learn::from_answer(response.headers(), answered, &keys, sent);
                    self.learn(lessons, owner, &keys).await;
                    let status = response.status();
                    if !matches!(status.as_u16(), 423 | 429 | 502..=504) {
                        return Ok(finish(response, owner, queued, retries, None));
                    }
                    let (response, policy) = if status == StatusCode::TOO_MANY_REQUESTS {
                        let counted = learn::carries_count(response.headers());
                        let (response, policy) = read_429(response).await;
                        self.metrics.count_upstream_rate_limited(&owner, policy);
                        let now = self.clock.now();
                        let lessons =
                            learn::from_429(policy, &keys, now, pacing.search_pause, counted);
                        // Awaited even on Redis: the retry that follows must be judged with it.
                        learn::apply(
                            self.pacer.store().clone(),
                            lessons,
                            now,
                            self.clock.unix_ms(),
                        )
                        .await;
                        (response, Some(policy))
                    } else {
                        (response, None)
                    };
                    (Failure::Status { status, policy }, Ok(response))
                }
                Err(error) => match error.downcast_ref::<UpstreamError>() {
                    Some(upstream) if upstream.nothing_sent() => (Failure::Connect, Err(error)),
                    Some(_) => {
                        let failed = self.clock.now();
                        self.learn(learn::arrived_by(&keys, sent, failed), owner, &keys)
                            .await;
                        (Failure::AfterSend, Err(error))
                    }
                    None => return Err(error),
                },
            };
            let retry_after = answer
                .as_ref()
                .ok()
                .and_then(|r| rate_limit::retry_after(r.headers(), self.clock.wall()));
            let plan = retry::plan(failure, &retried_as, retry_after, &pacing.retry);
            let skip = match plan {
                Err(Skip::Daily) => {
                    return Err(self.daily_exhausted(owner, &keys).into());
                }
                Err(skip) => Some(skip),
                Ok(plan) => {
                    let wait = plan.at_least.max(retry::backoff(
                        retries + 1,
                        &pacing.retry,
                        &mut rand::rng(),
                    ));
                    let skip = if replayable.is_none() {
                        Some(Skip::BodyNotReplayable)
                    } else if retries >= pacing.retry.max_retries {
                        Some(Skip::MaxRetries)
                    } else if started.elapsed().saturating_add(wait) >= max_wait {
                        Some(Skip::Deadline)
                    } else if !self.pacer.withdraw_retry(owner, &keys) {
                        Some(Skip::RetryBudget)
                    } else {
                        None
                    };
                    if skip.is_none() {
                        self.metrics.count_retry(plan.reason);
                        retries += 1;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    skip
                }
            };
            return answer.map(|response| finish(response, owner, queued, retries, skip));
        }
    }

    /// Applies what an answer taught. A Redis round trip per answer would otherwise sit
    /// between HubSpot's answer and the caller, so a store that needs one learns on a task
    /// of its own.
    async fn learn(&self, lessons: learn::Lessons, owner: Owner, keys: &Keys) {
        if lessons.is_empty() {
            return;
        }
        let learning = learn::apply(
            self.pacer.store().clone(),
            lessons,
            self.clock.now(),
            self.clock.unix_ms(),
        );
        if self.pacer.store().learns_locally() {
            learning.await;
            self.pacer.wake(owner, keys);
        } else {
            let (pacer, keys) = (self.pacer.clone(), keys.clone());
            tokio::spawn(async move {
                learning.await;
                pacer.wake(owner, &keys);
            });
        }
    }

    /// HubSpot said DAILY: answer as hubgate does for a spent daily budget.
    fn daily_exhausted(&self, owner: Owner, keys: &Keys) -> PaceError {
        let (now, unix_ms) = (self.clock.now(), self.clock.unix_ms());
        let resets_at_unix_ms = match self.pacer.store().estimate_wait(keys, now, unix_ms, 0) {
            Err(exhausted) => exhausted.resets_at_unix_ms,
            // No daily budget known locally (e.g. unidentified owner): next UTC midnight.
            Ok(_) => (unix_ms / 86_400_000 + 1) * 86_400_000,
        };
        self.refused(owner, Refusal::DailyExhausted { resets_at_unix_ms })
    }

    pub(super) fn refused(&self, owner: Owner, refusal: Refusal) -> PaceError {
        PaceError::Refused {
            owner,
            refusal,
            unix_ms: self.clock.unix_ms(),
        }
    }
}

/// What an attempt sends: the caller's method, target, version and headers. Extensions
/// stay behind: they are hubgate's own notes (owner, caller address, request id) that
/// nothing below reads, and cloning them costs an allocation each on every attempt.
fn attempt_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// Reads a 429's small body to learn its policy, and rebuilds the response around it.
async fn read_429(response: Response<Body>) -> (Response<Body>, Policy) {
    let (parts, mut body) = response.into_parts();
    // Read by hand rather than through `http_body_util::Limited`, whose error conversion
    // trips rustc's higher-ranked `Send` check here (rust-lang/rust#64552).
    let mut kept = bytes::BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            kept.extend_from_slice(&data);
            if kept.len() > MAX_429_BODY_BYTES {
                break;
            }
        }
    }
    let bytes = kept.freeze();
    let policy = rate_limit::classify_429(&bytes);
    (Response::from_parts(parts, body::full(bytes)), policy)
}

/// hubgate's own headers on an upstream answer.
pub(super) fn finish(
    mut response: Response<Body>,
    owner: Owner,
    queued: Duration,
    retries: u32,
    skip: Option<Skip>,
) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        QUEUE_MS_HEADER,
        HeaderValue::from(u64::try_from(queued.as_millis()).unwrap_or(u64::MAX)),
    );
    let mut owner_text = bytes::BytesMut::with_capacity(48);
    if write!(owner_text, "{owner}").is_ok() {
        if let Ok(owner) = HeaderValue::from_maybe_shared(owner_text.freeze()) {
            headers.insert(OWNER_HEADER, owner);
        }
    }
    if retries > 0 {
        headers.insert(RETRIES_HEADER, HeaderValue::from(retries));
    }
    if let Some(why) = skip.and_then(Skip::header_value) {
        headers.insert(RETRY_SKIPPED_HEADER, HeaderValue::from_static(why));
    }
    response
}

fn unreadable_body(error: BoxError) -> BoxError {
    if let Some(found) = CallerBodyError::found_in(error.as_ref()) {
        return Box::new(found.detached());
    }
    Box::new(PaceError::UnreadableBody(format!(
        "the request body could not be read ({error}); send it again"
    )))
}

/// `X-Hubgate-Deadline-Ms`, when the caller sent one.
fn caller_deadline(request: &Request<Body>) -> Result<Option<Duration>, PaceError> {
    let Some(value) = request.headers().get(DEADLINE_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            PaceError::InvalidDeadline(format!(
                "X-Hubgate-Deadline-Ms must be a whole number of milliseconds such as 5000, not {:?}",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })
}

#[cfg(test)]
mod tests;
