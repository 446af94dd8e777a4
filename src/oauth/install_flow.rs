//! The install flow on the proxy listener, where HubSpot can send a browser:
//! `GET /oauth/install/{app_id}` redirects to HubSpot's consent screen with a random,
//! single-use, short-lived `state`; `GET /oauth/callback` checks that state, redeems the
//! code at once and keeps the install, answering a small page naming the portal.
//!
//! States live in this process: the browser comes back within seconds, to the replica
//! behind the same redirect URI (sticky sessions or one replica serving the flow).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::broker::{Broker, BrokerError};
use super::token_endpoint::form_encode;
use crate::pace::clock::Clock;
use crate::proxy::body::{self, Body, BoxError};
use crate::proxy::outcome::Outcome;

const INSTALL_PREFIX: &str = "/oauth/install/";
const CALLBACK_PATH: &str = "/oauth/callback";
/// How long a browser may take on HubSpot's consent screen.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Flows pending at once; beyond it new ones are refused, so a flood of `/oauth/install`
/// visits cannot grow the table without bound.
const MAX_PENDING: usize = 10_000;

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The flow's shared state: the broker and the pending `state` values.
#[derive(Debug, Clone)]
pub(crate) struct InstallFlow {
    broker: Broker,
    authorize_url: String,
    clock: Clock,
    /// state → (app_id, issued at unix ms).
    pending: Arc<Mutex<HashMap<String, (u64, i64)>>>,
}

impl InstallFlow {
    pub(crate) fn new(broker: Broker, authorize_url: String, clock: Clock) -> InstallFlow {
        InstallFlow {
            broker,
            authorize_url,
            clock,
            pending: Arc::default(),
        }
    }

    /// Whether `request` is the flow's, not a call for HubSpot.
    fn owns(request: &Request<Body>) -> bool {
        let path = request.uri().path();
        path.starts_with(INSTALL_PREFIX) || path == CALLBACK_PATH
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Use GET",
                "The install flow is opened in a browser (GET).",
            );
        }
        let path = request.uri().path();
        if let Some(app) = path.strip_prefix(INSTALL_PREFIX) {
            return self.start(app);
        }
        self.finish(request.uri().query().unwrap_or("")).await
    }

    /// `GET /oauth/install/{app_id}`: 302 to the consent screen.
    fn start(&self, app: &str) -> Response<Body> {
        let Some(app) = app
            .parse::<u64>()
            .ok()
            .and_then(|id| self.broker.app(id).ok())
        else {
            return page(
                StatusCode::NOT_FOUND,
                "Unknown app",
                "This hubgate has no such app in [[apps]]; open /oauth/install/{app_id} with a configured app id.",
            );
        };
        let state = hex::encode(rand::random::<[u8; 16]>());
        let now = self.clock.unix_ms();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|_, (_, at)| now - *at < STATE_TTL.as_millis() as i64);
            if pending.len() >= MAX_PENDING {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many installs under way",
                    "Too many install flows are pending; try again in a few minutes.",
                );
            }
            pending.insert(state.clone(), (app.app_id, now));
        }
        let mut fields = vec![
            ("client_id", app.credentials.client_id.as_str()),
            ("redirect_uri", app.redirect_uri.as_str()),
        ];
        let scope = app.scopes.join(" ");
        let optional = app.optional_scopes.join(" ");
        if !scope.is_empty() {
            fields.push(("scope", &scope));
        }
        if !optional.is_empty() {
            fields.push(("optional_scope", &optional));
        }
        fields.push(("state", &state));
        let separator = if self.authorize_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{separator}{}", self.authorize_url, form_encode(&fields));
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::FOUND;
        if let Ok(location) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(Outcome::Forwarded);
        response
    }

    /// `GET /oauth/callback?code=…&state=…`: redeems the code and keeps the install.
    async fn finish(&self, query: &str) -> Response<Body> {
        let params: HashMap<String, String> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(k, v)| Some((decode(k)?, decode(v)?)))
            .collect();
        let issued = params.get("state").and_then(|state| {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(state)
        });
        let now = self.clock.unix_ms();
        let Some((app_id, _)) = issued.filter(|(_, at)| now - *at < STATE_TTL.as_millis() as i64)
        else {
            return page(
                StatusCode::BAD_REQUEST,
                "Install link expired",
                "This install link is unknown, used already or expired (it lasts 10 minutes). Start again from /oauth/install/{app_id}.",
            );
        };
        if let Some(error) = params.get("error") {
            return page(
                StatusCode::BAD_REQUEST,
                "Install not completed",
                &format!(
                    "HubSpot did not grant access ({}). Start again from /oauth/install/{app_id}.",
                    escape(error)
                ),
            );
        }
        let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
            return page(
                StatusCode::BAD_REQUEST,
                "No code",
                "HubSpot sent no code back. Start again from /oauth/install/{app_id}.",
            );
        };
        match self.redeem(app_id, code).await {
            Ok(hub_id) => page(
                StatusCode::OK,
                "Installed",
                &format!("App {app_id} is installed in HubSpot portal {hub_id}. Services call it through hubgate with X-Hubgate-Portal: {hub_id} and no token. You can close this page."),
            ),
            Err(e) => {
                tracing::warn!(app_id, error = %e, "an install could not be completed");
                page(
                    StatusCode::BAD_GATEWAY,
                    "Install failed",
                    &format!("hubgate could not redeem the code: {}. Start again from /oauth/install/{app_id}.", escape(&e.to_string())),
                )
            }
        }
    }

    async fn redeem(&self, app_id: u64, code: &str) -> Result<u64, BrokerError> {
        let app = self.broker.app(app_id)?.clone();
        let grant = self
            .broker
            .tokens()
            .exchange_code(&app.credentials, code, &app.redirect_uri)
            .await
            .map_err(BrokerError::Token)?;
        let install = self.broker.keep_grant(app_id, grant).await?;
        tracing::info!(app_id, hub_id = install.key.hub_id, "app installed");
        Ok(install.key.hub_id)
    }
}

/// A small HTML page; `text` is already safe to show.
fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>hubgate: {title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut response = Response::new(body::full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(if status.is_success() {
        Outcome::Forwarded
    } else {
        Outcome::BadRequest
    });
    response
}

fn escape(text: &str) -> String {
    text.chars()
        .take(300)
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// A query component with `+` and `%XX` decoded; `None` for broken escapes.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Serves the flow's two routes ahead of everything that would treat them as calls for
/// HubSpot (caller keys, identity, budgets).
#[derive(Debug, Clone)]
pub(crate) struct InstallFlowLayer {
    flow: Option<InstallFlow>,
}

impl InstallFlowLayer {
    pub(crate) fn new(flow: Option<InstallFlow>) -> Self {
        InstallFlowLayer { flow }
    }
}

impl<S> Layer<S> for InstallFlowLayer {
    type Service = InstallRoutes<S>;
    fn layer(&self, inner: S) -> InstallRoutes<S> {
        InstallRoutes {
            inner,
            flow: self.flow.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InstallRoutes<S> {
    inner: S,
    flow: Option<InstallFlow>,
}

impl<S> Service<Request<Body>> for InstallRoutes<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match &self.flow {
            Some(flow) if InstallFlow::owns(&request) => {
                let flow = flow.clone();
                Box::pin(async move { Ok(flow.answer(request).await) })
            }
            _ => Box::pin(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_decode_or_refuse() {
        assert_eq!(decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%E2%82"), None, "not UTF-8");
        assert_eq!(escape("<b>&\"").as_str(), "&lt;b&gt;&amp;&quot;");
    }
}
