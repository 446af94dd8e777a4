//! The one harness of the integration tests, included by each test binary
//! (tests/gateway, tests/binary) as `mod support`: a gateway on 127.0.0.1:0, small
//! programmable upstreams, and clients that speak HTTP over real sockets. Each binary uses
//! part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

pub(crate) mod pki;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hubgate::Config;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A gateway running in this process on ephemeral loopback ports.
pub(crate) struct Gateway {
    pub(crate) proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    /// Starts a gateway forwarding to `upstream_base_url`, after `tune` adjusts the config.
    pub(crate) async fn start(upstream_base_url: &str, tune: impl FnOnce(&mut Config)) -> Gateway {
        let mut config = Config::default();
        config.upstream.base_url = upstream_base_url.to_string();
        tune(&mut config);
        let problems = config.validate();
        assert!(problems.is_empty(), "test config invalid: {problems:?}");
        Gateway::spawn(config, None).await
    }

    /// Starts a gateway from a config file, which reloads read again. Listens on
    /// ephemeral loopback ports whatever the file's `[server]` says.
    pub(crate) async fn start_from_file(path: &std::path::Path) -> Gateway {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        Gateway::spawn(config, Some(path.to_path_buf())).await
    }

    async fn spawn(config: Config, path: Option<std::path::PathBuf>) -> Gateway {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = hubgate::Listeners { proxy, admin };
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = match path {
            Some(path) => tokio::spawn(hubgate::run_from_file(path, config, listeners, shutdown)),
            None => tokio::spawn(hubgate::run(config, listeners, shutdown)),
        };
        wait_until_healthy(admin_addr).await;
        Gateway {
            proxy: proxy_addr,
            admin: admin_addr,
            shutdown: Some(tx),
            task,
        }
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.proxy, path_and_query)
    }

    /// Signals shutdown (like SIGTERM) without waiting.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub(crate) async fn metrics(&self) -> String {
        let (status, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Calls answered so far, over every outcome of `hubgate_requests_total`.
    pub(crate) async fn answered(&self) -> f64 {
        metric_sum(&self.metrics().await, "hubgate_requests_total{")
    }

    /// Waits until nothing is left of past calls: no call in flight, no call queued, and
    /// (once the idle sweep ran; tests set a short `budgets.idle_ttl_ms`) no owner lane.
    /// Panics with the last metrics if that takes longer than `within`.
    pub(crate) async fn assert_settles(&self, within: Duration) {
        let started = Instant::now();
        loop {
            let metrics = self.metrics().await;
            let in_flight = metric_value(&metrics, "hubgate_requests_in_flight");
            let queued = metric_sum(&metrics, "hubgate_queue_depth{");
            let owners = metric_value(&metrics, "hubgate_owners_active");
            if in_flight == Some(0.0) && queued == 0.0 && owners == Some(0.0) {
                return;
            }
            assert!(
                started.elapsed() < within,
                "still busy after {within:?}: in flight {in_flight:?}, queued {queued}, owners {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the admin listener answers `/healthz`: by then the gateway has spawned every
/// task it keeps for its life (sweeper, SIGHUP handler), so task counts taken afterwards
/// measure only what calls leave behind.
async fn wait_until_healthy(admin: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(admin).await {
            let request = b"GET /healthz HTTP/1.1\r\nhost: hubgate\r\nconnection: close\r\n\r\n";
            let mut answer = Vec::new();
            if stream.write_all(request).await.is_ok()
                && stream.read_to_end(&mut answer).await.is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway's /healthz did not answer 200 within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Timing-sensitive tests that load the machine (dozens of saturating callers, hundreds of
/// calls a second, several gateways) take turns, across every module of a test binary: on
/// a 2-core machine two of them at once delay each other's sends past the margins they
/// measure. (When each file was a binary of its own, binaries ran one after another and
/// each file had a lock of its own.) Light tests still run beside them.
pub(crate) async fn heavy_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// Tasks alive in this test's runtime (the gateway runs in it too), for leak checks.
pub(crate) fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until at most `baseline + slack` tasks are alive, or panics after `within`.
pub(crate) async fn assert_tasks_return_to(baseline: usize, slack: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let alive = alive_tasks();
        if alive <= baseline + slack {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{alive} tasks alive after {within:?}, expected at most {baseline} + {slack}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one sample's value from Prometheus text, e.g. `hubgate_requests_total{outcome="forwarded"}`.
pub(crate) fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample whose series starts with `prefix`, e.g. `hubgate_queue_depth{`.
pub(crate) fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

pub(crate) type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A programmable upstream on 127.0.0.1:0 (HTTP/1.1 and h2c), serving until the test ends.
pub(crate) async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A plain HTTP/1.1 client (fresh connection pool per call keeps tests independent).
pub(crate) fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) async fn send(request: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(request))
        .await
        .expect("gateway answered within 30 s")
        .expect("request completed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    (parts.status, parts.headers, body)
}

pub(crate) async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

/// A normal call on a new connection succeeds: the gateway keeps serving.
pub(crate) async fn still_serves(gateway: &Gateway) {
    let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK, "the gateway keeps serving");
}

/// Sends raw bytes on a new connection and reads until the peer closes (`true`) or `wait`
/// passes (`false`).
pub(crate) async fn raw_until_closed(
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Sends raw bytes on a new connection and reads until the peer closes or `wait` passes.
pub(crate) async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An upstream that misbehaves at the socket level: each accepted connection is handed to
/// `misbehave` as is, and the connections are counted.
pub(crate) struct RawUpstream {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: Arc<AtomicUsize>,
    /// Everything each connection sent before `misbehave` finished, in arrival order.
    pub(crate) received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Starts a [`RawUpstream`]; `misbehave` returns what it read, which is kept in `received`.
pub(crate) async fn raw_upstream<F, Fut>(misbehave: F) -> RawUpstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let misbehave = Arc::new(misbehave);
    let (count, keep) = (connections.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let (misbehave, keep) = (misbehave.clone(), keep.clone());
            tokio::spawn(async move {
                let bytes = misbehave(stream).await;
                keep.lock().unwrap().push(bytes);
            });
        }
    });
    RawUpstream {
        addr,
        connections,
        received,
    }
}

/// Reads one request head (through the blank line) and returns everything read so far.
pub(crate) async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen
}

/// Closes with a TCP reset (RST) instead of an orderly FIN.
pub(crate) fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Splits a raw HTTP/1.1 response with a Content-Length (or no) body into its parts.
pub(crate) fn parse_response(response: &str) -> (StatusCode, HeaderMap, Bytes) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {response:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    (
        StatusCode::from_u16(status).unwrap(),
        headers,
        Bytes::from(body.to_string()),
    )
}

pub(crate) fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Asserts the HubSpot error shape hubgate promises for its own errors.
pub(crate) fn assert_hubspot_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
    expected: StatusCode,
) -> serde_json::Value {
    assert_eq!(status, expected, "body: {}", String::from_utf8_lossy(body));
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let value = json(body);
    assert_eq!(value["status"], "error");
    assert!(
        value["message"].as_str().is_some_and(|m| m.len() > 20),
        "message explains: {value}"
    );
    assert!(value["category"].is_string());
    let correlation = value["correlationId"].as_str().expect("correlationId");
    assert_eq!(headers["x-request-id"].to_str().unwrap(), correlation);
    value
}
pub(crate) mod echo;
