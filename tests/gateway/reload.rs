//! Hot reload over real sockets: `POST /admin/reload` on an in-process gateway started from
//! a file (SIGHUP on the real binary is tests/binary/reload_signal.rs). Queued and
//! in-flight calls survive a reload; limits, credentials and callers change in place; a
//! bad file changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

const TOKEN: &str = "pat-na1-reload-test";

/// A file for `upstream` with `TOKEN` owned by app 1 in portal 10, plus `rest`.
fn config_text(upstream: SocketAddr, rest: &str) -> String {
    format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n\n\
         [[credentials]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 10\n\n{rest}"
    )
}

/// An upstream answering 200 at once (after `slow` for paths under `/slow`), counting
/// the calls that reach it.
async fn counting_upstream(slow: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let slow_path = request.uri().path().starts_with("/slow");
        async move {
            if slow_path {
                // The slow calls under test, still in flight while the reload happens.
                tokio::time::sleep(slow).await;
            }
            Response::new(Full::new(Bytes::from_static(b"{}")))
        }
    })
    .await;
    (addr, hits)
}

async fn reload(gateway: &Gateway) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = send(
        Request::post(format!("http://{}/admin/reload", gateway.admin))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    (status, json(&body))
}

async fn call(gateway: &Gateway, token: &str, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    call_with(gateway, token, path, &[]).await
}

async fn call_with(
    gateway: &Gateway,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request =
        Request::get(gateway.url(path)).header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await
}

/// `/admin/owners/1:10`, the owner of `TOKEN`.
async fn owner(gateway: &Gateway) -> serde_json::Value {
    let (status, _, body) = get(&format!("http://{}/admin/owners/1:10", gateway.admin)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    json(&body)
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn queued_calls_all_complete_when_a_reload_raises_the_limit() {
    let (upstream, hits) = counting_upstream(Duration::ZERO).await;
    // Two calls per 30 s: without the reload the ten queued calls would need 150 s.
    let budgets = "[queue]\nmax_wait_ms = 300000\n\n[budgets]\nburst_window_ms = 30000\nburst_margin_ms = 0\n";
    let file = ConfigFile::new(&config_text(
        upstream,
        &format!("{budgets}burst_limit = 2\n"),
    ));
    let gateway = Gateway::start_from_file(file.path()).await;

    let calls: Vec<_> = (0..12)
        .map(|i| {
            let url = gateway.url(&format!("/crm/v3/objects/contacts/{i}"));
            tokio::spawn(async move {
                let request = Request::get(url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                // A client of its own, with no timeout: the test's own deadline is below.
                let response = client().request(request).await.expect("one response");
                response.status()
            })
        })
        .collect();
    wait_until(
        "two sent and ten queued",
        Duration::from_secs(20),
        || async { hits.load(Ordering::SeqCst) == 2 && owner(&gateway).await["queue_depth"] == 10 },
    )
    .await;
    // A while for nothing to happen: no call may leave while the 30 s window is full.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the queue holds while the window is full"
    );

    file.write(&config_text(
        upstream,
        &format!("{budgets}burst_limit = 50\n"),
    ));
    let reloaded_at = Instant::now();
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "reloaded");
    assert_eq!(strings(&body["changed"]), ["budgets.burst_limit"]);
    assert_eq!(strings(&body["needs_restart"]), Vec::<String>::new());

    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(
            tokio::time::timeout(Duration::from_secs(15), call)
                .await
                .expect("the queue drains at the new limit, not the old one")
                .unwrap(),
        );
    }
    let drained_in = reloaded_at.elapsed();
    assert_eq!(statuses.len(), 12, "exactly one response per call");
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        drained_in < Duration::from_secs(10),
        "ten queued calls drained {drained_in:?} after the reload (the old limit needed 150 s)"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        12,
        "each call reached HubSpot once"
    );
    let view = owner(&gateway).await;
    assert_eq!(view["queue_depth"], 0);
    assert_eq!(view["budgets"]["burst"]["limit"], 50, "{view}");
    assert_eq!(view["budgets"]["burst"]["used"], 12, "{view}");
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="forwarded"}"#),
        Some(12.0)
    );
}

