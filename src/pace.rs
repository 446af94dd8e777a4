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
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use crate::body::{self, Body};
use crate::callers::Callers;
use crate::classify::{budgets_for, Classifier, Keys};
use crate::clock::Clock;
use hubgate_engine::{BudgetKey, Tick};
use crate::error::GatewayError;
use crate::guard::CallerBodyError;
use crate::identity::Owner;
use crate::metrics::Metrics;
use crate::pacer::{Ask, Pacer, Refusal};
use crate::ratelimit::{self, Policy, RateLimitHeaders};
use crate::replay::{self, Prepared};
use crate::retry::{self, Failure, RetryConfig, Skip};
use crate::store::{BudgetStore, Lesson};
use crate::upstream::OpenedAt;

/// A caller's own, shorter deadline for this call, in milliseconds.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-hubgate-deadline-ms");
const QUEUE_MS_HEADER: HeaderName = HeaderName::from_static("x-hubgate-queue-ms");
const OWNER_HEADER: HeaderName = HeaderName::from_static("x-hubgate-owner");
const RETRIES_HEADER: HeaderName = HeaderName::from_static("x-hubgate-retries");
const RETRY_SKIPPED_HEADER: HeaderName = HeaderName::from_static("x-hubgate-retry-skipped");

/// HubSpot's 429 bodies are a few hundred bytes; more than this is not a rate-limit answer
/// worth reading whole.
const MAX_429_BODY_BYTES: usize = 64 * 1024;

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

#[derive(Clone)]
pub struct PaceLayer {
    shared: Arc<PaceShared>,
}

/// What every paced call needs, built once.
pub struct PaceShared {
    pub pacer: Pacer,
    /// What the config says about pacing; a reload swaps it whole, and each call reads it
    /// once on arrival and keeps that view to its end.
    pub policy: Arc<ArcSwap<PacePolicy>>,
    pub clock: Clock,
    pub metrics: Metrics,
}

/// The reloadable part of pacing.
pub struct PacePolicy {
    pub classifier: Classifier,
    /// `[queue] max_wait_ms`: the longest any call waits, retries included.
    pub max_wait: Duration,
    /// How long a `SECONDLY` 429 pauses the portal's search budget: one search window.
    pub search_pause: Duration,
    pub retry: RetryConfig,
    pub callers: Callers,
}

impl PaceLayer {
    pub fn new(shared: PaceShared) -> Self {
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

#[derive(Clone)]
pub struct Pace<S> {
    inner: S,
    shared: Arc<PaceShared>,
}

impl<S> Service<Request<Body>> for Pace<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        // A boxed sender, and `oneshot` rather than an async block: naming `S::Future` inside
        // an async block trips rustc's higher-ranked `Send` check (rust-lang/rust#64552).
        // Each attempt clones the inner service, as tower's own retry layer does.
        let send: Sender = Box::new(move |request| Box::pin(inner.clone().oneshot(request)));
        let shared = self.shared.clone();
        Box::pin(async move { shared.serve(request, send).await })
    }
}

type Sender = Box<dyn Fn(Request<Body>) -> ResponseFuture + Send>;

