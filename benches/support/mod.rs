//! What the end-to-end benches share: they run only under `cargo bench`, on a
//! multi-threaded runtime, and call through one pooled HTTP client.

use std::future::Future;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client that keeps enough idle connections for every closed-loop caller.
pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http()
}

/// Starts hubgate with `config` in this process on loopback ports of its own (proxy and
/// admin); its proxy's base URL. It runs until the bench ends.
pub(crate) async fn start_gateway(config: hubgate::Config) -> String {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", proxy.local_addr().unwrap());
    tokio::spawn(hubgate::run(
        config,
        hubgate::Listeners { proxy, admin },
        std::future::pending(),
    ));
    base
}

/// One contacts page with `token`; the status, or 502 when no answer came.
pub(crate) async fn get(client: &HttpClient, base: &str, token: &str) -> StatusCode {
    get_as(client, base, token, None).await
}

/// [`get`] naming the caller with `X-Hubgate-Caller` when `caller` is given.
pub(crate) async fn get_as(
    client: &HttpClient,
    base: &str,
    token: &str,
    caller: Option<&str>,
) -> StatusCode {
    let mut request = Request::get(format!("{base}/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {token}"));
    if let Some(caller) = caller {
        request = request.header("x-hubgate-caller", caller);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    match client.request(request).await {
        Ok(response) => {
            let status = response.status();
            let _ = response.into_body().collect().await;
            status
        }
        Err(error) => {
            // Said here: the status alone would not tell a call no one answered from a 502.
            eprintln!("a call to {base} got no answer: {error:?}");
            StatusCode::BAD_GATEWAY
        }
    }
}

/// Runs `work` when started by `cargo bench` (which passes `--bench`); anything else, such
/// as `cargo test --all-targets`, gets a pointer instead of a run of a minute or more.
pub(crate) fn run_under_cargo_bench(name: &str, duration: &str, work: impl Future<Output = ()>) {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benches/{name}.rs measures for {duration}: run it with `cargo bench --bench {name}`"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(work);
}
