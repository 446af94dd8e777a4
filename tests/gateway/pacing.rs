//! Budgets through real sockets: callers behind hubgate in front of the simulator, which
//! enforces HubSpot's limits and reports every 429 and the busiest window it saw.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hubgate::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Tokens of the test portal world: two apps in portal 10, the first app also in portal 20.
const SIM_TOKENS: &str = r#"
[[tokens]]
token = "pat-na1-app1-portal10"
app_id = 1
portal_id = 10
[[tokens]]
token = "pat-na1-app2-portal10"
app_id = 2
portal_id = 10
[[tokens]]
token = "pat-na1-app1-portal20"
app_id = 1
portal_id = 20
"#;
const APP1_P10: &str = "pat-na1-app1-portal10";
const APP2_P10: &str = "pat-na1-app2-portal10";
const APP1_P20: &str = "pat-na1-app1-portal20";

/// The simulator with `limits` and the test portal world, and a gateway in front of it
/// whose budgets mirror the simulator's, then `tune`. The margins cover how late a send may
/// reach the simulator on a busy 2-core machine (tests run in parallel): 5 % of a window.
async fn world(limits: &str, tune: impl FnOnce(&mut Config)) -> (Hubspot, Gateway) {
    sim_and_gateway(sim_config(&format!("{limits}\n{SIM_TOKENS}")), |c| {
        c.budgets.burst_margin_ms = 50;
        c.budgets.search_margin_ms = 25;
        tune(c)
    })
    .await
}

async fn call(
    gateway: &Gateway,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::builder()
        .method(method)
        .uri(gateway.url(path))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let body = if method == "POST" {
        Bytes::from_static(b"{}")
    } else {
        Bytes::new()
    };
    send(request.body(Full::new(body)).unwrap()).await
}

fn queue_ms(headers: &http::HeaderMap) -> u64 {
    headers["x-hubgate-queue-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_saturating_one_owner_see_only_200s_and_hubspot_sees_no_429() {
    let _turn = heavy_turn().await;
    const LIMIT: u64 = 20;
    const WINDOW: Duration = Duration::from_millis(1000);
    // Counted over 3.5 windows: every window the pacer wastes shows up as a missing burst.
    const MEASURED: Duration = Duration::from_millis(3500);
    let (sim, gateway) = world(
        "burst_limit = 20\nburst_window_ms = 1000\ndaily_limit = 0",
        |_| {},
    )
    .await;
    let gateway = Arc::new(gateway);
    let started = Instant::now();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < MEASURED {
                    let (status, _, _) =
                        call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[]).await;
                    seen.push((status, started.elapsed()));
                }
                seen
            })
        })
        .collect();
    let mut responses = Vec::new();
    for caller in callers {
        responses.extend(caller.await.unwrap());
    }
    let non_200: Vec<_> = responses
        .iter()
        .filter(|(s, _)| *s != StatusCode::OK)
        .collect();
    assert!(non_200.is_empty(), "callers saw {non_200:?}");
    let first = responses.iter().map(|(_, t)| *t).min().unwrap();
    let in_measured = responses
        .iter()
        .filter(|(_, t)| *t < first + MEASURED)
        .count() as u64;
    let windows = (MEASURED.as_millis() as u64).div_ceil(WINDOW.as_millis() as u64);
    let allowed = LIMIT * windows;
    let stats = sim.stats();
    let owner = stats.owner(1, 10).expect("owner seen by the simulator");
    println!(
        "saturation: {} calls answered 200, {in_measured} within {MEASURED:?} of the first (allowed {allowed}, efficiency {:.1}%); simulator: {} arrivals, {} accepted, 429s {:?}, max in window {}",
        responses.len(),
        100.0 * in_measured as f64 / allowed as f64,
        owner.arrivals,
        owner.accepted,
        owner.rate_limited,
        owner.max_arrivals_in_window
    );
    assert_eq!(owner.rate_limited.ten_secondly_rolling, 0);
    assert_eq!(owner.arrivals, owner.accepted);
    assert!(
        owner.max_arrivals_in_window <= LIMIT,
        "max in window {}",
        owner.max_arrivals_in_window
    );
    assert!(
        in_measured * 100 >= allowed * 99,
        "efficiency {in_measured}/{allowed}"
    );
}

