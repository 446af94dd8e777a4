//! An upstream that names absurd waits, and a Redis that is slow, full or holds garbage at
//! one owner's key: the call still gets one answer, a slow Redis costs about as long as it
//! was slow, recovery is judged by the real script, and one bad key degrades one owner.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};

/// `Retry-After` values no real server sends: the largest delay-seconds, a date in year
/// 9999, and a number past `u64`.
const ABSURD_RETRY_AFTER: [&str; 3] = [
    "18446744073709551615",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "99999999999999999999999",
];

fn answer_with(status: u16, retry_after: &str) -> Response<Full<Bytes>> {
    let body = if status == 429 {
        r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#
    } else {
        r#"{"status":"error","message":"try later"}"#
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("retry-after", retry_after)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn an_upstream_retry_after_of_u64_max_seconds_is_clamped_and_the_call_is_answered() {
    // `/x/<status>/<n>` answers `status` with the n-th absurd Retry-After; any other path 200.
    let addr = upstream(|request: Request<hyper::body::Incoming>| async move {
        let path = request.uri().path().to_string();
        let Some(asked) = path.strip_prefix("/x/") else {
            return Response::new(Full::new(Bytes::from_static(br#"{"results":[]}"#)));
        };
        let mut parts = asked.splitn(2, '/');
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let which: usize = parts.next().unwrap().parse().unwrap();
        // Slow to answer: past a second, the call's elapsed time has whole seconds to carry.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        answer_with(status, ABSURD_RETRY_AFTER[which])
    })
    .await;
    let gateway = Gateway::start(&format!("http://{addr}"), |c| {
        c.retry.base_delay_ms = 10;
        c.retry.max_delay_ms = 50;
    })
    .await;
    // Every status with every value at once: nine calls, one answer each.
    let mut calls = Vec::new();
    for status in [429u16, 423, 503] {
        for (which, value) in ABSURD_RETRY_AFTER.iter().enumerate() {
            let url = gateway.url(&format!("/x/{status}/{which}"));
            calls.push(tokio::spawn(async move {
                let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
                let what = format!("{status} with Retry-After {value}");
                let reply =
                    tokio::time::timeout(Duration::from_secs(10), client().request(request))
                        .await
                        .map_err(|_| format!("{what}: no answer within 10 s"))?;
                let response = reply.map_err(|e| format!("{what}: {e}"))?;
                let (parts, body) = response.into_parts();
                let _ = body.collect().await;
                // Passed through as HubSpot answered, not waited on for ever.
                let skipped = parts.headers.get("x-hubgate-retry-skipped");
                let skipped = skipped.and_then(|v| v.to_str().ok()).unwrap_or("");
                if parts.status.as_u16() != status || !skipped.starts_with("deadline") {
                    return Err(format!("{what}: answered {} ({skipped})", parts.status));
                }
                Ok::<(), String>(())
            }));
        }
    }
    let asked = calls.len();
    let mut failures = Vec::new();
    for call in calls {
        if let Err(failure) = call.await.unwrap() {
            failures.push(failure);
        }
    }
    let answered = asked - failures.len();
    println!("absurd Retry-After: {answered} of {asked} calls answered; failed: {failures:?}");
    assert_eq!(answered, asked, "every call gets an answer: {failures:?}");
    still_serves(&gateway).await;
}
