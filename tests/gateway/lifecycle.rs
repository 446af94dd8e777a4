//! Graceful shutdown and the admin endpoints, in process.

use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

#[tokio::test]
async fn shutdown_finishes_in_flight_calls_then_stops() {
    let upstream = upstream(|_| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Response::new(Full::new(Bytes::from_static(b"finished")))
    })
    .await;
    let mut gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.shutdown_grace_ms = 5000
    })
    .await;
    let (status, _, _) = get(&format!("http://{}/readyz", gateway.admin)).await;
    assert_eq!(status, StatusCode::OK);

    let url = gateway.url("/crm/v3/objects/contacts");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gateway.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, _, _) = get(&format!("http://{}/readyz", gateway.admin)).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while draining"
    );
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
    let upstream = upstream(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(Full::new(Bytes::new()))
    })
    .await;
    let mut gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.server.shutdown_grace_ms = 300
    })
    .await;
    let url = gateway.url("/crm/v3/objects/contacts");
    let _stuck = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
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
