//! Request handling: routing, authentication, rate-limit accounting, faults, introspection,
//! the `/__sim/*` control and fidelity routes, and the accept loop. Response builders and
//! HubSpot's error shapes come from `http_util`, which the CRM shares.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::clock::unix_ms;
use super::config::{ExemptRule, HapiKeyConfig, OutsideConfig, SimConfig, TokenConfig, TokenKind};
use super::crm::{self, Crm};
use super::faults::{FaultOutcome, Faults};
use super::http_util::{
    correlation_id, empty_response, hs_error, json_response, parse_query, read_body,
    route_not_found, segments, set_header, Body,
};
use super::limits::{Caller, Class, Counter, Decision, IntrospectionKind, Limiter, Policy};

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

pub(crate) struct Shared {
    pub config: SimConfig,
    pub tokens: HashMap<String, TokenConfig>,
    pub hapikeys: HashMap<String, HapiKeyConfig>,
    pub exempt: Vec<ExemptRule>,
    pub limiter: Limiter,
    pub crm: Crm,
    pub faults: Mutex<Faults>,
    pub outside: Mutex<HashMap<(u64, u64), tokio::task::JoinHandle<()>>>,
    pub runtime: tokio::runtime::Handle,
}

impl Shared {
    pub fn new(config: SimConfig, runtime: tokio::runtime::Handle) -> Self {
        let limiter = Limiter::new(
            config.burst_window_ms,
            config.search_limit,
            config.search_window_ms,
            config.daily_reset_utc_offset_ms,
        );
        Shared {
            tokens: config.token_registry(),
            hapikeys: config
                .hapikeys
                .iter()
                .map(|h| (h.key.clone(), h.clone()))
                .collect(),
            exempt: config.exempt.clone(),
            faults: Mutex::new(config.faults.clone()),
            limiter,
            crm: Crm::new(),
            outside: Mutex::new(HashMap::new()),
            runtime,
            config,
        }
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    pub fn reset(&self) {
        self.limiter.reset();
        self.crm.reset();
    }

    /// The burst limit of an owner: a token override wins, since HubSpot tiers are per app.
    fn burst_limit_for(&self, app_id: u64, portal_id: u64) -> u32 {
        self.tokens
            .values()
            .filter(|t| t.app_id == app_id && t.portal_id == portal_id)
            .find_map(|t| t.burst_limit)
            .unwrap_or(self.config.burst_limit)
    }

    pub fn stop_outside(&self) {
        let mut map = self.outside.lock().unwrap_or_else(|e| e.into_inner());
        for (_, h) in map.drain() {
            h.abort();
        }
    }
}

/// Starts (or replaces, or with `per_window == 0` stops) the outside consumer of one owner.
/// Its arrivals are spaced evenly so each burst window sees `per_window` of them.
pub(crate) fn set_outside(shared: &Arc<Shared>, o: OutsideConfig) {
    let mut map = shared.outside.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = map.remove(&(o.app_id, o.portal_id)) {
        h.abort();
    }
    if o.per_window == 0 {
        return;
    }
    let period = Duration::from_millis(shared.config.burst_window_ms) / o.per_window;
    let period = period.max(Duration::from_micros(100));
    let limit = shared.burst_limit_for(o.app_id, o.portal_id);
    // A weak handle, so a forgotten consumer never keeps the simulator state alive.
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let handle = shared.runtime.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = weak.upgrade() else { return };
            s.limiter
                .outside_arrival(o.app_id, o.portal_id, limit, Instant::now());
        }
    });
    map.insert((o.app_id, o.portal_id), handle);
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    if req.uri().path().starts_with("/__sim/") || req.uri().path() == "/__sim" {
        return Ok(sim_route(&shared, req).await);
    }
    api_route(&shared, req).await
}

/// What accounting decided before faults and the actual answer are applied.
enum Plan {
    Introspection,
    Unauthorized,
    Api { caller: Caller, decision: Decision },
}