#[tokio::test]
async fn apps_and_portals_have_independent_burst_budgets() {
    let (sim, gateway) = world(
        "burst_limit = 5\nburst_window_ms = 1000\ndaily_limit = 0",
        |_| {},
    )
    .await;
    let gateway = Arc::new(gateway);
    let started = Instant::now();
    let mut calls = Vec::new();
    for token in [APP1_P10, APP2_P10, APP1_P20] {
        for _ in 0..5 {
            let gateway = gateway.clone();
            calls.push(tokio::spawn(async move {
                call(&gateway, "GET", "/crm/v3/objects/contacts", token, &[]).await
            }));
        }
    }
    for c in calls {
        let (status, headers, _) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(
            queue_ms(&headers) < 100,
            "no owner waited for another's budget"
        );
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    let (_, headers, _) = call(&gateway, "GET", "/crm/v3/objects/contacts", APP2_P10, &[]).await;
    assert!(
        queue_ms(&headers) >= 800,
        "the sixth call of one owner waits for its window"
    );
    assert_eq!(headers["x-hubgate-owner"], "2:10");
    assert_eq!(sim.stats().totals.rate_limited.ten_secondly_rolling, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_runs_at_its_limit_without_secondly_429s() {
    let _turn = heavy_turn().await;
    let (sim, gateway) = world(
        "search_limit = 5\nsearch_window_ms = 500\ndaily_limit = 0",
        |_| {},
    )
    .await;
    let gateway = Arc::new(gateway);
    let started = Instant::now();
    let searches: Vec<_> = (0..30)
        .map(|i| {
            let gateway = gateway.clone();
            // Two apps of one portal share the portal's search budget; both path forms count.
            let (token, path) = match i % 3 {
                0 => (APP1_P10, "/crm/v3/objects/contacts/search"),
                1 => (APP2_P10, "/crm/v3/objects/deals/search"),
                _ => (APP1_P10, "/crm/objects/2026-03/companies/search"),
            };
            tokio::spawn(async move { call(&gateway, "POST", path, token, &[]).await })
        })
        .collect();
    for search in searches {
        assert_eq!(search.await.unwrap().0, StatusCode::OK);
    }
    let elapsed = started.elapsed();
    let stats = sim.stats();
    let portal = stats
        .search_portal(10)
        .expect("searches reached the simulator");
    println!("search: 30 searches in {elapsed:?}; simulator {portal:?}");
    assert_eq!(stats.totals.rate_limited.secondly, 0);
    assert!(portal.max_in_window <= 5);
    // Six windows' worth: five waits of one window (plus margin) after the first burst.
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_millis(3500),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn an_exhausted_daily_budget_is_answered_locally_with_hubspots_429() {
    // HubSpot would allow 1000 a day; this gateway is told 10.
    let (sim, gateway) = world("daily_limit = 1000", |c| {
        c.budgets.daily_limit = 10;
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[])
                .await
                .0,
            StatusCode::OK
        );
    }
    for _ in 0..2 {
        let (status, headers, body) =
            call(&gateway, "GET", "/crm/v3/objects/contacts", APP2_P10, &[]).await;
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error["policyName"], "DAILY");
        assert_eq!(error["errorType"], "RATE_LIMIT");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=86_400).contains(&retry_after));
        assert_eq!(headers["x-should-retry"], "false");
    }
    // Another portal still has its own daily budget.
    assert_eq!(
        call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P20, &[])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        sim.stats().totals.arrivals,
        11,
        "refused calls never reached HubSpot"
    );
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="rejected_daily"}"#
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn deadlines_and_a_full_queue_are_refused_at_once() {
    let (sim, gateway) = world(
        "burst_limit = 2\nburst_window_ms = 1000\ndaily_limit = 0",
        |c| {
            c.queue.max_depth_per_owner = 2;
        },
    )
    .await;
    let gateway = Arc::new(gateway);
    for _ in 0..2 {
        assert_eq!(
            call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[])
                .await
                .0,
            StatusCode::OK
        );
    }
    let started = Instant::now();
    let (status, headers, body) = call(
        &gateway,
        "GET",
        "/crm/v3/objects/contacts",
        APP1_P10,
        &[("x-hubgate-deadline-ms", "200")],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "refused without waiting"
    );
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["policyName"], "HUBGATE_DEADLINE");
    let retry_ms: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!(
        (700..=1100).contains(&retry_ms),
        "estimated wait {retry_ms} ms"
    );
    assert_eq!(
        headers["retry-after"].to_str().unwrap(),
        retry_ms.div_ceil(1000).to_string()
    );
    assert_eq!(headers["x-should-retry"], "true");
    assert_eq!(headers["x-hubgate-owner"], "1:10");

    let queued: Vec<_> = (0..2)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[]).await
            })
        })
        .collect();
    // Both queued well before the window frees, about a second after the first calls.
    gateway
        .wait_for_queue_depth(2.0, Duration::from_millis(500))
        .await;
    let (status, headers, body) =
        call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[]).await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["policyName"], "HUBGATE_QUEUE_FULL");
    for q in queued {
        assert_eq!(q.await.unwrap().0, StatusCode::OK);
    }
    let (status, headers, body) = call(
        &gateway,
        "GET",
        "/crm/v3/objects/contacts",
        APP1_P10,
        &[("x-hubgate-deadline-ms", "soon")],
    )
    .await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("X-Hubgate-Deadline-Ms"));
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="rejected_deadline"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="rejected_queue_full"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sim.stats().totals.rate_limited.ten_secondly_rolling, 0);
}

