//! Inbound auth: with `[inbound] require_caller_key`, a call without a known caller key is
//! refused here, before identity lookups or budgets are spent on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::body::Body;
use crate::callers::Callers;
use crate::error::GatewayError;

#[derive(Clone)]
pub struct AuthLayer {
    callers: Arc<Callers>,
}

impl AuthLayer {
    /// Shares the registry `pace` reads, so a key and the caller's weight and cap can
    /// never come from two different configurations.
    pub fn new(callers: Arc<Callers>) -> Self {
        AuthLayer { callers }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            callers: self.callers.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    callers: Arc<Callers>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match self.callers.authenticate(request.headers_mut()) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}
