//! When HubSpot says no: classified 429 retries, header feedback against another client
//! spending the same budget, and the failures that are (and are not) sent again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

/// An upstream that answers call `n` (0-based) with `script(n, path)` and records when
/// each call arrived.
struct Scripted {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

async fn scripted(
    script: impl Fn(usize, &str) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> Scripted {
    let calls = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let (c, a) = (calls.clone(), arrivals.clone());
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        let (c, a, script) = (c.clone(), a.clone(), script.clone());
        async move {
            let path = request.uri().path().to_string();
            let _ = request.into_body().collect().await;
            a.lock().unwrap().push(Instant::now());
            let n = c.fetch_add(1, Ordering::SeqCst);
            script(n, &path)
        }
    })
    .await;
    Scripted {
        addr,
        calls,
        arrivals,
    }
}

fn hubspot_429(policy: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        r#"{{"status":"error","message":"{message}","errorType":"RATE_LIMIT","correlationId":"c-1","policyName":"{policy}","groupName":"publicapi:x:1"}}"#
    );
    Response::builder()
        .status(429)
        .header("content-type", "application/json;charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn ok() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(br#"{"results":[]}"#)))
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn gateway_for(upstream: &Scripted, tune: impl FnOnce(&mut hubgate::Config)) -> Gateway {
    Gateway::start(&format!("http://{}", upstream.addr), |c| {
        c.budgets.burst_window_ms = 200;
        c.budgets.burst_margin_ms = 5;
        c.budgets.search_window_ms = 200;
        c.budgets.search_margin_ms = 5;
        c.retry.base_delay_ms = 10;
        c.retry.max_delay_ms = 50;
        c.retry.locked_delay_ms = 300;
        tune(c)
    })
    .await
}

async fn call(
    gateway: &Gateway,
    method: &str,
    path: &str,
    body: Bytes,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(gateway.url(path))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    send(request).await
}

#[tokio::test]
async fn rate_limit_429s_of_every_policy_but_daily_are_retried_and_counted() {
    for (policy, path) in [
        ("TEN_SECONDLY_ROLLING", "/crm/v3/objects/contacts"),
        ("SECONDLY", "/crm/v3/objects/contacts/search"),
        ("SOMETHING_NEW", "/crm/v3/objects/contacts"),
    ] {
        let upstream = scripted(move |n, _| {
            if n == 0 {
                hubspot_429(policy, "You have reached your limit.")
            } else {
                ok()
            }
        })
        .await;
        let gateway = gateway_for(&upstream, |_| {}).await;
        let (status, headers, _) = call(&gateway, "POST", path, Bytes::from_static(b"{}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{policy}: the caller never sees the transient 429"
        );
        assert_eq!(headers["x-hubgate-retries"], "1", "{policy}");
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 2, "{policy}");
        let metrics = gateway.metrics().await;
        let label = if policy == "SOMETHING_NEW" {
            "UNKNOWN"
        } else {
            policy
        };
        assert_eq!(
            metric_value(
                &metrics,
                &format!(
                    r#"hubgate_upstream_rate_limited_total{{app_id="anonymous",policy="{label}",portal_id="anonymous"}}"#
                )
            ),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            metric_value(&metrics, r#"hubgate_retries_total{reason="rate_limited"}"#),
            Some(1.0)
        );
    }
}

#[tokio::test]
async fn a_daily_429_is_answered_by_hubgate_and_stops_further_calls() {
    let upstream =
        scripted(|_, _| hubspot_429("DAILY", "You have reached your daily limit.")).await;
    let gateway = gateway_for(&upstream, |c| {
        c.credentials = vec![hubgate::config::StaticCredential {
            token: Some("pat-na1-known".into()),
            token_sha256: None,
            app_id: 5,
            portal_id: 50,
        }];
    })
    .await;
    let get = || {
        Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header("authorization", "Bearer pat-na1-known")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for _ in 0..3 {
        let (status, headers, body) = send(get()).await;
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error["policyName"], "DAILY");
        assert!(headers.contains_key("retry-after"));
    }
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        1,
        "after HubSpot said DAILY, hubgate answers itself"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let upstream = scripted(|n, _| {
        if n == 0 {
            let mut response = hubspot_429(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            );
            response
                .headers_mut()
                .insert("retry-after", "1".parse().unwrap());
            response
        } else {
            ok()
        }
    })
    .await;
    let gateway = gateway_for(&upstream, |_| {}).await;
    let (status, _, _) = call(&gateway, "GET", "/crm/v3/objects/contacts", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    let arrivals = upstream.arrivals.lock().unwrap().clone();
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "{:?}",
        arrivals[1] - arrivals[0]
    );
}

#[tokio::test]
async fn locked_is_retried_after_the_locked_delay() {
    let upstream = scripted(|n, _| if n == 0 { status(423) } else { ok() }).await;
    let gateway = gateway_for(&upstream, |_| {}).await;
    let (status, headers, _) = call(
        &gateway,
        "PATCH",
        "/crm/v3/objects/contacts/1",
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-hubgate-retries"], "1");
    let arrivals = upstream.arrivals.lock().unwrap().clone();
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_post_is_not_sent_again_after_a_502_but_a_get_is() {
    // The POST always fails; the GET (call 1) fails once, then succeeds.
    let upstream = scripted(|n, path| {
        if path.ends_with("/post") || n == 1 {
            status(502)
        } else {
            ok()
        }
    })
    .await;
    let gateway = gateway_for(&upstream, |_| {}).await;
    let (status_code, headers, _) = call(
        &gateway,
        "POST",
        "/crm/v3/objects/post",
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(status_code, StatusCode::BAD_GATEWAY);
    assert!(headers["x-hubgate-retry-skipped"]
        .to_str()
        .unwrap()
        .starts_with("not-idempotent"));
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        1,
        "the POST went once"
    );
    let (status_code, headers, _) =
        call(&gateway, "GET", "/crm/v3/objects/get", Bytes::new()).await;
    assert_eq!(status_code, StatusCode::OK);
    assert_eq!(headers["x-hubgate-retries"], "1");
}

#[tokio::test]
async fn a_five_mib_body_is_not_retried() {
    let upstream = scripted(|_, _| {
        hubspot_429(
            "TEN_SECONDLY_ROLLING",
            "You have reached your ten_secondly_rolling limit.",
        )
    })
    .await;
    let gateway = gateway_for(&upstream, |_| {}).await;
    let big = Bytes::from(vec![b'x'; 5 * 1024 * 1024]);
    let (status, headers, body) = call(&gateway, "POST", "/files/v3/files", big).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        json(&body)["policyName"],
        "TEN_SECONDLY_ROLLING",
        "HubSpot's own 429 is passed on"
    );
    assert!(headers["x-hubgate-retry-skipped"]
        .to_str()
        .unwrap()
        .starts_with("body-too-large"));
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_retry_budget_caps_a_429_storm() {
    let _turn = heavy_turn().await;
    let upstream = scripted(|_, _| hubspot_429("SOMETHING_NEW", "busy")).await;
    let gateway = Arc::new(
        gateway_for(&upstream, |c| {
            c.budgets.anonymous_limit = 1000;
            c.retry.budget_percent = 10;
            c.retry.budget_min_per_second = 1;
            c.retry.max_retries = 10;
        })
        .await,
    );
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                call(&gateway, "GET", "/crm/v3/objects/contacts", Bytes::new()).await
            })
        })
        .collect();
    let mut budget_skips = 0;
    for c in calls {
        let (status, headers, _) = c.await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        if headers
            .get("x-hubgate-retry-skipped")
            .is_some_and(|v| v.to_str().unwrap().starts_with("retry-budget"))
        {
            budget_skips += 1;
        }
    }
    let sent = upstream.calls.load(Ordering::SeqCst);
    // tower's budget: 1 retry per second over its 10 s memory, plus 10 % of 100 first tries.
    println!("storm: 100 calls caused {sent} upstream calls; {budget_skips} callers were told the retry budget was spent");
    assert!(
        sent <= 100 + 10 + 10 + 5,
        "retries stayed within the budget: {sent}"
    );
    assert!(budget_skips >= 70, "{budget_skips}");
}

