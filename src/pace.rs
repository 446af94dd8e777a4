//! The pacing layer: classifies each call into the budgets it spends, waits in its
//! owner's queue until they all have room, and only then lets it through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::body::Body;
use crate::classify::{budgets_for, Classifier};
use crate::clock::Clock;
use crate::error::GatewayError;
use crate::identity::Owner;
use crate::pacer::{Pacer, Refusal};

/// A caller's own, shorter deadline for this call, in milliseconds.
pub const DEADLINE_HEADER: &str = "x-hubgate-deadline-ms";
const QUEUE_MS_HEADER: HeaderName = HeaderName::from_static("x-hubgate-queue-ms");
const OWNER_HEADER: HeaderName = HeaderName::from_static("x-hubgate-owner");

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

#[derive(Clone)]
pub struct PaceLayer {
    shared: Arc<PaceShared>,
}

struct PaceShared {
    pacer: Pacer,
    classifier: Classifier,
    /// `[queue] max_wait_ms`: the longest any call waits.
    max_wait: Duration,
    clock: Clock,
}

impl PaceLayer {
    pub fn new(pacer: Pacer, classifier: Classifier, max_wait: Duration, clock: Clock) -> Self {
        PaceLayer {
            shared: Arc::new(PaceShared {
                pacer,
                classifier,
                max_wait,
                clock,
            }),
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
        // The clone waits with the call; `self.inner` stays ready for the next one.
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        // Named as a boxed future outside the async block: naming `S::Future` inside it
        // trips rustc's higher-ranked `Send` check (rust-lang/rust#64552).
        let mut forward =
            move |request: Request<Body>| -> ResponseFuture { Box::pin(inner.call(request)) };
        let shared = self.shared.clone();
        Box::pin(async move {
            let owner = request
                .extensions()
                .get::<Owner>()
                .copied()
                .unwrap_or(Owner::Anonymous);
            let max_wait = shared
                .max_wait
                .min(caller_deadline(&request)?.unwrap_or(Duration::MAX));
            let class = shared
                .classifier
                .classify(request.method(), request.uri().path());
            let keys = budgets_for(owner, class);
            let waited = if keys.is_empty() {
                Duration::ZERO
            } else {
                shared
                    .pacer
                    .admit(owner, keys, max_wait)
                    .await
                    .map_err(|refusal| refused(refusal, owner, &shared.clock))?
            };
            let mut response = forward(request).await?;
            let headers = response.headers_mut();
            headers.insert(
                QUEUE_MS_HEADER,
                HeaderValue::from(waited.as_millis().min(u128::from(u64::MAX)) as u64),
            );
            if let Ok(owner) = HeaderValue::from_str(&owner.label()) {
                headers.insert(OWNER_HEADER, owner);
            }
            Ok(response)
        })
    }
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
