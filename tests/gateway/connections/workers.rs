//! `[server] workers`: caller connections are served in turn on that many threads of
//! their own, and every call on them is forwarded and answered.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::hubgate_with;
use crate::support::*;

/// CPU time (ns) each of `pid`'s worker threads has run, by thread name.
fn worker_cpu(pid: u32) -> BTreeMap<String, u64> {
    let mut workers = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let name = name.trim();
        if !name.starts_with("hubgate-w") {
            continue;
        }
        let ran = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        let ran = ran.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
        workers.insert(name.to_string(), ran);
    }
    workers
}

#[tokio::test]
async fn connections_are_served_in_turn_on_the_configured_worker_threads() {
    let upstream =
        upstream(|_| async { Response::new(Full::new(Bytes::from_static(br#"{"results":[]}"#))) })
            .await;
    let (gateway, _config) = hubgate_with(
        &format!("http://{upstream}"),
        "workers = 3",
        "[[credentials]]\ntoken = \"pat-na1-workers\"\napp_id = 1\nportal_id = 2\n",
    );
    let before = worker_cpu(gateway.pid());
    let names: Vec<&str> = before.keys().map(String::as_str).collect();
    assert_eq!(names, ["hubgate-w0", "hubgate-w1", "hubgate-w2"]);

    // Each call on a connection of its own: 10 connections for each worker in turn.
    let calls = (0..30).map(|_| {
        let url = gateway.url("/crm/v3/objects/contacts");
        async move {
            send(
                http::Request::get(url)
                    .header("authorization", "Bearer pat-na1-workers")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
        }
    });
    for (status, headers, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert_eq!(headers["x-hubgate-owner"], "1:2");
        assert_eq!(&body[..], br#"{"results":[]}"#);
    }
    let after = worker_cpu(gateway.pid());
    for (name, ran) in &after {
        assert!(
            *ran > before[name],
            "{name} served none of the 30 connections: {before:?} then {after:?}"
        );
    }
}
