//! The identity layer: names each call's quota owner (app, portal) from its credential,
//! so the layers after it know whose budgets the call spends.

mod apps;
mod cache;
mod resolver;
mod turns;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

pub use resolver::{IdentityResolver, Presented, Resolution};
pub use turns::TurnLine;

use super::body::{Body, BoxError};
use super::callers::claimed_caller;
use crate::hubspot::{credential_of, single_credential, Owner};
use crate::oauth::brokered::Brokered;

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

#[derive(Debug, Clone)]
pub(crate) struct IdentifyLayer {
    resolver: IdentityResolver,
}

impl IdentifyLayer {
    pub(crate) fn new(resolver: IdentityResolver) -> Self {
        IdentifyLayer { resolver }
    }
}

impl<S> Layer<S> for IdentifyLayer {
    type Service = Identify<S>;
    fn layer(&self, inner: S) -> Identify<S> {
        Identify {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Identify<S> {
    inner: S,
    resolver: IdentityResolver,
}

impl<S> Service<Request<Body>> for Identify<S>
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

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        // Boxed outside the async block: see the pacing layer (rust-lang/rust#64552).
        let mut next =
            move |request: Request<Body>| -> ResponseFuture { Box::pin(inner.call(request)) };
        let resolver = self.resolver.clone();
        Box::pin(async move {
            // The broker named the owner (and supplied the token) itself: nothing to ask.
            if request.extensions().get::<Brokered>().is_some() {
                return next(request).await;
            }
            single_credential(request.headers(), request.uri())?;
            let credential = credential_of(request.headers(), request.uri());
            let (name, claimed_from) = claimed_caller(&request);
            let line = TurnLine {
                name: &name,
                claimed_from: claimed_from.as_deref(),
            };
            let presented = Presented::new(&credential);
            let owner = match resolver.resolve_digested(&presented, line).await {
                Resolution::Owner(owner) => owner,
                // HubSpot rejects the token; the call still goes (paced with calls that
                // carry no credential) so the caller gets HubSpot's own 401.
                Resolution::Invalid => Owner::Anonymous,
            };
            request.extensions_mut().insert(owner);
            let answer = next(request).await;
            if let Ok(response) = &answer {
                resolver.observe_digested(&presented, response.status());
            }
            answer
        })
    }
}
