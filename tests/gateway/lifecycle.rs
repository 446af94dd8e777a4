//! Graceful shutdown and the admin endpoints, in process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

/// An upstream that answers `body` after `delay` (the slow call the shutdown waits for),
/// counting the calls that reached it.
async fn slow_upstream(delay: Duration, body: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let count = arrived.clone();
    let addr = upstream(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            // The slow call under test.
            tokio::time::sleep(delay).await;
            Response::new(Full::new(Bytes::from_static(body)))
        }
    })
    .await;
    (addr, arrived)
}

async fn readyz(gateway: &Gateway) -> StatusCode {
    get(&gateway.admin_url("/readyz")).await.0
}

#[tokio::test]
async fn shutdown_finishes_in_flight_calls_then_stops() {
    let (upstream, arrived) = slow_upstream(Duration::from_millis(800), b"finished").await;
    let mut gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.drain_ms = 0;
        c.server.shutdown_grace_ms = 5000
    })
    .await;
    assert_eq!(readyz(&gateway).await, StatusCode::OK);

    let url = gateway.url("/crm/v3/objects/contacts");
    let in_flight = tokio::spawn(async move { get(&url).await });
    wait_until(
        "the call is at the upstream",
        Duration::from_secs(5),
        || async { arrived.load(Ordering::SeqCst) == 1 },
    )
    .await;
    gateway.begin_shutdown();

    // Without a drain the gateway stops being ready when it stops accepting, in one step
    // (the drain itself: tests/gateway/connections/shutdown.rs).
    wait_until("/readyz answers 503", Duration::from_secs(5), || async {
        readyz(&gateway).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(!in_flight.is_finished(), "not ready while draining");
    assert!(
        tokio::net::TcpStream::connect(gateway.proxy).await.is_err(),
        "no new connections once shutdown began"
    );

    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"finished");
    let finished = tokio::time::timeout(Duration::from_secs(5), gateway.task)
        .await
        .expect("run() returns after draining");
    finished.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    // A call that outlasts any grace period.
    let (upstream, arrived) = slow_upstream(Duration::from_secs(30), b"").await;
    let mut gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.drain_ms = 0;
        c.server.shutdown_grace_ms = 300
    })
    .await;
    let url = gateway.url("/crm/v3/objects/contacts");
    let _stuck = tokio::spawn(async move { get(&url).await });
    wait_until(
        "the call is at the upstream",
        Duration::from_secs(5),
        || async { arrived.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let started = Instant::now();
    gateway.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), gateway.task)
        .await
        .expect("run() returns once the grace period is over")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn admin_endpoints_answer_and_unknown_paths_get_json_404() {
    let upstream = crate::support::echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let (status, _, body) = get(&format!("http://{}/healthz", gateway.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["status"], "ok");
    let (status, headers, body) = get(&format!("http://{}/metrics", gateway.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("# TYPE hubgate_requests_total counter"));
    assert!(text.contains("# TYPE hubgate_upstream_duration_seconds histogram"));
    let (status, _, body) = get(&format!("http://{}/admin/nothing", gateway.admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["status"], "error");
    // The admin port is not a proxy: API paths are not forwarded from it.
    let (status, _, _) = get(&format!("http://{}/crm/v3/objects/contacts", gateway.admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
