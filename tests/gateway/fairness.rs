//! Sharing one owner's budget between callers: equal shares whatever their concurrency,
//! priority lanes with a reserve for `high`, and per-caller caps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

const TOKEN: &str = "pat-na1-fair";

/// `limit` calls per `window_ms` for `TOKEN` (app 9 in portal 90). The gateways in front
/// of it keep a 50 ms margin (10 % of a window) or more: on a loaded 2-core machine a send
/// can reach the simulator tens of milliseconds after it left hubgate.
async fn simulator(limit: u32, window_ms: u64) -> Hubspot {
    Hubspot::start(sim_config(&format!(
        "burst_limit = {limit}\nburst_window_ms = {window_ms}\ndaily_limit = 0\n[[tokens]]\ntoken = \"{TOKEN}\"\napp_id = 9\nportal_id = 90\n"
    )))
    .await
}

async fn call(gateway: &Gateway, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap) {
    let mut request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, headers, _) = send(request.body(Full::new(Bytes::new())).unwrap()).await;
    (status, headers)
}

/// Runs `concurrency` closed-loop calls with these headers until `stop`; returns the
/// queue waits (ms) of the calls answered before `stop` (calls still queued then are
/// answered later, when the other callers have stopped, and say nothing about sharing).
fn closed_loop(
    gateway: &Arc<Gateway>,
    concurrency: usize,
    headers: Vec<(&'static str, &'static str)>,
    stop: Instant,
) -> Vec<tokio::task::JoinHandle<Vec<(u64, Instant)>>> {
    (0..concurrency)
        .map(|_| {
            let (gateway, headers) = (gateway.clone(), headers.clone());
            tokio::spawn(async move {
                let mut waits = Vec::new();
                while Instant::now() < stop {
                    let (status, h) = call(&gateway, &headers).await;
                    assert_eq!(status, StatusCode::OK);
                    let now = Instant::now();
                    if now < stop {
                        waits.push((
                            h["x-hubgate-queue-ms"].to_str().unwrap().parse().unwrap(),
                            now,
                        ));
                    }
                }
                waits
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<(u64, Instant)>>>) -> Vec<(u64, Instant)> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_with_one_call_in_flight_gets_as_much_as_one_with_a_hundred() {
    let _turn = heavy_turn().await;
    let sim = simulator(20, 500).await;
    let gateway = Arc::new(
        sim.gateway(|c| {
            // A fifth of the window: 101 callers on a shared 2-core host arrive late by more
            // than 50 ms at times, and this test is about shares, not about the margin.
            c.budgets.burst_margin_ms = 100;
        })
        .await,
    );
    let stop = Instant::now() + Duration::from_secs(5);
    let greedy = closed_loop(
        &gateway,
        100,
        vec![("x-hubgate-caller", "bulk-import")],
        stop,
    );
    let modest = closed_loop(&gateway, 1, vec![("x-hubgate-caller", "ui-sync")], stop);
    // Counted from the second window on: in the first, whoever asked first took it all.
    let steady = |waits: Vec<(u64, Instant)>| {
        waits
            .iter()
            .filter(|(_, at)| *at + Duration::from_millis(4_400) > stop)
            .count()
    };
    let (greedy, modest) = (steady(collect(greedy).await), steady(collect(modest).await));
    let share = modest as f64 / (greedy + modest) as f64;
    println!("fairness: bulk-import (100 in flight) got {greedy}, ui-sync (1 in flight) got {modest}: {:.1} % vs {:.1} %", 100.0 * (1.0 - share), 100.0 * share);
    assert!(
        (0.45..=0.55).contains(&share),
        "ui-sync got {:.1} %",
        100.0 * share
    );
    assert_eq!(sim.stats().totals.rate_limited.ten_secondly_rolling, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_calls_wait_less_than_a_window_while_low_ones_saturate() {
    let _turn = heavy_turn().await;
    let sim = simulator(20, 500).await;
    let gateway = Arc::new(
        sim.gateway(|c| {
            c.budgets.burst_margin_ms = 50;
            c.lanes.high_reserve_percent = 20;
        })
        .await,
    );
    let stop = Instant::now() + Duration::from_secs(5);
    // A steady trickle of high calls (about 3.5 per window, under the 4-slot reserve) that
    // is already flowing when a flood of low calls arrives and saturates the owner.
    let high_answered = Arc::new(AtomicUsize::new(0));
    let high = {
        let (gateway, answered) = (gateway.clone(), high_answered.clone());
        tokio::spawn(async move {
            let mut waits = Vec::new();
            while Instant::now() < stop {
                let (status, headers) = call(
                    &gateway,
                    &[
                        ("x-hubgate-priority", "high"),
                        ("x-hubgate-caller", "checkout"),
                    ],
                )
                .await;
                assert_eq!(status, StatusCode::OK);
                waits.push(
                    headers["x-hubgate-queue-ms"]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
                answered.fetch_add(1, Ordering::SeqCst);
                // The trickle's shape: one high call every 150 ms or so.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            waits
        })
    };
    wait_until("the high trickle flows", Duration::from_secs(2), || async {
        high_answered.load(Ordering::SeqCst) >= 2
    })
    .await;
    let low = closed_loop(
        &gateway,
        60,
        vec![
            ("x-hubgate-priority", "low"),
            ("x-hubgate-caller", "backfill"),
        ],
        stop,
    );
    let mut high_waits = high.await.unwrap();
    let low_waits = collect(low).await;
    high_waits.sort_unstable();
    let p99 = high_waits[(high_waits.len() * 99 / 100).min(high_waits.len() - 1)];
    println!(
        "lanes: {} high calls, p99 queue wait {p99} ms, max {} ms; {} low calls answered",
        high_waits.len(),
        high_waits.last().unwrap(),
        low_waits.len()
    );
    assert!(p99 < 500, "high p99 wait {p99} ms is under one window");
    assert!(
        low_waits.len() > 100,
        "low saturates the rest of the window"
    );
    assert_eq!(sim.stats().totals.rate_limited.ten_secondly_rolling, 0);
}

#[tokio::test]
async fn a_capped_caller_is_refused_beyond_its_rate_and_others_are_not() {
    let sim = simulator(1000, 1000).await;
    let gateway = sim
        .gateway(|c| {
            c.callers = vec![hubgate::config::CallerConfig {
                name: "runaway-job".into(),
                weight: 1,
                max_rps: Some(5),
                key_sha256: None,
                priorities: hubgate::config::default_priorities(),
                portals: Vec::new(),
            }];
        })
        .await;
    let mut capped = 0;
    for _ in 0..20 {
        let (status, headers) = call(&gateway, &[("x-hubgate-caller", "runaway-job")]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            capped += 1;
            assert!(headers.contains_key("retry-after-ms"));
        }
    }
    assert!(capped >= 10, "{capped} of 20 calls over 5/s were refused");
    for _ in 0..20 {
        assert_eq!(
            call(&gateway, &[("x-hubgate-caller", "someone-else")])
                .await
                .0,
            StatusCode::OK
        );
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="rejected_cap"}"#
        ),
        Some(capped as f64)
    );
}

#[tokio::test]
async fn malformed_hubgate_headers_get_a_clear_400() {
    let sim = simulator(100, 1000).await;
    let gateway = sim.gateway(|_| {}).await;
    for (name, value) in [
        ("x-hubgate-priority", "urgent"),
        ("x-hubgate-caller", "has space"),
    ] {
        let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, headers, body) = send(request).await;
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains(name),
            "{error}"
        );
    }
}