#[tokio::test]
async fn a_connection_refused_is_retried_for_any_method() {
    // Refuses connections until it listens, and no one else can take the port meanwhile.
    let port = ClosedPort::new();
    let gateway = Gateway::start(&port.url(), |c| {
        c.retry.base_delay_ms = 200;
        c.retry.max_delay_ms = 400;
        c.retry.max_retries = 10;
    })
    .await;
    let url = gateway.url("/crm/v3/objects/contacts");
    let pending = tokio::spawn(async move {
        send(
            Request::post(url)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await
    });
    wait_until(
        "a refused attempt is retried",
        Duration::from_secs(5),
        || async { metric_sum(&gateway.metrics().await, "hubgate_retries_total{") >= 1.0 },
    )
    .await;
    // The upstream comes up while the POST is being retried: nothing was sent before.
    let listener = port.listen();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service =
            hyper::service::service_fn(|_| async { Ok::<_, std::convert::Infallible>(ok()) });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
    let (status, headers, _) = pending.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let retries: u32 = headers["x-hubgate-retries"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries >= 1);
}

/// Another client spends 30 % of the owner's window while 20 callers saturate it through
/// hubgate: the callers see no error, and HubSpot's 429s stay under 2 % of hubgate's sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_stealing_budget_costs_callers_nothing() {
    const LIMIT: u64 = 20;
    const WINDOW_MS: u64 = 250;
    let _turn = heavy_turn().await;
    let sim = Hubspot::start(sim_config(&format!(
        "burst_limit = {LIMIT}\nburst_window_ms = {WINDOW_MS}\ndaily_limit = 0\n[[tokens]]\ntoken = \"pat-na1-steal\"\napp_id = 7\nportal_id = 70\n"
    )))
    .await;
    sim.set_outside_consumer(7, 70, 6);
    // The other client is spending already: a window's worth of its calls arrived.
    wait_until(
        "the other client's calls",
        Duration::from_secs(5),
        || async { sim.stats().owner(7, 70).is_some_and(|o| o.outside >= 6) },
    )
    .await;
    let gateway = Arc::new(
        sim.gateway(|c| {
            c.budgets.burst_margin_ms = 20;
            // One slot of slack: the other client's calls arrive on a busy machine's timers,
            // so one window now and then holds one more of them than the last.
            c.budgets.margin_slots = 1;
        })
        .await,
    );
    let started = Instant::now();
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while started.elapsed() < Duration::from_secs(10) {
                    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
                        .header("authorization", "Bearer pat-na1-steal")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    statuses.push(send(request).await.0);
                }
                statuses
            })
        })
        .collect();
    let mut answered = 0;
    for c in callers {
        for status in c.await.unwrap() {
            assert_eq!(status, StatusCode::OK, "callers see no error");
            answered += 1;
        }
    }
    sim.set_outside_consumer(7, 70, 0);
    let stats = sim.stats();
    let owner = stats.owner(7, 70).unwrap();
    let ours = owner.arrivals - owner.outside;
    let rejected = owner.rate_limited.ten_secondly_rolling;
    let windows = started.elapsed().as_millis() as u64 / WINDOW_MS;
    let left = LIMIT - 1 - 6;
    println!(
        "steal: {answered} calls answered 200; hubgate sent {ours}, HubSpot refused {rejected} ({:.2} %); the other client sent {}; hubgate used {:.1} % of the {} slots per window left to it",
        100.0 * rejected as f64 / ours as f64,
        owner.outside,
        100.0 * (ours - rejected) as f64 / (left * windows) as f64,
        left,
    );
    assert!(rejected * 100 < ours * 2, "429s {rejected} of {ours} sends");
}
