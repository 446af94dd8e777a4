//! Calls without a credential and who may jump the queue, through a real gateway in front
//! of an echo upstream on loopback: OAuth token calls keep a budget of their own under a
//! flood of anonymous junk, invented `X-Hubgate-Caller` ids share one peer's share of the
//! anonymous budget, and with caller keys on, `X-Hubgate-Priority: high` is only for the
//! callers whose `[[callers]]` entry allows it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hubgate::config::{default_priorities, key_sha256, CallerConfig};
use hubgate::Config;
use tokio::time::Instant;

const BATCH_KEY: &str = "hgk-batch-4d2c9a7e10b35f68";
const OPS_KEY: &str = "hgk-ops-9b1e6f3a2c7d5e80";

/// A refresh as an OAuth app sends it: no credential header, the secrets in the form body.
const REFRESH_BODY: &[u8] =
    b"grant_type=refresh_token&client_id=app-client&client_secret=app-secret&refresh_token=rt-1";

async fn echo_gateway(tune: impl FnOnce(&mut Config)) -> Arc<Gateway> {
    let upstream = echo::start().await;
    Arc::new(Gateway::start(&format!("http://{upstream}"), tune).await)
}

/// An anonymous call (no credential), with these headers.
async fn anonymous_call(gateway: &Gateway, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = Request::get(gateway.url("/crm/v3/objects/contacts"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await.0
}

/// `tasks` closed-loop anonymous callers, each call under a caller id never seen before,
/// until `stop`; each task returns when its calls were answered.
fn junk_flood(
    gateway: &Arc<Gateway>,
    tasks: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Instant>>> {
    let invented = Arc::new(AtomicUsize::new(0));
    (0..tasks)
        .map(|_| {
            let (gateway, stop, invented) = (gateway.clone(), stop.clone(), invented.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("junk-{}", invented.fetch_add(1, Ordering::Relaxed));
                    let status = anonymous_call(&gateway, &[("x-hubgate-caller", &id)]).await;
                    assert_eq!(status, StatusCode::OK, "junk is paced, never dropped");
                    answered.push(Instant::now());
                }
                answered
            })
        })
        .collect()
}

/// `tasks` closed-loop anonymous callers under one configured name, until `stop`.
fn named_callers(
    gateway: &Arc<Gateway>,
    tasks: usize,
    name: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Instant>>> {
    (0..tasks)
        .map(|_| {
            let (gateway, stop) = (gateway.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = anonymous_call(&gateway, &[("x-hubgate-caller", name)]).await;
                    assert_eq!(status, StatusCode::OK);
                    answered.push(Instant::now());
                }
                answered
            })
        })
        .collect()
}

async fn answers_between(
    tasks: Vec<tokio::task::JoinHandle<Vec<Instant>>>,
    from: Instant,
    to: Instant,
) -> usize {
    let mut count = 0;
    for task in tasks {
        count += task
            .await
            .unwrap()
            .iter()
            .filter(|&&t| t >= from && t < to)
            .count();
    }
    count
}

