//! SIGTERM with calls queued behind a budget: the gateway drains (unready, still
//! accepting), sends only what can be answered before the grace ends, answers the rest 503
//! with nothing sent, and lets every sent call finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::hubgate_with;

const CALLS: usize = 40;

/// A HubSpot stand-in that creates a record from each body as it arrives (as HubSpot
/// does, whether or not the answer makes it back), then answers 201 after `latency`.
async fn records_upstream(latency: Duration) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = created.clone();
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        let kept = kept.clone();
        async move {
            let creates = request.uri().path() == "/crm/v3/objects/contacts";
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if creates {
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            // HubSpot's processing and the way back.
            tokio::time::sleep(latency).await;
            Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap()
        }
    })
    .await;
    (addr, created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_queued_posts_answers_each_caller_once_and_creates_nothing_unseen() {
    let _turn = heavy_turn().await;
    let (upstream, created) = records_upstream(Duration::from_millis(300)).await;
    // 5 calls per 500 ms: the 40 POSTs leave about one per 100 ms, so whenever the grace
    // ends some are on their way.
    let (gateway, _config) = hubgate_with(
        &format!("http://{upstream}"),
        "drain_ms = 500\nshutdown_grace_ms = 1500",
        "response_timeout_ms = 1000\n[budgets]\nburst_limit = 5\nburst_window_ms = 500\nburst_margin_ms = 20\n[queue]\nmax_wait_ms = 30000\nmax_depth_per_owner = 100\n[[credentials]]\ntoken = \"pat-na1-shutdown\"\napp_id = 1\nportal_id = 10\n",
    );
    let mut calls = Vec::new();
    for n in 0..CALLS {
        let url = gateway.url("/crm/v3/objects/contacts");
        calls.push(tokio::spawn(async move {
            let body = format!(r#"{{"properties":{{"email":"caller-{n}@example.com"}}}}"#);
            let request = Request::post(url)
                .header("authorization", "Bearer pat-na1-shutdown")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap();
            let answer =
                tokio::time::timeout(Duration::from_secs(30), client().request(request)).await;
            let answer = match answer {
                Err(_) => Err("no answer within 30 s".to_string()),
                Ok(Err(e)) => Err(format!("{e:?}")),
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    match body.collect().await {
                        Ok(bytes) => Ok((parts.status, parts.headers, bytes.to_bytes())),
                        Err(e) => Err(format!("body: {e:?}")),
                    }
                }
            };
            (body, answer)
        }));
        // Arrivals spread out, so sends do not leave in whole windows at once.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until(
        "most calls are queued behind the budget",
        Duration::from_secs(10),
        || async { metric_sum(&scrape(gateway.admin).await, "hubgate_queue_depth{") >= 25.0 },
    )
    .await;
    let admin = gateway.admin;
    let proxy = gateway.proxy;
    let terminated = tokio::spawn(gateway.terminate());
    // Within the drain the gateway is unready but still accepts.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let readyz = tokio::time::timeout(
        Duration::from_secs(2),
        get(&format!("http://{admin}/readyz")),
    )
    .await;
    let accepts = tokio::net::TcpStream::connect(proxy).await.is_ok();
    let (exit, logs) = terminated.await.unwrap();

    let created = created.lock().unwrap().clone();
    let mut times_created: HashMap<&str, usize> = HashMap::new();
    for body in &created {
        *times_created.entry(body.as_str()).or_default() += 1;
    }
    let (mut ok, mut refused, mut errors, mut unseen) = (0, 0, Vec::new(), Vec::new());
    for call in calls {
        let (body, answer) = call.await.unwrap();
        let made = times_created.get(body.as_str()).copied().unwrap_or(0);
        match answer {
            Ok((status, _, _)) if status == StatusCode::CREATED => ok += 1,
            Ok((status, headers, answer)) => {
                let error = assert_hubspot_error(
                    status,
                    &headers,
                    &answer,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
                assert_eq!(headers["x-should-retry"], "true", "{error}");
                assert!(headers.contains_key("retry-after"), "{error}");
                refused += 1;
                if made > 0 {
                    unseen.push(body);
                }
            }
            Err(e) => {
                errors.push(e);
                if made > 0 {
                    unseen.push(body);
                }
            }
        }
    }
    let twice = times_created.values().filter(|&&n| n > 1).count();
    eprintln!(
        "SIGTERM with {CALLS} POSTs: 201 {ok}, 503 {refused}, no answer {} {:?}; created {} ({twice} twice), created but the caller saw an error: {}; /readyz in drain {:?}, accepting in drain {accepts}",
        errors.len(),
        errors.first(),
        created.len(),
        unseen.len(),
        readyz.as_ref().map(|r| r.0)
    );
    assert!(exit.success(), "{exit}: {logs}");
    assert!(errors.is_empty(), "every caller gets an answer: {errors:?}");
    assert!(
        unseen.is_empty(),
        "records created whose caller saw an error: {unseen:?}"
    );
    assert_eq!(twice, 0, "no body reaches the upstream twice");
    assert_eq!(ok, created.len(), "each record created was answered 201");
    assert!(
        refused > 0,
        "calls that could not be answered in time were refused"
    );
    assert_eq!(readyz.unwrap().0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(accepts, "the listener still accepts during the drain");
}
