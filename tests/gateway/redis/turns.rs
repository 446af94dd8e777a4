//! Replicas whose callers arrive together at one quiet budget share its first window: the
//! replica whose probe is answered first (its lane woken by its own answer) takes its share
//! of the window, not all of it, and the replica whose lane sleeps on Redis's "not before"
//! (it has nothing in flight, so no answer wakes it) finds the rest when it wakes.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use hubgate::Config;
use tokio::time::Instant;

const TOKEN: &str = "pat-na1-app1-portal10";
/// Another owner, to open each replica's connection to Redis before the measured calls.
const WARM_TOKEN: &str = "pat-na1-app2-portal20";
const LIMIT: usize = 30;
const REPLICAS: usize = 2;

const WORLD: &str = r#"
burst_limit = 30
burst_window_ms = 1000
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

async fn replica(sim: &Hubspot, redis: &RedisServer) -> Gateway {
    let url = redis.url();
    sim.gateway(move |c: &mut Config| {
        super::known_owners_on_redis(c, url, "turns", &[(TOKEN, 1, 10), (WARM_TOKEN, 2, 20)]);
        c.queue.max_wait_ms = 5_000;
        c.store.replicas = REPLICAS as u32;
        c.store.command_timeout_ms = 500;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_arriving_together_at_a_quiet_budget_each_get_a_share_of_its_first_window() {
    let _turn = heavy_turn().await;
    let redis = RedisServer::start();
    let sim = Hubspot::start(sim_config(WORLD)).await;
    let mut gateways = Vec::new();
    for _ in 0..REPLICAS {
        let gateway = Arc::new(replica(&sim, &redis).await);
        assert_eq!(
            super::contacts_as(&gateway, WARM_TOKEN).await,
            StatusCode::OK
        );
        gateways.push(gateway);
    }
    // As many callers per replica as the window holds: whichever lane is served first
    // could take the whole window.
    let started = Instant::now();
    let mut calls = Vec::new();
    for (index, gateway) in gateways.iter().enumerate() {
        for _ in 0..LIMIT {
            let gateway = gateway.clone();
            calls.push(tokio::spawn(async move {
                let status = super::contacts_as(&gateway, TOKEN).await;
                (index, status, started.elapsed())
            }));
        }
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|(_, status, _)| *status == StatusCode::OK),
        "{answers:?}"
    );
    // A slot of the first window frees a window after it was taken: calls answered before
    // then went in the first window.
    let first_window = Duration::from_millis(900);
    let per_replica: Vec<usize> = (0..REPLICAS)
        .map(|index| {
            answers
                .iter()
                .filter(|(i, _, at)| *i == index && *at < first_window)
                .count()
        })
        .collect();
    let owner = sim
        .stats()
        .owner(1, 10)
        .expect("owner seen by the simulator")
        .clone();
    println!(
        "first window per replica: {per_replica:?}; simulator: {} arrivals, 429s {:?}, max in window {}",
        owner.arrivals, owner.rate_limited, owner.max_arrivals_in_window
    );
    // Whether the window's calls, sent in a few batches, reach HubSpot spread within
    // `burst_margin_ms` depends on the host's spare CPU; the saturating replicas test
    // holds that line. This one is about who gets the window.
    let share = LIMIT / REPLICAS;
    assert!(
        per_replica.iter().all(|&n| n >= share - share / 4),
        "first window per replica {per_replica:?}: each replica's share is {share}"
    );
}
