//! Brokered calls: a call naming an install (`X-Hubgate-Portal`, and `X-Hubgate-App` when
//! several apps are configured) and carrying no `Authorization` gets the install's fresh
//! access token, is paced under (app, portal) without introspection, and is replayed once
//! with a new token if HubSpot still answers `EXPIRED_AUTHENTICATION`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt as _};

use super::broker::{Broker, BrokerError};
use super::InstallKey;
use crate::hubspot::Owner;
use crate::pace::replay::{self, Prepared};
use crate::pace::{PacePolicy, ReplayBuffer};
use crate::proxy::body::{self, Body, BoxError};
use crate::proxy::callers::AuthenticatedCaller;

const PORTAL_HEADER: HeaderName = HeaderName::from_static("x-hubgate-portal");
const APP_HEADER: HeaderName = HeaderName::from_static("x-hubgate-app");

/// HubSpot's 401 bodies are small; a larger one is not the expired-token answer.
const MAX_401_BODY_BYTES: usize = 16 * 1024;

/// Marks a call whose owner the broker named, so identity asks HubSpot nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Brokered;

/// Why a brokered call was answered by hubgate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerRefusal {
    #[error("{0}")]
    BadHeader(String),
    #[error("caller {caller:?} may not use the install in portal {portal}: its [[callers]] entry's portals do not list it; ask the gateway's operator to add {portal} to portals")]
    PortalNotAllowed { caller: String, portal: u64 },
    #[error("hubgate holds no install of app {app_id} in portal {hub_id}; install the app there by opening /oauth/install/{app_id} on this hubgate (or import a refresh token with POST /admin/installs), then retry")]
    UnknownInstall { app_id: u64, hub_id: u64 },
    #[error("the install of app {app_id} in portal {hub_id} must be authorized again (HubSpot no longer accepts its refresh token): a portal admin opens /oauth/install/{app_id} on this hubgate; calls work again once it is done")]
    ReauthRequired { app_id: u64, hub_id: u64 },
    #[error("hubgate has no valid access token for this install right now ({0}); retry shortly")]
    Unavailable(String),
}

impl From<BrokerError> for BrokerRefusal {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::UnknownApp(app_id) => BrokerRefusal::BadHeader(format!(
                "X-Hubgate-App: no app {app_id} is configured in [[apps]]"
            )),
            BrokerError::UnknownInstall { app_id, hub_id } => {
                BrokerRefusal::UnknownInstall { app_id, hub_id }
            }
            BrokerError::NeedsReauth { app_id, hub_id } => {
                BrokerRefusal::ReauthRequired { app_id, hub_id }
            }
            other => BrokerRefusal::Unavailable(other.to_string()),
        }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

#[derive(Clone)]
pub(crate) struct BrokerLayer {
    broker: Option<Broker>,
    policy: Arc<ArcSwap<PacePolicy>>,
    replay_buffer: ReplayBuffer,
}

impl BrokerLayer {
    /// `broker` is `None` without `[[apps]]`: brokered calls are then refused.
    /// A body kept for the one replay takes its room in `replay_buffer`, the one the
    /// pacing layer's retries use.
    pub(crate) fn new(
        broker: Option<Broker>,
        policy: Arc<ArcSwap<PacePolicy>>,
        replay_buffer: ReplayBuffer,
    ) -> Self {
        BrokerLayer {
            broker,
            policy,
            replay_buffer,
        }
    }
}