#[tokio::test]
async fn a_lowered_limit_holds_for_new_sends_while_calls_in_flight_finish() {
    let (upstream, hits) = counting_upstream(Duration::from_millis(1500)).await;
    let budgets = "[budgets]\nburst_window_ms = 30000\nburst_margin_ms = 0\n";
    let file = ConfigFile::new(&config_text(
        upstream,
        &format!("{budgets}burst_limit = 10\n"),
    ));
    let gateway = Gateway::start_from_file(file.path()).await;

    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            let url = gateway.url(&format!("/slow/{i}"));
            tokio::spawn(async move {
                let request = Request::get(url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                send(request).await
            })
        })
        .collect();
    wait_until(
        "three slow calls at the upstream",
        Duration::from_secs(20),
        || async { hits.load(Ordering::SeqCst) == 3 },
    )
    .await;

    file.write(&config_text(
        upstream,
        &format!("{budgets}burst_limit = 4\n"),
    ));
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Three of four slots are taken: one more goes, the next would wait for the window.
    let (status, headers, _) = call(&gateway, TOKEN, "/fast/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-hubgate-queue-ms"], "0");
    let (status, headers, body) = call_with(
        &gateway,
        TOKEN,
        "/fast/2",
        &[("x-hubgate-deadline-ms", "2000")],
    )
    .await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["policyName"], "HUBGATE_DEADLINE", "{error}");

    for call in in_flight {
        let (status, _, _) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "in-flight calls finish");
    }
    assert_eq!(owner(&gateway).await["budgets"]["burst"]["limit"], 4);
}

#[tokio::test]
async fn credentials_reload_a_new_token_resolves_without_introspection_and_a_removed_one_is_asked_again(
) {
    let introspections = Arc::new(AtomicUsize::new(0));
    let asked = introspections.clone();
    let upstream = upstream(move |request: Request<hyper::body::Incoming>| {
        let introspection = request.uri().path() == "/oauth/v2/private-apps/get/access-token-info";
        if introspection {
            asked.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            let body = if introspection {
                r#"{"appId": 7, "hubId": 70}"#
            } else {
                "{}"
            };
            Response::new(Full::new(Bytes::from_static(body.as_bytes())))
        }
    })
    .await;
    let file = ConfigFile::new(&config_text(upstream, ""));
    let gateway = Gateway::start_from_file(file.path()).await;

    let (status, headers, _) = call(&gateway, TOKEN, "/crm/v3/objects/contacts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-hubgate-owner"], "1:10");

    let added = "pat-na1-added-by-reload";
    file.write(&format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n\n\
         [[credentials]]\ntoken = \"{added}\"\napp_id = 5\nportal_id = 50\n"
    ));
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        strings(&body["changed"]),
        [
            "credentials.0.app_id",
            "credentials.0.portal_id",
            "credentials.0.token"
        ]
    );
    assert!(
        !body.to_string().contains("pat-na1"),
        "no token in the answer: {body}"
    );

    let (_, headers, _) = call(&gateway, added, "/crm/v3/objects/contacts").await;
    assert_eq!(headers["x-hubgate-owner"], "5:50");
    assert_eq!(
        introspections.load(Ordering::SeqCst),
        0,
        "known from the config"
    );

    let (_, headers, _) = call(&gateway, TOKEN, "/crm/v3/objects/contacts").await;
    assert_eq!(
        headers["x-hubgate-owner"], "7:70",
        "HubSpot is asked about a removed token"
    );
    assert_eq!(introspections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn callers_reload_changes_caps_and_an_unchanged_cap_keeps_its_count() {
    let (upstream, _) = counting_upstream(Duration::ZERO).await;
    let caller = |weight: u32, max_rps: u32| {
        config_text(
            upstream,
            &format!("[[callers]]\nname = \"batch\"\nweight = {weight}\nmax_rps = {max_rps}\n"),
        )
    };
    let file = ConfigFile::new(&caller(1, 1));
    let gateway = Gateway::start_from_file(file.path()).await;
    let as_batch = [("x-hubgate-caller", "batch")];

    let first_at = Instant::now();
    let (status, _, _) = call_with(&gateway, TOKEN, "/a", &as_batch).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = call_with(&gateway, TOKEN, "/a", &as_batch).await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error["policyName"], "HUBGATE_CALLER_CAP");

    // Only the weight changes: the cap's limiter is kept, so the reload hands out no burst.
    file.write(&caller(3, 1));
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(strings(&body["changed"]), ["callers.0.weight"]);
    let (status, _, _) = call_with(&gateway, TOKEN, "/a", &as_batch).await;
    if first_at.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "the cap still counts the first call"
        );
    }

    file.write(&caller(3, 1000));
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(strings(&body["changed"]), ["callers.0.max_rps"]);
    for _ in 0..5 {
        let (status, _, _) = call_with(&gateway, TOKEN, "/a", &as_batch).await;
        assert_eq!(status, StatusCode::OK, "the raised cap is in force");
    }
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_every_problem_and_the_old_config_keeps_serving() {
    let (upstream, _) = counting_upstream(Duration::ZERO).await;
    let file = ConfigFile::new(&config_text(upstream, "[budgets]\nburst_limit = 3\n"));
    let gateway = Gateway::start_from_file(file.path()).await;
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hubgate_config_last_reload_successful"),
        Some(1.0)
    );
    let started_at = metric_value(
        &metrics,
        "hubgate_config_last_reload_success_timestamp_seconds",
    )
    .expect("the start counts as a successful load");
    let count = |metrics: &str, result: &str| {
        metric_value(
            metrics,
            &format!("hubgate_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(count(&metrics, "success"), Some(0.0));
    assert_eq!(count(&metrics, "failure"), Some(0.0));
    let path = file.path().display().to_string();

    file.write("[budgets\nburst_limit = 5\n");
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["category"], "VALIDATION_ERROR");
    let problems = strings(&body["problems"]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("{path}:1")),
        "{problems:?}"
    );
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hubgate_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(count(&metrics, "failure"), Some(1.0));

    file.write(&config_text(
        upstream,
        "[budgets]\nburst_limit = 0\n\n[lanes]\nhigh_reserve_percent = 95\n\n[queue]\nmax_wait_ms = 0\n",
    ));
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problems = strings(&body["problems"]);
    for expected in [
        format!("{path}:10: budgets.burst_limit: must be at least 1"),
        format!("{path}:13: lanes.high_reserve_percent: must be at most 90"),
        format!("{path}:16: queue.max_wait_ms: must be greater than 0"),
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(&expected)),
            "expected {expected:?} in {problems:?}"
        );
    }
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(count(&gateway.metrics().await, "failure"), Some(2.0));

    // The old config still serves: its credential and its limit of 3.
    let (status, headers, _) = call(&gateway, TOKEN, "/crm/v3/objects/contacts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-hubgate-owner"], "1:10");
    assert_eq!(owner(&gateway).await["budgets"]["burst"]["limit"], 3);

    file.write(&config_text(upstream, "[budgets]\nburst_limit = 6\n"));
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, "hubgate_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(count(&metrics, "success"), Some(1.0));
    assert_eq!(count(&metrics, "failure"), Some(2.0));
    assert!(
        metric_value(
            &metrics,
            "hubgate_config_last_reload_success_timestamp_seconds"
        )
        .unwrap()
            >= started_at
    );
    assert_eq!(owner(&gateway).await["budgets"]["burst"]["limit"], 6);
}