impl PaceShared {
    async fn serve(
        self: Arc<Self>,
        request: Request<Body>,
        send: Sender,
    ) -> Result<Response<Body>, GatewayError> {
        let started = tokio::time::Instant::now();
        let pacing = self.policy.load_full();
        let owner = request
            .extensions()
            .get::<Owner>()
            .copied()
            .unwrap_or(Owner::Anonymous);
        let max_wait = pacing
            .max_wait
            .min(caller_deadline(&request)?.unwrap_or(Duration::MAX));
        let caller = pacing.callers.identify(&request)?;
        pacing
            .callers
            .check_cap(&caller.name)
            .map_err(|retry_after| GatewayError::CallerCapped {
                caller: caller.name.to_string(),
                retry_after,
            })?;
        let class = pacing
            .classifier
            .classify(request.method(), request.uri().path());
        let keys = budgets_for(owner, class);
        let (parts, body) = request.into_parts();
        let max_replay = if pacing.retry.max_retries == 0 {
            0
        } else {
            pacing.retry.max_body_bytes
        };
        let (replayable, mut streaming) = match replay::prepare(body, max_replay).await {
            Ok(Prepared::Replayable(bytes)) => (Some(bytes), None),
            Ok(Prepared::Streaming(body)) => (None, Some(body)),
            Err(e) => return Err(unreadable_body(e)),
        };

        let mut retries = 0u32;
        let mut queued = Duration::ZERO;
        loop {
            if !keys.is_empty() {
                let waited = self
                    .pacer
                    .admit(Ask {
                        owner,
                        keys: keys.clone(),
                        seat: caller.seat,
                        max_wait: max_wait.saturating_sub(started.elapsed()),
                        retry: retries > 0,
                    })
                    .await
                    .map_err(|refusal| refused(refusal, owner, &self.clock))?;
                // Only admitted calls: refusals are counted by outcome in
                // hubgate_requests_total.
                self.metrics
                    .observe_queue_wait(caller.seat.priority.as_label(), waited);
                queued += waited;
            }
            // This attempt's sends were stamped in its budgets' logs at or before this tick.
            let admitted = self.clock.now();
            let body = match (&replayable, streaming.take()) {
                (Some(bytes), _) => body::full(bytes.clone()),
                (None, Some(body)) => body,
                // A streaming body is never retried, so it is only ever taken once.
                (None, None) => {
                    return Err(GatewayError::BadRequest("request body already sent".into()))
                }
            };
            // Its own statement: a borrow of `send` (not `Sync`) must not live across the await.
            let sending = send(Request::from_parts(attempt_head(&parts), body));
            let attempt = sending.await;
            let (failure, answer) = match attempt {
                Ok(response) => {
                    let opened = response.extensions().get::<OpenedAt>().copied();
                    self.learn_from_answer(response.headers(), opened, &keys, admitted)
                        .await;
                    let status = response.status();
                    if !matches!(status.as_u16(), 423 | 429 | 502..=504) {
                        return Ok(finish(response, owner, queued, retries, None));
                    }
                    let (response, policy) = if status == StatusCode::TOO_MANY_REQUESTS {
                        let (response, policy) = read_429(response).await;
                        self.learn_from_429(owner, &keys, policy, pacing.search_pause)
                            .await;
                        (response, Some(policy))
                    } else {
                        (response, None)
                    };
                    (Failure::Status { status, policy }, Ok(response))
                }
                Err(
                    error @ (GatewayError::UpstreamConnect { .. }
                    | GatewayError::UpstreamTls { .. }),
                ) => (Failure::Connect, Err(error)),
                Err(
                    error @ (GatewayError::UpstreamFailed { .. }
                    | GatewayError::UpstreamTimeout { .. }),
                ) => (Failure::AfterSend, Err(error)),
                Err(other) => return Err(other),
            };
            let retry_after = answer
                .as_ref()
                .ok()
                .and_then(|r| ratelimit::retry_after(r.headers(), std::time::SystemTime::now()));
            let plan = retry::plan(failure, &parts.method, retry_after, &pacing.retry);
            let skip = match plan {
                Err(Skip::Daily) => {
                    return Err(self.daily_exhausted(owner, &keys));
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
                    } else if started.elapsed() + wait >= max_wait {
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

    /// `-Max`/`-Remaining` and the daily pair correct the local view of the budgets this
    /// call spent. Absent headers change nothing; nothing here raises a limit. An answer
    /// over a connection opened after the call was `admitted` moves its send to when the
    /// connection was ready: a cold pool's burst leaves later than its stamps, by a TCP and
    /// TLS handshake, which can be more than the window's margin.
    async fn learn_from_answer(
        &self,
        headers: &http::HeaderMap,
        opened: Option<OpenedAt>,
        keys: &Keys,
        admitted: Tick,
    ) {
        let reported = RateLimitHeaders::parse(headers);
        let mut lessons: smallvec::SmallVec<[Lesson; 4]> = smallvec::SmallVec::new();
        if let Some(OpenedAt(opened)) = opened {
            let sent = self.clock.tick_of(opened);
            if sent > admitted {
                lessons.extend(keys.iter().map(|&key| Lesson::SentLate {
                    key,
                    admitted,
                    sent,
                }));
            }
        }
        for key in keys.iter().copied() {
            match key {
                BudgetKey::Burst { .. } | BudgetKey::Unidentified { .. } => {
                    if let (Some(max), Some(remaining)) = (reported.max, reported.remaining) {
                        lessons.push(Lesson::Usage {
                            key,
                            hub_used: max.saturating_sub(remaining),
                            max,
                        });
                    }
                }
                BudgetKey::Daily { .. } => {
                    if let Some(remaining) = reported.daily_remaining {
                        lessons.push(Lesson::Remaining { key, remaining });
                    }
                }
                BudgetKey::Search { .. } | BudgetKey::Global => {}
            }
        }
        if lessons.is_empty() {
            return;
        }
        let learning = learn_all(
            self.pacer.store().clone(),
            lessons,
            self.clock.now(),
            self.clock.unix_ms(),
        );
        if self.pacer.store().learns_locally() {
            learning.await;
        } else {
            // A Redis round trip per answer would otherwise sit between HubSpot's answer
            // and the caller.
            tokio::spawn(learning);
        }
    }

    /// A 429 tells which budget HubSpot thinks is spent; hubgate's view follows it.
    async fn learn_from_429(
        &self,
        owner: Owner,
        keys: &Keys,
        policy: Policy,
        search_pause: Duration,
    ) {
        self.metrics.count_upstream_rate_limited(&owner, policy);
        let (now, unix_ms) = (self.clock.now(), self.clock.unix_ms());
        let mut lessons: smallvec::SmallVec<[Lesson; 4]> = smallvec::SmallVec::new();
        for key in keys.iter().copied() {
            match (policy, key) {
                // The window is full until it slides, and it holds someone else's calls.
                (
                    Policy::TenSecondly | Policy::Unknown,
                    BudgetKey::Burst { .. } | BudgetKey::Unidentified { .. } | BudgetKey::Global,
                ) => {
                    lessons.push(Lesson::Rejected { key });
                    lessons.push(Lesson::Remaining { key, remaining: 0 });
                }
                (Policy::Secondly, BudgetKey::Search { .. }) => {
                    lessons.push(Lesson::Rejected { key });
                    lessons.push(Lesson::BlockUntil {
                        key,
                        until: now.saturating_add(search_pause),
                    });
                }
                (Policy::Daily, BudgetKey::Daily { portal_id }) => {
                    lessons.push(Lesson::DailyExhausted { portal_id });
                }
                _ => {}
            }
        }
        // Awaited even on Redis: the retry that follows must be judged with it.
        learn_all(self.pacer.store().clone(), lessons, now, unix_ms).await;
    }

    /// HubSpot said DAILY: answer as hubgate does for a spent daily budget.
    fn daily_exhausted(&self, owner: Owner, keys: &Keys) -> GatewayError {
        let (now, unix_ms) = (self.clock.now(), self.clock.unix_ms());
        let resets_at_unix_ms = match self.pacer.store().estimate_wait(keys, now, unix_ms, 0) {
            Err(exhausted) => exhausted.resets_at_unix_ms,
            // No daily budget known locally (e.g. unidentified owner): next UTC midnight.
            Ok(_) => (unix_ms / 86_400_000 + 1) * 86_400_000,
        };
        refused(
            Refusal::DailyExhausted { resets_at_unix_ms },
            owner,
            &self.clock,
        )
    }
}

/// Applies `lessons` to the store, in order.
async fn learn_all(
    store: Arc<dyn BudgetStore>,
    lessons: smallvec::SmallVec<[Lesson; 4]>,
    now: Tick,
    unix_ms: i64,
) {
    for lesson in lessons {
        store.learn(lesson, now, unix_ms).await;
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
    let policy = ratelimit::classify_429(&bytes);
    (Response::from_parts(parts, body::full(bytes)), policy)
}

/// hubgate's own headers on an upstream answer.
fn finish(
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

fn unreadable_body(error: crate::body::BoxError) -> GatewayError {
    if let Some(found) = CallerBodyError::found_in(error.as_ref()) {
        return found.to_gateway_error();
    }
    GatewayError::BadRequest(format!(
        "the request body could not be read ({error}); send it again"
    ))
}

/// `X-Hubgate-Deadline-Ms`, when the caller sent one.
fn caller_deadline(request: &Request<Body>) -> Result<Option<Duration>, GatewayError> {
    let Some(value) = request.headers().get(DEADLINE_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            GatewayError::BadRequest(format!(
                "X-Hubgate-Deadline-Ms must be a whole number of milliseconds such as 5000, not {:?}",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })
}

fn refused(refusal: Refusal, owner: Owner, clock: &Clock) -> GatewayError {
    let owner_label = owner.label();
    match refusal {
        Refusal::QueueFull { depth, drain } => GatewayError::QueueFull {
            owner: owner_label,
            depth,
            retry_after: drain,
        },
        Refusal::DeadlineUnmeetable { estimate, deadline } => GatewayError::DeadlineUnmeetable {
            owner: owner_label,
            estimate,
            deadline,
        },
        Refusal::DeadlineExpired {
            waited,
            retry_after,
        } => GatewayError::DeadlineExpired {
            owner: owner_label,
            waited,
            retry_after,
        },
        Refusal::StoreUnavailable => GatewayError::StoreUnavailable { owner: owner_label },
        Refusal::DailyExhausted { resets_at_unix_ms } => {
            let now = clock.unix_ms();
            let portal = match owner {
                Owner::App { portal_id, .. } => portal_id.to_string(),
                _ => "-".into(),
            };
            GatewayError::DailyExhausted {
                owner: owner_label,
                portal,
                resets_at: httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(resets_at_unix_ms).unwrap_or(0)),
                ),
                retry_after: Duration::from_millis(
                    u64::try_from(resets_at_unix_ms - now).unwrap_or(0),
                ),
            }
        }
    }
}
