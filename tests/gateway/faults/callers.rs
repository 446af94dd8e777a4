//! Callers that misbehave: leaving mid-upload, stalling mid-upload, leaving while queued.
//! Half a body is never passed on as whole, and a call that left spends nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::*;

/// What a call's body came to at the upstream: the bytes, and whether it ended properly.
type Seen = Arc<Mutex<Vec<(u64, bool)>>>;

/// An upstream that counts the calls reaching it and records, for each once its body ended,
/// how many body bytes came and whether the body ended properly.
async fn recording_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Seen) {
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (start, record) = (started.clone(), seen.clone());
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        start.fetch_add(1, Ordering::SeqCst);
        let record = record.clone();
        async move {
            let mut body = request.into_body();
            let mut len = 0u64;
            let complete = loop {
                match body.frame().await {
                    None => break true,
                    Some(Err(_)) => break false,
                    Some(Ok(frame)) => {
                        len += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                }
            };
            record.lock().unwrap().push((len, complete));
            Response::new(Full::new(Bytes::from_static(b"{}")))
        }
    })
    .await;
    (addr, started, seen)
}

#[tokio::test]
async fn a_caller_leaving_mid_upload_never_has_half_a_body_passed_on_as_whole() {
    let (upstream, started, seen) = recording_upstream().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        quick(c);
        // Bodies over 1 KiB stream to the upstream as they arrive instead of being read
        // whole first.
        c.retry.max_body_bytes = 1024;
    })
    .await;
    let tasks_before = alive_tasks();
    let uploads: [(&str, Vec<u8>); 3] = [
        (
            "read whole for replay",
            [
                &b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 900\r\n\r\n"[..],
                &[b'a'; 300],
            ]
            .concat(),
        ),
        (
            "streamed with a length",
            [
                &b"POST /files/v3/files HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"[..],
                &[b'b'; 20_000],
            ]
            .concat(),
        ),
        (
            "streamed in chunks",
            [
                &b"POST /files/v3/files HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                b"1000\r\n",
                &[b'c'; 4096],
                b"\r\n1000\r\n",
                &[b'c'; 4096],
                b"\r\n",
            ]
            .concat(),
        ),
    ];
    for (n, (name, bytes)) in uploads.iter().enumerate() {
        let mut stream = TcpStream::connect(gateway.proxy).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        // The first is read whole before it is sent; the others go as they arrive.
        let upstream_calls = n;
        // Once the gateway is on the body (and has opened the upstream call), leave.
        wait_until(
            &format!("{name}: the call under way"),
            Duration::from_secs(5),
            || async {
                gateway.in_flight().await == 1.0 && started.load(Ordering::SeqCst) == upstream_calls
            },
        )
        .await;
        drop(stream);
        // The gateway is done with the call, and the upstream with what it was sent.
        wait_until(
            &format!("{name}: the call ends"),
            Duration::from_secs(5),
            || async {
                gateway.in_flight().await == 0.0 && seen.lock().unwrap().len() == upstream_calls
            },
        )
        .await;
        let complete: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c)
            .copied()
            .collect();
        assert!(
            complete.is_empty(),
            "{name}: the upstream got a cut body as whole: {complete:?}"
        );
    }
    gateway.assert_settles(Duration::from_secs(5)).await;
    let metrics = gateway.metrics().await;
    // A broken upload is the caller's doing: never counted against the upstream.
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="upstream_error"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(gateway.answered().await, uploads.len() as f64);
    assert_tasks_return_to(tasks_before, 2, Duration::from_secs(5)).await;
    // A whole upload still goes through.
    let request = Request::post(gateway.url("/files/v3/files"))
        .body(Full::new(Bytes::from(vec![b'd'; 5000])))
        .unwrap();
    assert_eq!(send(request).await.0, StatusCode::OK);
    assert!(seen.lock().unwrap().contains(&(5000, true)));
}

#[tokio::test]
async fn a_caller_stalling_mid_upload_gets_408_at_the_body_idle_timeout() {
    let (upstream, _, seen) = recording_upstream().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        quick(c);
        c.server.body_idle_timeout_ms = 400;
    })
    .await;
    let started = Instant::now();
    let response = raw(
        gateway.proxy,
        b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"half\":",
        Duration::from_secs(10),
    )
    .await;
    let waited = started.elapsed();
    let (status, headers, body) = parse_response(&response);
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::REQUEST_TIMEOUT);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("body_idle_timeout_ms"),
        "{error}"
    );
    assert!(waited < Duration::from_millis(400 + 1_500), "{waited:?}");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent upstream");
    recovers(&gateway, 1.0).await;
}

#[tokio::test]
async fn a_caller_leaving_while_queued_frees_its_place_and_is_never_sent() {
    let (upstream, _, seen) = recording_upstream().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        quick(c);
        c.budgets.anonymous_limit = 1;
        c.budgets.anonymous_window_ms = 1_500;
    })
    .await;
    let tasks_before = alive_tasks();
    // The window's one slot goes to the first call; the second must wait for it.
    assert_eq!(get(&gateway.url(LIST)).await.0, StatusCode::OK);
    let mut queued = TcpStream::connect(gateway.proxy).await.unwrap();
    queued
        .write_all(b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    gateway
        .wait_for_queue_depth(1.0, Duration::from_secs(1))
        .await;
    drop(queued);
    // Its place is freed at once, long before its slot would come.
    wait_for("left the queue", Duration::from_millis(800), || async {
        let metrics = gateway.metrics().await;
        if metric_sum(&metrics, "hubgate_queue_depth{") == 0.0
            && metric_value(&metrics, "hubgate_requests_in_flight") == Some(0.0)
        {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="caller_gone"}"#),
        Some(1.0)
    );
    // Past the window, its slot would have come: still only the first call arrived. (A
    // wait for nothing to happen: the window is the only thing to wait for.)
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the abandoned call was never sent"
    );
    assert_eq!(gateway.answered().await, 2.0);
    gateway.assert_settles(Duration::from_secs(5)).await;
    assert_tasks_return_to(tasks_before, 2, Duration::from_secs(5)).await;
    assert_eq!(get(&gateway.url(LIST)).await.0, StatusCode::OK);
}
