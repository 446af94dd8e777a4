//! Shared helpers for the simulator integration tests: start a simulator on 127.0.0.1:0,
//! talk to it with hyper-util's client, and wait on conditions or on paused time.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hubgate_sim::{SimConfig, SimStats, Simulator};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;

pub(crate) type ReqBody = BoxBody<Bytes, Infallible>;

pub(crate) const PAT: &str = "pat-na1-sim-1";
pub(crate) const OAUTH: &str = "oauth-sim-1";
pub(crate) const PAT_APP: u64 = 2001;
pub(crate) const OAUTH_APP: u64 = 3001;
pub(crate) const PORTAL: u64 = 1001;

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_string())
    }

    pub(crate) fn rate_headers(&self) -> Vec<String> {
        self.headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| k.starts_with("x-hubspot-ratelimit"))
            .collect()
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) inner: HyperClient<HttpConnector, ReqBody>,
    pub(crate) base: String,
}

pub(crate) fn empty() -> ReqBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub(crate) fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

impl Client {
    pub(crate) fn new(base: String) -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            base,
        }
    }

    pub(crate) async fn request(&self, req: Request<ReqBody>) -> Resp {
        let resp = self.inner.request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(full(serde_json::to_vec(&v).expect("json"))),
            None => b.body(empty()),
        }
        .expect("request");
        self.request(req).await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None).await
    }

    pub(crate) async fn stats(&self) -> SimStats {
        let r = self.call("GET", "/__sim/stats", None, None).await;
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("stats deserialize")
    }
}

pub(crate) fn config() -> SimConfig {
    SimConfig {
        generate_tokens: 2,
        ..SimConfig::default()
    }
}

pub(crate) async fn start(cfg: SimConfig) -> (Simulator, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = Simulator::start(cfg, listener).await.expect("start");
    let client = Client::new(sim.base_url());
    (sim, client)
}

/// Polls `condition` until it holds, failing the test if it still does not after `within`:
/// waits on what the simulator has done instead of guessing how long that takes.
pub(crate) async fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Moves paused time forward to `t` (no-op if it is already there), so a test states the
/// instants its requests arrive at rather than the gaps between them.
pub(crate) async fn advance_to(t: Instant) {
    let now = Instant::now();
    if t > now {
        tokio::time::advance(t - now).await;
    }
}