async fn api_route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let arrived = Instant::now();
    let unix_ms = unix_ms();
    let corr = correlation_id();
    shared.limiter.count(Counter::Request);
    let path = req.uri().path().to_string();
    let raw_segments = segments(&path);
    let method = req.method().as_str().to_string();

    // Accounting happens at arrival, before any injected latency, so faulted requests count too.
    let plan = if raw_segments.first() == Some(&"oauth") {
        count_introspection(shared, &req, &raw_segments);
        Plan::Introspection
    } else {
        match authenticate(shared, &req) {
            None => {
                shared.limiter.count(Counter::Unauthorized);
                Plan::Unauthorized
            }
            Some(caller) => {
                let norm = crm::normalize(&raw_segments);
                let class = classify(shared, &method, &raw_segments, &norm);
                let decision = shared.limiter.check(&caller, class, arrived, unix_ms);
                Plan::Api { caller, decision }
            }
        }
    };

    let faults = shared.faults();
    if let Some(d) = faults.delay() {
        tokio::time::sleep(d).await;
    }
    match faults.roll() {
        FaultOutcome::Pass => {}
        FaultOutcome::Drop => {
            shared.limiter.count(Counter::FaultDrop);
            return Err(Dropped);
        }
        FaultOutcome::Error(code) => {
            shared.limiter.count(Counter::FaultError);
            let msg = match code {
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                504 => "Gateway Timeout",
                _ => "Internal Server Error",
            };
            let mut resp = json_response(code, &hs_error(&corr, msg, "INTERNAL_ERROR"));
            set_header(&mut resp, "x-hubspot-correlation-id", &corr);
            return Ok(resp);
        }
    }

    let mut resp = match plan {
        Plan::Introspection => introspect(shared, req, &raw_segments, &corr).await,
        Plan::Unauthorized => json_response(
            401,
            &hs_error(
                &corr,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION",
            ),
        ),
        Plan::Api { caller, decision } => {
            let mut resp = match decision.rejected {
                Some(p) => json_response(429, &rate_limit_body(&caller, p, &corr)),
                None => {
                    let norm = crm::normalize(&raw_segments);
                    serve_api(shared, req, &caller, &method, &norm, &corr, unix_ms).await
                }
            };
            if let Some(h) = decision.headers {
                set_header(&mut resp, "x-hubspot-ratelimit-max", h.max);
                set_header(&mut resp, "x-hubspot-ratelimit-remaining", h.remaining);
                set_header(&mut resp, "x-hubspot-ratelimit-interval-milliseconds", h.interval_ms);
                if let Some((limit, remaining)) = h.daily {
                    set_header(&mut resp, "x-hubspot-ratelimit-daily", limit);
                    set_header(&mut resp, "x-hubspot-ratelimit-daily-remaining", remaining);
                }
            }
            resp
        }
    };
    set_header(&mut resp, "x-hubspot-correlation-id", &corr);
    Ok(resp)
}

fn classify(shared: &Shared, method: &str, raw: &[&str], norm: &[&str]) -> Class {
    if method == "POST" && matches!(norm, ["crm", "v3", "objects", _, "search"]) {
        return Class::Search;
    }
    match shared.exempt.iter().find(|r| r.matches(method, raw)) {
        Some(r) => Class::Exempt { daily: r.daily },
        None => Class::Normal,
    }
}

fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Option<Caller> {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    if let Some(token) = bearer {
        let t = shared.tokens.get(token)?;
        return Some(Caller {
            app_id: t.app_id,
            portal_id: t.portal_id,
            kind: t.kind,
            burst_limit: t.burst_limit.unwrap_or(shared.config.burst_limit),
            daily_limit: t.daily_limit.unwrap_or(shared.config.daily_limit),
        });
    }
    let key = parse_query(req.uri().query())
        .into_iter()
        .find(|(k, _)| k == "hapikey")
        .map(|(_, v)| v)?;
    let h = shared.hapikeys.get(&key)?;
    Some(Caller {
        app_id: h.app_id,
        portal_id: h.portal_id,
        kind: TokenKind::Private,
        burst_limit: shared.burst_limit_for(h.app_id, h.portal_id),
        daily_limit: shared.config.daily_limit,
    })
}

fn rate_limit_body(caller: &Caller, p: Policy, corr: &str) -> Value {
    let kind = match caller.kind {
        TokenKind::Private => "private-app",
        TokenKind::Oauth => "oauth",
    };
    let group = match p {
        Policy::TenSecondlyRolling => format!(
            "publicapi:{kind}-api-calls-ten-secondly:{}:{}",
            caller.app_id, caller.portal_id
        ),
        Policy::Secondly => format!(
            "publicapi:crm:search:{kind}:{}:{}",
            caller.app_id, caller.portal_id
        ),
        Policy::Daily => format!("publicapi:{kind}-api-calls-daily:{}", caller.portal_id),
    };
    json!({
        "status": "error",
        "message": p.message(),
        "errorType": "RATE_LIMIT",
        "correlationId": corr,
        "policyName": p.name(),
        "groupName": group,
    })
}

