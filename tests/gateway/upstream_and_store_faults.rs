//! An upstream that names absurd waits, and a Redis that is slow, full or holds garbage at
//! one owner's key: the call still gets one answer, a slow Redis costs about as long as it
//! was slow, recovery is judged by the real script, and one bad key degrades one owner.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hubgate::Config;
use tokio::time::Instant;

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

/// Two apps in two portals; budgets far above the load, so only the store limits it.
const SIM: &str = r#"
burst_limit = 5000
burst_window_ms = 10000
daily_limit = 0
[[tokens]]
token = "pat-na1-app1-portal10"
app_id = 1
portal_id = 10
[[tokens]]
token = "pat-na1-app2-portal20"
app_id = 2
portal_id = 20
"#;
const OWNER_A: &str = "pat-na1-app1-portal10";
const OWNER_B: &str = "pat-na1-app2-portal20";

async fn gateway_on(sim: &Hubspot, redis: &RedisServer, prefix: &str) -> Gateway {
    let (url, prefix) = (redis.url(), prefix.to_string());
    sim.gateway(move |c: &mut Config| {
        c.budgets.burst_margin_ms = 20;
        // A refusal comes back at once instead of after a long queue wait.
        c.queue.max_wait_ms = 2_000;
        c.store.kind = "redis".into();
        c.store.redis_url = url;
        c.store.key_prefix = prefix;
    })
    .await
}

async fn call_as(gateway: &Gateway, token: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(request).await
}

/// `callers` loops of one owner, one call each `every`, until `until`: each answer's status
/// and when it came (from `started`). Refusals are checked as HubSpot-shaped JSON.
fn steady_load(
    gateway: Arc<Gateway>,
    token: &'static str,
    callers: usize,
    every: Duration,
    started: Instant,
    until: Duration,
) -> tokio::task::JoinHandle<Vec<(StatusCode, Duration)>> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let gateway = gateway.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < until {
                    let (status, headers, body) = call_as(&gateway, token).await;
                    if status != StatusCode::OK {
                        assert_hubspot_error(status, &headers, &body, status);
                    }
                    seen.push((status, started.elapsed()));
                    // The pacing of a steady caller, not a wait for a condition.
                    tokio::time::sleep(every).await;
                }
                seen
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.extend(task.await.unwrap());
        }
        out.sort_by_key(|(_, at)| *at);
        out
    })
}

/// The longest time between two successful answers from `from` on (or to the end).
fn longest_gap(answers: &[(StatusCode, Duration)], from: Duration, end: Duration) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for (_, at) in answers
        .iter()
        .filter(|(s, at)| *s == StatusCode::OK && *at >= from)
    {
        longest = longest.max(at.saturating_sub(last));
        last = *at;
    }
    longest.max(end.saturating_sub(last))
}