impl<S> Layer<S> for BrokerLayer {
    type Service = BrokerCalls<S>;
    fn layer(&self, inner: S) -> BrokerCalls<S> {
        BrokerCalls {
            inner,
            broker: self.broker.clone(),
            policy: self.policy.clone(),
            replay_buffer: self.replay_buffer.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct BrokerCalls<S> {
    inner: S,
    broker: Option<Broker>,
    policy: Arc<ArcSwap<PacePolicy>>,
    replay_buffer: ReplayBuffer,
}

impl<S> Service<Request<Body>> for BrokerCalls<S>
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
        // A call with its own credential is the caller's business, exactly as before.
        if !request.headers().contains_key(&PORTAL_HEADER)
            || request.headers().contains_key(header::AUTHORIZATION)
        {
            return Box::pin(self.inner.call(request));
        }
        let inner = self.inner.clone();
        // Boxed outside the async block: see the pacing layer (rust-lang/rust#64552).
        let send: Sender = Box::new(move |request| Box::pin(inner.clone().oneshot(request)));
        let broker = self.broker.clone();
        let policy = self.policy.load_full();
        let replay_buffer = self.replay_buffer.clone();
        Box::pin(async move { serve(broker, policy, &replay_buffer, send, request).await })
    }
}

type Sender = Box<dyn Fn(Request<Body>) -> ResponseFuture + Send>;

async fn serve(
    broker: Option<Broker>,
    policy: Arc<PacePolicy>,
    replay_buffer: &ReplayBuffer,
    send: Sender,
    request: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let Some(broker) = broker else {
        return Err(BrokerRefusal::BadHeader(
            "X-Hubgate-Portal asks for a brokered call, but this hubgate has no [[apps]] configured; send your own Authorization header instead".into(),
        )
        .into());
    };
    let key = install_key(&broker, request.headers())?;
    if let Some(AuthenticatedCaller(caller)) = request.extensions().get() {
        if !policy.callers.may_use_portal(caller, key.hub_id) {
            return Err(BrokerRefusal::PortalNotAllowed {
                caller: caller.clone(),
                portal: key.hub_id,
            }
            .into());
        }
    }
    let token = broker
        .access_token(key)
        .await
        .map_err(|e| refusal(&broker, e))?;
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(Owner::App {
        app_id: key.app_id,
        portal_id: key.hub_id,
    });
    parts.extensions.insert(Brokered);
    let max_replay = policy.retry.max_body_bytes;
    // `_held` keeps the body's room in the replay buffer until the call has ended.
    let (replayable, _held) = match replay::prepare(body, max_replay, replay_buffer).await? {
        Prepared::Replayable { bytes, held } => (Some(bytes), held),
        Prepared::Streaming(body) => {
            // Too large to keep: sent once, never replayed.
            let request = with_token(Request::from_parts(parts, body), &token)?;
            let sending = send(request);
            return sending.await;
        }
    };
    let bytes = replayable.unwrap_or_default();
    let first = with_token(
        Request::from_parts(clone_head(&parts), body::full(bytes.clone())),
        &token,
    )?;
    // Own statements: a borrow of `send` (not `Sync`) must not live across an await.
    let sending = send(first);
    let response = sending.await?;
    if response.status() != StatusCode::UNAUTHORIZED {
        return Ok(response);
    }
    let (head, answer) = read_small(response).await;
    if !expired_authentication(&answer) {
        return Ok(Response::from_parts(head, body::full(answer)));
    }
    tracing::info!(
        app_id = key.app_id,
        hub_id = key.hub_id,
        "HubSpot called the brokered token expired; refreshing and replaying once"
    );
    let fresh = broker
        .replace_token(key, &token)
        .await
        .map_err(|e| refusal(&broker, e))?;
    let again = with_token(Request::from_parts(parts, body::full(bytes)), &fresh)?;
    let sending = send(again);
    sending.await
}

/// The refusal for a broker error, counting the calls refused for re-authorization.
fn refusal(broker: &Broker, error: BrokerError) -> BoxError {
    let refusal = BrokerRefusal::from(error);
    if matches!(refusal, BrokerRefusal::ReauthRequired { .. }) {
        broker.metrics().count_reauth_refusal();
    }
    refusal.into()
}

/// The install a call names: its portal, and its app (the only one, or `X-Hubgate-App`).
fn install_key(broker: &Broker, headers: &http::HeaderMap) -> Result<InstallKey, BrokerRefusal> {
    let number = |name: &HeaderName, what: &str| -> Result<Option<u64>, BrokerRefusal> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(BrokerRefusal::BadHeader(format!(
                "send one {name} header, not several"
            ))),
            (Some(value), None) => value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| {
                    BrokerRefusal::BadHeader(format!("{name} must be the {what} as a number"))
                }),
        }
    };
    let hub_id = number(&PORTAL_HEADER, "portal's hub_id")?.unwrap_or_default();
    let app_id = match number(&APP_HEADER, "app's app_id")? {
        Some(app_id) => {
            broker.app(app_id).map_err(|_| {
                BrokerRefusal::BadHeader(format!(
                    "X-Hubgate-App: no app {app_id} is configured in [[apps]]"
                ))
            })?;
            app_id
        }
        None => broker.only_app().ok_or_else(|| {
            BrokerRefusal::BadHeader(
                "this hubgate has several [[apps]]: say which one with X-Hubgate-App: <app_id>"
                    .into(),
            )
        })?,
    };
    Ok(InstallKey { app_id, hub_id })
}

fn with_token(mut request: Request<Body>, token: &str) -> Result<Request<Body>, BoxError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        BrokerRefusal::Unavailable("the stored access token is not a header value".into())
    })?;
    value.set_sensitive(true);
    request.headers_mut().insert(header::AUTHORIZATION, value);
    Ok(request)
}

fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head.extensions = parts.extensions.clone();
    head
}

/// A 401's head and (small) body, so it can be read and still passed on.
async fn read_small(response: Response<Body>) -> (http::response::Parts, Bytes) {
    let (head, body) = response.into_parts();
    let bytes = body::read_at_most(body, MAX_401_BODY_BYTES)
        .await
        .unwrap_or_default();
    (head, bytes)
}

fn expired_authentication(answer: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| {
            v.get("category")?
                .as_str()
                .map(|c| c == "EXPIRED_AUTHENTICATION")
        })
        .unwrap_or(false)
}