async fn serve_api(
    shared: &Shared,
    req: Request<Incoming>,
    caller: &Caller,
    method: &str,
    norm: &[&str],
    corr: &str,
    unix_ms: i64,
) -> Response<Body> {
    let query = req.uri().query().map(str::to_string);
    let body = match read_body(req, shared.config.max_body_bytes, corr).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if method == "POST"
        && matches!(
            norm,
            ["events", "v3", "send"] | ["events", "v3", "send", "batch"]
        )
    {
        return empty_response(204);
    }
    let r = crm::Req {
        portal: caller.portal_id,
        method,
        segments: norm,
        query: query.as_deref(),
        body: &body,
        corr,
        now_ms: unix_ms,
    };
    let reply = shared
        .crm
        .handle(&r)
        .unwrap_or_else(|| crm::Reply::route_not_found(corr, method, norm));
    match reply.body {
        Some(b) => json_response(reply.status, &b),
        None => empty_response(reply.status),
    }
}

fn count_introspection(shared: &Shared, req: &Request<Incoming>, segs: &[&str]) {
    let kind = match (req.method(), segs) {
        (&Method::GET, ["oauth", "v1", "access-tokens", _]) => IntrospectionKind::OauthAccessToken,
        (&Method::POST, ["oauth", "v2", "private-apps", "get", "access-token-info"]) => {
            IntrospectionKind::PrivateAppTokenInfo
        }
        (&Method::POST, ["oauth", _, "token", "introspect"]) => IntrospectionKind::TokenIntrospect,
        _ => return,
    };
    // The private-app token travels in the body; it is attributed once the body is read.
    let token = match segs {
        ["oauth", "v1", "access-tokens", t] => (*t).to_string(),
        _ => String::new(),
    };
    shared.limiter.count_introspection(kind, &token);
}

async fn introspect(
    shared: &Shared,
    req: Request<Incoming>,
    segs: &[&str],
    corr: &str,
) -> Response<Body> {
    let method = req.method().clone();
    match (&method, segs) {
        (&Method::GET, ["oauth", "v1", "access-tokens", token]) => {
            match shared
                .tokens
                .get(*token)
                .filter(|t| t.kind == TokenKind::Oauth)
            {
                Some(t) => json_response(
                    200,
                    &json!({
                        "token": t.token,
                        "user": t.user(),
                        "hub_domain": t.hub_domain(),
                        "scopes": t.scopes(),
                        "scope_to_scope_group_pks": [],
                        "trial_scopes": [],
                        "trial_scope_to_scope_group_pks": [],
                        "hub_id": t.portal_id,
                        "app_id": t.app_id,
                        "expires_in": shared.config.access_token_expires_in,
                        "user_id": t.user_id(),
                        "token_type": "access",
                    }),
                ),
                None => json_response(404, &hs_error(corr, "Token not found", "OBJECT_NOT_FOUND")),
            }
        }
        (&Method::POST, ["oauth", "v2", "private-apps", "get", "access-token-info"]) => {
            let body = match read_body(req, shared.config.max_body_bytes, corr).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let key = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                v.get("tokenKey")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            if let Some(k) = &key {
                shared.limiter.attribute_introspection(k);
            }
            let Some(key) = key else {
                return json_response(
                    400,
                    &hs_error(
                        corr,
                        "Request body must be {\"tokenKey\": \"...\"}",
                        "VALIDATION_ERROR",
                    ),
                );
            };
            match shared
                .tokens
                .get(&key)
                .filter(|t| t.kind == TokenKind::Private)
            {
                Some(t) => json_response(
                    200,
                    &json!({
                        "userId": t.user_id(),
                        "hubId": t.portal_id,
                        "appId": t.app_id,
                        "scopes": t.scopes(),
                    }),
                ),
                None => json_response(
                    401,
                    &hs_error(
                        corr,
                        "The access token provided is invalid or does not belong to a private app.",
                        "INVALID_AUTHENTICATION",
                    ),
                ),
            }
        }
        (&Method::POST, ["oauth", _, "token", "introspect"]) => {
            let body = match read_body(req, shared.config.max_body_bytes, corr).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let form = parse_query(std::str::from_utf8(&body).ok());
            let token = form
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            shared.limiter.attribute_introspection(token);
            match shared.tokens.get(token) {
                Some(t) => json_response(
                    200,
                    &json!({
                        "active": true,
                        "app_id": t.app_id,
                        "hub_id": t.portal_id,
                        "user_id": t.user_id(),
                        "scopes": t.scopes(),
                        "expires_in": shared.config.access_token_expires_in,
                        "token_type": "access",
                    }),
                ),
                None => json_response(200, &json!({ "active": false })),
            }
        }
        _ => json_response(404, &route_not_found(corr, method.as_str(), segs)),
    }
}