#[tokio::test]
async fn a_caller_that_disconnects_leaves_the_queue_and_spends_nothing() {
    let (sim, gateway) = world(
        "burst_limit = 1\nburst_window_ms = 1000\ndaily_limit = 0",
        |c| {
            c.queue.max_depth_per_owner = 1;
        },
    )
    .await;
    assert_eq!(
        call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[])
            .await
            .0,
        StatusCode::OK
    );
    let request = format!(
        "GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {APP1_P10}\r\n\r\n"
    );
    // Would wait in the queue for about a second; hangs up once queued.
    let mut leaving = TcpStream::connect(gateway.proxy).await.unwrap();
    leaving.write_all(request.as_bytes()).await.unwrap();
    gateway
        .wait_for_queue_depth(1.0, Duration::from_millis(500))
        .await;
    let mut answer = [0u8; 1024];
    let answered = match leaving.try_read(&mut answer) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("the queued connection failed: {e}"),
    };
    assert_eq!(answered, 0, "nothing was answered yet");
    drop(leaving);
    // Its place is freed while it would still be waiting, not when its slot comes.
    gateway
        .wait_for_queue_depth(0.0, Duration::from_millis(500))
        .await;
    // With a queue of one, this would be refused if the caller who left still held its place.
    let (status, headers, _) =
        call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(queue_ms(&headers) >= 500);
    assert_eq!(
        sim.stats().totals.arrivals,
        2,
        "the caller who left spent nothing upstream"
    );
}

#[tokio::test]
async fn exempt_calls_skip_the_burst_window() {
    let (_sim, gateway) = world(
        "burst_limit = 1\nburst_window_ms = 5000\ndaily_limit = 0",
        |_| {},
    )
    .await;
    assert_eq!(
        call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[])
            .await
            .0,
        StatusCode::OK
    );
    let started = Instant::now();
    for _ in 0..3 {
        let (status, headers, _) = call(&gateway, "POST", "/events/v3/send", APP1_P10, &[]).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(queue_ms(&headers), 0);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn hubgate_headers_do_not_reach_hubspot() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("x-hubgate-deadline-ms", "5000")
        .header("x-hubgate-caller", "nightly-sync")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    let seen = echo::parse(&body);
    assert!(
        seen.headers
            .iter()
            .all(|(n, _)| !n.starts_with("x-hubgate-")),
        "{:?}",
        seen.headers
    );
    assert_eq!(headers["x-hubgate-owner"], "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_first_calls_with_a_new_token_cause_one_introspection() {
    let _turn = heavy_turn().await;
    let (sim, gateway) = world("daily_limit = 0", |_| {}).await;
    let gateway = Arc::new(gateway);
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                call(&gateway, "GET", "/crm/v3/objects/contacts", APP2_P10, &[]).await
            })
        })
        .collect();
    for c in calls {
        let (status, headers, _) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-hubgate-owner"], "2:10");
    }
    assert_eq!(
        sim.stats().introspection.total,
        1,
        "{:?}",
        sim.stats().introspection
    );
}

#[tokio::test]
async fn an_invalid_token_gets_hubspots_own_401() {
    let (_sim, gateway) = world("daily_limit = 0", |_| {}).await;
    let (status, headers, body) = call(
        &gateway,
        "GET",
        "/crm/v3/objects/contacts",
        "pat-na1-revoked",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json(&body)["category"],
        "INVALID_AUTHENTICATION",
        "HubSpot's body, not hubgate's"
    );
    assert!(headers.contains_key("x-hubspot-correlation-id"));
}

#[tokio::test]
async fn a_burst_limit_far_above_65536_is_kept_as_configured() {
    // A budget set so high that it never binds (200,000 per 10 s) holds every one of its
    // slots: the engine once clamped it to 65,536, which a 10 s window spends at 6,554
    // calls per second, far below what one gateway forwards.
    let (_sim, gateway) = world(
        "burst_limit = 200000\nburst_window_ms = 10000\ndaily_limit = 0",
        |_| {},
    )
    .await;
    for _ in 0..20 {
        let (status, _, _) = call(&gateway, "GET", "/crm/v3/objects/contacts", APP1_P10, &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, body) = get(&gateway.admin_url("/admin/owners/1:10")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let burst = &json(&body)["budgets"]["burst"];
    assert_eq!(burst["limit"], 200_000, "{burst}");
    assert_eq!(burst["used"], 20, "{burst}");
    assert_eq!(burst["remaining"], 200_000 - 20, "{burst}");
}