async fn wait_for_queued(gateway: &Gateway, at_least: f64) {
    wait_for(
        &format!("at least {at_least} anonymous calls queued"),
        Duration::from_secs(20),
        || async {
            match gateway.queued().await {
                queued if queued >= at_least => Ok(()),
                queued => Err(format!("{queued} queued")),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refreshes_get_through_promptly_under_an_anonymous_flood() {
    let _turn = heavy_turn().await;
    let gateway = echo_gateway(|_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    // 60 waiting junk calls take six seconds of the 10/s anonymous budget.
    let flood = junk_flood(&gateway, 60, &stop);
    wait_for_queued(&gateway, 50.0).await;

    let mut waits = Vec::new();
    for path in ["/oauth/v1/token", "/oauth/2026-03/token", "/oauth/v1/token"] {
        let started = Instant::now();
        let (status, headers, body) = send(
            Request::post(gateway.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from_static(REFRESH_BODY)))
                .unwrap(),
        )
        .await;
        waits.push(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let seen = echo::parse(&body);
        assert_eq!(seen.target, path);
        assert_eq!(
            seen.body_len,
            REFRESH_BODY.len() as u64,
            "the form reached HubSpot"
        );
        assert_eq!(headers["x-hubgate-owner"], "anonymous");
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let slowest = waits.iter().max().unwrap();
    println!("token calls under a flood of 60 invented callers answered in {waits:?}");
    assert!(
        *slowest < Duration::from_secs(2),
        "a refresh waited {slowest:?} behind anonymous junk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_caller_ids_share_one_peers_share_of_the_anonymous_budget() {
    let _turn = heavy_turn().await;
    let gateway = echo_gateway(|c| {
        c.callers = vec![CallerConfig {
            name: "billing-sync".into(),
            weight: 1,
            max_rps: None,
            key_sha256: None,
            priorities: default_priorities(),
            portals: Vec::new(),
        }];
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let junk = junk_flood(&gateway, 40, &stop);
    let billing = named_callers(&gateway, 4, "billing-sync", &stop);
    wait_for_queued(&gateway, 35.0).await;
    let from = Instant::now();
    // Sharing is measured over a span of calls: 4 s is 40 sends of the anonymous budget.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let to = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let billing_sent = answers_between(billing, from, to).await;
    let junk_sent = answers_between(junk, from, to).await;
    let share = billing_sent as f64 / (billing_sent + junk_sent).max(1) as f64;
    println!(
        "billing-sync got {billing_sent} of {} anonymous sends ({:.1} %) beside 40 invented callers",
        billing_sent + junk_sent,
        share * 100.0
    );
    assert!(billing_sent + junk_sent >= 20, "the budget was spent");
    assert!(
        share >= 0.3,
        "one configured caller beside one peer's junk should get about half, got {:.1} %",
        share * 100.0
    );
}

fn keyed_callers(config: &mut Config) {
    config.inbound.require_caller_key = true;
    config.callers = vec![
        CallerConfig {
            name: "batch".into(),
            weight: 1,
            max_rps: None,
            key_sha256: Some(key_sha256(BATCH_KEY)),
            priorities: default_priorities(),
            portals: Vec::new(),
        },
        CallerConfig {
            name: "ops".into(),
            weight: 1,
            max_rps: None,
            key_sha256: Some(key_sha256(OPS_KEY)),
            priorities: vec!["high".into(), "normal".into()],
            portals: Vec::new(),
        },
    ];
}

async fn high_lane_sends(gateway: &Gateway) -> f64 {
    sample(
        &gateway.metrics().await,
        "hubgate_queue_wait_seconds_count",
        &[("lane", "high")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_keyed_caller_sends_high_only_when_its_entry_allows_it() {
    let gateway = echo_gateway(keyed_callers).await;
    let key = ("x-hubgate-key", BATCH_KEY);

    for priority in ["normal", "low"] {
        let status = anonymous_call(&gateway, &[key, ("x-hubgate-priority", priority)]).await;
        assert_eq!(status, StatusCode::OK, "{priority} is every caller's");
    }
    let (status, headers, body) = send(
        Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header(key.0, key.1)
            .header("x-hubgate-priority", "high")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let high_sends = high_lane_sends(&gateway).await;
    println!("batch's high call: {status}, high-lane sends {high_sends}");
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::FORBIDDEN);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("batch") && message.contains("priorities"),
        "names the caller and the setting: {message}"
    );
    assert_eq!(high_sends, 0.0, "nothing went in the high lane");

    let ops = ("x-hubgate-key", OPS_KEY);
    let status = anonymous_call(&gateway, &[ops, ("x-hubgate-priority", "high")]).await;
    assert_eq!(status, StatusCode::OK, "ops' entry lists high");
    assert_eq!(high_lane_sends(&gateway).await, 1.0);
    let (status, headers, body) = send(
        Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header(ops.0, ops.1)
            .header("x-hubgate-priority", "low")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::FORBIDDEN);
    assert!(
        error["message"].as_str().unwrap().contains("high, normal"),
        "names what the entry allows: {error}"
    );
}