async fn sim_route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs = segments(&path);
    let method = req.method().clone();
    match (&method, &segs[1..]) {
        (_, ["echo", ..]) => echo(req).await,
        (&Method::GET, ["bytes", n]) => match n.parse::<u64>() {
            Ok(n) => pattern_response(n),
            Err(_) => json_response(400, &json!({ "message": "n must be a byte count" })),
        },
        (&Method::GET, ["stats"]) => {
            let stats = shared.limiter.stats(unix_ms());
            json_response(200, &serde_json::to_value(stats).unwrap_or(Value::Null))
        }
        (&Method::POST, ["reset"]) => {
            shared.reset();
            empty_response(204)
        }
        (&Method::GET, ["faults"]) => json_response(
            200,
            &serde_json::to_value(shared.faults()).unwrap_or(Value::Null),
        ),
        (&Method::POST, ["faults"]) => match sim_json::<Faults>(req).await {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    shared.set_faults(f.clone());
                    json_response(200, &serde_json::to_value(f).unwrap_or(Value::Null))
                }
                Err(e) => json_response(400, &json!({ "message": e.to_string() })),
            },
            Err(resp) => resp,
        },
        (&Method::POST, ["outside"]) => match sim_json::<OutsideConfig>(req).await {
            Ok(o) => {
                set_outside(shared, o);
                empty_response(204)
            }
            Err(resp) => resp,
        },
        (&Method::GET, ["health"]) => json_response(200, &json!({ "status": "ok" })),
        _ => json_response(
            404,
            &json!({ "message": format!("unknown simulator route {method} {path}") }),
        ),
    }
}

async fn sim_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let body = Limited::new(req.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|_| json_response(400, &json!({ "message": "unreadable body" })))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| json_response(400, &json!({ "message": format!("invalid JSON: {e}") })))
}

/// Reports exactly what arrived. The body is hashed frame by frame and never held whole,
/// because fidelity tests push hundreds of MiB through it.
async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            [
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    len += d.len() as u64;
                }
            }
            Err(e) => {
                return json_response(400, &json!({ "message": format!("body error: {e}") }));
            }
        }
    }
    json_response(
        200,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_len": len,
            "body_sha256": hex::encode(hasher.finalize()),
        }),
    )
}

const PATTERN_CHUNK: usize = 64 * 1024;

/// Streams `len` bytes where byte i is `i % 251`, slicing one shared buffer so that large
/// downloads cost no per-chunk allocation.
struct PatternBody {
    pattern: Bytes,
    pos: u64,
    len: u64,
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.pos).min(PATTERN_CHUNK as u64) as usize;
        let off = (self.pos % 251) as usize;
        let chunk = self.pattern.slice(off..off + n);
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.pos)
    }
}

fn pattern_response(len: u64) -> Response<Body> {
    static PATTERN: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let pattern = PATTERN
        .get_or_init(|| (0..PATTERN_CHUNK + 251).map(|i| (i % 251) as u8).collect())
        .clone();
    let mut resp = Response::new(
        PatternBody {
            pattern,
            pos: 0,
            len,
        }
        .boxed(),
    );
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

/// Accepts until `stop` flips, then lets open connections finish briefly before cutting them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Usually fd exhaustion; back off instead of spinning.
                        tracing::warn!("simulator accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(shared.clone(), req));
                    match tls {
                        Some(acceptor) => {
                            let Ok(Ok(stream)) =
                                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