#[tokio::test]
async fn keys_that_need_a_restart_are_reported_and_keep_their_running_values() {
    let (upstream, hits) = counting_upstream(Duration::ZERO).await;
    let file = ConfigFile::new(&config_text(upstream, ""));
    let gateway = Gateway::start_from_file(file.path()).await;

    // Port 9 on loopback: nothing listens there, so a call sent there would fail.
    let moved = format!(
        "[server]\nlisten = \"127.0.0.1:18080\"\n\n[upstream]\nbase_url = \"http://127.0.0.1:9\"\n\n\
         [metrics]\nmax_owner_series = 5\n\n[budgets]\nburst_limit = 7\n\n\
         [queue]\nmax_wait_ms = 12000\n\n\
         [[credentials]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 10\n"
    );
    file.write(&moved);
    for round in 0..2 {
        let (status, body) = reload(&gateway).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            strings(&body["needs_restart"]),
            [
                "metrics.max_owner_series",
                "server.listen",
                "upstream.base_url"
            ],
            "still waiting for a restart on round {round}"
        );
        let changed: &[&str] = if round == 0 {
            &["budgets.burst_limit", "queue.max_wait_ms"]
        } else {
            &[]
        };
        assert_eq!(strings(&body["changed"]), changed);
        assert_eq!(
            metric_value(&gateway.metrics().await, "hubgate_queue_max_wait_seconds"),
            Some(12.0),
            "the deadline alert compares with the new max_wait_ms"
        );
    }
    let (status, _, _) = call(&gateway, TOKEN, "/crm/v3/objects/contacts").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "calls still go to the running upstream"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(owner(&gateway).await["budgets"]["burst"]["limit"], 7);
}

#[tokio::test]
async fn a_gateway_on_built_in_defaults_has_no_file_to_reload_and_reload_needs_post() {
    let (upstream, _) = counting_upstream(Duration::ZERO).await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let (status, body) = reload(&gateway).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("--config"),
        "{body}"
    );

    let (status, headers, body) = get(&format!("http://{}/admin/reload", gateway.admin)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert!(json(&body)["message"].as_str().unwrap().contains("POST"));
}
