//! The upstream connection pool forwarded calls go out on: HTTP/1.1 keep-alive connections
//! are reused, whatever their answer's body, an idle connection the upstream closed is no
//! failed call, and idle connections close after `[upstream] pool_idle_timeout_ms`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An HTTP/1.1 upstream that counts the connections it accepted and those that ended.
/// Each connection serves until the gateway closes it, or for `close_after` when given.
struct CountingUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start(close_after: Option<Duration>) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (accepted_count, ended_count) = (accepted.clone(), ended.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted_count.fetch_add(1, Ordering::SeqCst);
                let ended = ended_count.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|request: Request<_>| async move {
                        let answer = match request.uri().path() {
                            "/empty" => Response::builder()
                                .status(StatusCode::NO_CONTENT)
                                .body(Full::new(Bytes::new())),
                            _ => Response::builder().body(Full::new(Bytes::from_static(
                                b"{\"results\":[{\"id\":\"1\"}]}",
                            ))),
                        };
                        Ok::<_, Infallible>(answer.unwrap())
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    match close_after {
                        // Dropped, the connection closes as an upstream's idle timer does.
                        Some(after) => {
                            let _ = tokio::time::timeout(after, connection).await;
                        }
                        None => {
                            let _ = connection.await;
                        }
                    }
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        CountingUpstream {
            addr,
            accepted,
            ended,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn sequential_calls_go_out_on_one_keep_alive_connection() {
    let upstream = CountingUpstream::start(None).await;
    // One worker thread, so one pool: each worker keeps connections of its own.
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        c.server.workers = hubgate::config::Workers::Count(1)
    })
    .await;
    for i in 0..30 {
        // A body read to its end, no body at all (204), and a HEAD answer, in turn.
        let (method, path) = match i % 3 {
            0 => (Method::GET, "/crm/v3/objects/contacts"),
            1 => (Method::GET, "/empty"),
            _ => (Method::HEAD, "/crm/v3/objects/contacts"),
        };
        let request = Request::builder()
            .method(method)
            .uri(gateway.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, _) = send(request).await;
        assert!(status.is_success(), "call {i}: {status}");
    }
    eprintln!(
        "30 sequential calls: {} upstream connections",
        upstream.accepted()
    );
    assert_eq!(
        upstream.accepted(),
        1,
        "every call reused the first connection"
    );
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_a_failed_call() {
    // The upstream drops each connection 100 ms after accepting it; the calls come 300 ms
    // apart, so each finds its pooled connection closed.
    let upstream = CountingUpstream::start(Some(Duration::from_millis(100))).await;
    // Not hubgate's retries (of a call that failed) but the pool's own: the call never
    // failed.
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        c.retry.max_retries = 0
    })
    .await;
    for i in 0..5 {
        let (status, _, body) = get(&gateway.url("/crm/v3/objects/contacts")).await;
        assert_eq!(status, StatusCode::OK, "call {i}: {body:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(upstream.accepted(), 5, "a new connection for each call");
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_pool_idle_timeout() {
    let upstream = CountingUpstream::start(None).await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        c.upstream.pool_idle_timeout_ms = 300
    })
    .await;
    let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK);
    // Without another call: the pool's own sweep closes it.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while upstream.ended() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was closed");
    // A later call opens a new one.
    let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream.accepted(), 2);
}

#[tokio::test]
async fn no_more_idle_connections_are_kept_than_pool_max_idle_per_host() {
    let upstream = CountingUpstream::start(None).await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        c.upstream.pool_max_idle_per_host = 0
    })
    .await;
    for _ in 0..3 {
        let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(upstream.accepted(), 3, "no connection was kept idle");
    let ended = upstream.ended.clone();
    wait_until(
        "each connection closed after its call",
        Duration::from_secs(5),
        || {
            let ended = ended.clone();
            async move { ended.load(Ordering::SeqCst) == 3 }
        },
    )
    .await;
}