async fn degraded(gateway: &Gateway) -> f64 {
    metric_value(&gateway.metrics().await, "hubgate_store_degraded").expect("gauge exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_paused_for_300_ms_costs_about_300_ms_of_throughput_not_a_window() {
    let _turn = heavy_turn().await;
    let redis = RedisServer::start();
    let sim = Hubspot::start(sim_config(SIM)).await;
    let gateway = Arc::new(gateway_on(&sim, &redis, "pause").await);
    let started = Instant::now();
    const PAUSED_AT: Duration = Duration::from_millis(1_500);
    const END: Duration = Duration::from_millis(4_500);
    let load = steady_load(
        gateway.clone(),
        OWNER_A,
        4,
        Duration::from_millis(20),
        started,
        END,
    );
    tokio::time::sleep_until(started + PAUSED_AT).await;
    let paused = redis.command(&["CLIENT", "PAUSE", "300", "WRITE"]);
    assert_eq!(paused.as_deref(), Some("+OK\r\n"));
    let answers = load.await.unwrap();
    let before: Vec<_> = answers.iter().filter(|(_, at)| *at < PAUSED_AT).collect();
    assert!(
        before.iter().all(|(s, _)| *s == StatusCode::OK),
        "steady before the pause: {before:?}"
    );
    let gap = longest_gap(&answers, PAUSED_AT - Duration::from_millis(100), END);
    let refused = answers
        .iter()
        .filter(|(s, at)| *s != StatusCode::OK && *at >= PAUSED_AT)
        .count();
    println!(
        "CLIENT PAUSE 300 WRITE: longest stretch without a successful answer {gap:?}, {refused} refused after the pause began, gauge {}",
        degraded(&gateway).await
    );
    assert!(
        gap < Duration::from_millis(1_300),
        "a 300 ms pause stopped throughput for {gap:?}"
    );
    assert_eq!(
        degraded(&gateway).await,
        0.0,
        "a slow Redis is not a down one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_value_at_one_owners_key_degrades_that_owner_only() {
    let _turn = heavy_turn().await;
    let redis = RedisServer::start();
    let sim = Hubspot::start(sim_config(SIM)).await;
    let gateway = Arc::new(gateway_on(&sim, &redis, "own").await);
    assert_eq!(call_as(&gateway, OWNER_A).await.0, StatusCode::OK);
    assert_eq!(call_as(&gateway, OWNER_B).await.0, StatusCode::OK);
    // Owner A's window log becomes a string: its script fails with WRONGTYPE.
    let planted = redis.command(&["SET", "own:{p10}:burst:1", "garbage"]);
    assert_eq!(planted.as_deref(), Some("+OK\r\n"));
    let started = Instant::now();
    const END: Duration = Duration::from_millis(2_500);
    let a = steady_load(
        gateway.clone(),
        OWNER_A,
        2,
        Duration::from_millis(50),
        started,
        END,
    );
    let b = steady_load(
        gateway.clone(),
        OWNER_B,
        2,
        Duration::from_millis(50),
        started,
        END,
    );
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let ok = |answers: &[(StatusCode, Duration)]| {
        answers.iter().filter(|(s, _)| *s == StatusCode::OK).count()
    };
    println!(
        "wrong-type key at owner A: A {} of {} OK, B {} of {} OK, gauge {}",
        ok(&a),
        a.len(),
        ok(&b),
        b.len(),
        degraded(&gateway).await
    );
    assert_eq!(ok(&b), b.len(), "owner B is not touched by A's key");
    assert!(
        ok(&a) < a.len(),
        "owner A's budget cannot be read from Redis"
    );
    assert_eq!(
        degraded(&gateway).await,
        0.0,
        "the store as a whole is fine"
    );
    // Once the key is usable again, A is served through Redis again.
    redis.command(&["DEL", "own:{p10}:burst:1"]).unwrap();
    wait_until("owner A is served again", Duration::from_secs(15), || {
        let gateway = gateway.clone();
        async move { call_as(&gateway, OWNER_A).await.0 == StatusCode::OK }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_answers_ping_but_fails_scripts_stays_degraded_until_scripts_run() {
    let _turn = heavy_turn().await;
    let redis = RedisServer::start();
    let sim = Hubspot::start(sim_config(SIM)).await;
    let gateway = Arc::new(gateway_on(&sim, &redis, "oom").await);
    assert_eq!(call_as(&gateway, OWNER_A).await.0, StatusCode::OK);
    // Every write is refused (OOM), while PING still answers PONG.
    for args in [
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"][..],
        &["CONFIG", "SET", "maxmemory", "1"][..],
    ] {
        assert_eq!(redis.command(args).as_deref(), Some("+OK\r\n"));
    }
    let started = Instant::now();
    const END: Duration = Duration::from_millis(3_000);
    let load = steady_load(
        gateway.clone(),
        OWNER_A,
        2,
        Duration::from_millis(50),
        started,
        END,
    );
    wait_until("the store goes degraded", Duration::from_secs(3), || {
        let gateway = gateway.clone();
        async move { degraded(&gateway).await == 1.0 }
    })
    .await;
    // Every 25 ms until the load ends: does the store claim health while scripts fail?
    let (mut samples, mut healthy) = (0, 0);
    while started.elapsed() < END {
        samples += 1;
        if degraded(&gateway).await == 0.0 {
            healthy += 1;
        }
        // The sampling period of the gauge, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answers = load.await.unwrap();
    println!(
        "OOM: gauge said healthy in {healthy} of {samples} samples while every script failed; {} answers",
        answers.len()
    );
    assert_eq!(healthy, 0, "PING is not proof that scripts run");
    assert_eq!(
        redis
            .command(&["CONFIG", "SET", "maxmemory", "0"])
            .as_deref(),
        Some("+OK\r\n")
    );
    wait_until("the store recovers", Duration::from_secs(5), || {
        let gateway = gateway.clone();
        async move { degraded(&gateway).await == 0.0 }
    })
    .await;
}
