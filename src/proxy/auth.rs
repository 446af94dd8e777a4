//! Inbound auth: with `[inbound] require_caller_key`, a call without a known caller key is
//! refused here, before identity lookups or budgets are spent on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use tower::{Layer, Service};

use super::body::{Body, BoxError};
use crate::pace::PacePolicy;

#[derive(Clone)]
pub(crate) struct AuthLayer {
    policy: Arc<ArcSwap<PacePolicy>>,
}

impl AuthLayer {
    /// Reads the callers registry from the policy `pace` reads, so keys, weights and caps
    /// come from one `[[callers]]` and a reload swaps them together.
    pub(crate) fn new(policy: Arc<ArcSwap<PacePolicy>>) -> Self {
        AuthLayer { policy }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    policy: Arc<ArcSwap<PacePolicy>>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let authenticated = self
            .policy
            .load()
            .callers
            .authenticate(request.headers_mut());
        match authenticated {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => Box::pin(std::future::ready(Err(refusal.into()))),
        }
    }
}
