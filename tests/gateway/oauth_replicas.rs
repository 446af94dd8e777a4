//! The token broker across replicas and restarts: three gateways sharing installs in Redis
//! refresh each install one at a time (with and without refresh-token rotation) while
//! callers never see a 401, and an embedded store keeps installs across a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::oauth_broker::{
    broker_config, brokered, import, mint_refresh_token, oauth_sim, sim_install_stats, InstallFiles,
};
use crate::support::{get, heavy_turn, json, RedisServer};

/// Seconds an access token lives in the replica runs.
const LIFETIME_S: u64 = 5;
/// How long the callers run: 30 s rather than 60 s, so both runs (rotation off and on)
/// fit a loaded 2-core CI machine; at 5 s tokens that is still 8 refreshes per install.
const RUN: Duration = Duration::from_secs(30);
const PORTALS: [u64; 2] = [2001, 2002];

async fn three_replicas_refresh_one_at_a_time(rotate: bool) {
    let _turn = heavy_turn().await;
    let redis = RedisServer::start();
    let sim = oauth_sim(LIFETIME_S, rotate).await;
    // One key for all: every replica must read the installs the others seal.
    let files = InstallFiles::new();
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(
            sim.gateway(|config| {
                broker_config(config, &sim, &files);
                config.store.kind = "redis".into();
                config.store.redis_url = redis.url();
                config.store.replicas = 3;
                config.store.command_timeout_ms = 2_000;
            })
            .await,
        );
    }
    for portal in PORTALS {
        let refresh_token = mint_refresh_token(&sim, portal).await;
        import(&gateways[portal as usize % 3], &refresh_token).await;
    }
    let before: Vec<u64> = {
        let mut counts = Vec::new();
        for portal in PORTALS {
            counts.push(sim_install_stats(&sim, portal).await.0);
        }
        counts
    };

    let unauthorized = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let callers: Vec<_> = (0..12)
        .map(|i| {
            let url = gateways[i % 3].url("/crm/v3/objects/contacts");
            let portal = PORTALS[i % 2];
            let (unauthorized, failed, calls) =
                (unauthorized.clone(), failed.clone(), calls.clone());
            tokio::spawn(async move {
                while started.elapsed() < RUN {
                    let (status, body) = brokered(url.clone(), portal).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if status == StatusCode::UNAUTHORIZED {
                        unauthorized.fetch_add(1, Ordering::Relaxed);
                    }
                    if status != StatusCode::OK {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("brokered call answered {status}: {body:?}");
                    }
                    // Paced well under the burst limit: the run measures refreshes.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }

    let expected = RUN.as_secs_f64() / (0.75 * LIFETIME_S as f64);
    let (_, _, stats) = get(&format!("{}/__sim/stats", sim.base_url())).await;
    let stats = json(&stats);
    println!(
        "3 replicas, rotation {rotate}: {} brokered calls, {} 401s, {} failed; sim max concurrent refreshes {}",
        calls.load(Ordering::Relaxed),
        unauthorized.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        stats["oauth"]["max_concurrent_refreshes"]
    );
    for (i, portal) in PORTALS.into_iter().enumerate() {
        let (after, most_at_once) = sim_install_stats(&sim, portal).await;
        let refreshes = after - before[i];
        println!(
            "  install {portal}: {refreshes} refreshes (expected about {expected:.1}), at most {most_at_once} at once"
        );
        assert!(
            (expected * 0.5..=expected * 1.5 + 1.0).contains(&(refreshes as f64)),
            "install {portal}: {refreshes} refreshes in {RUN:?} of {LIFETIME_S} s tokens"
        );
        assert_eq!(
            most_at_once, 1,
            "install {portal}: never two refreshes at once"
        );
    }
    assert_eq!(
        stats["oauth"]["token_errors"]["invalid_grant"]
            .as_u64()
            .unwrap_or(0),
        0,
        "no replica redeemed a refresh token a sibling had already used: {stats}"
    );
    assert_eq!(
        unauthorized.load(Ordering::Relaxed),
        0,
        "no caller sees a 401"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no brokered call fails");
    assert!(calls.load(Ordering::Relaxed) > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_redis_refresh_each_install_once_at_a_time() {
    three_replicas_refresh_one_at_a_time(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_redis_refresh_one_at_a_time_with_rotating_refresh_tokens() {
    three_replicas_refresh_one_at_a_time(true).await;
}

#[tokio::test]
async fn installs_survive_a_restart_in_the_embedded_store() {
    let sim = oauth_sim(1800, true).await;
    let files = InstallFiles::new();
    let mut first = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let refresh_token = mint_refresh_token(&sim, 2101).await;
    import(&first, &refresh_token).await;
    let (status, _) = brokered(first.url("/crm/v3/objects/contacts"), 2101).await;
    assert_eq!(status, StatusCode::OK);
    first.begin_shutdown();
    (&mut first.task).await.unwrap().unwrap();

    let second = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let (_, _, listed) = get(&second.admin_url("/admin/installs")).await;
    let listed = json(&listed);
    assert_eq!(listed["installs"][0]["hub_id"], 2101, "{listed}");
    let (status, body) = brokered(second.url("/crm/v3/objects/contacts"), 2101).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    println!(
        "restart: 1 install imported, {} listed after the restart, brokered call {status}",
        listed["installs"].as_array().map_or(0, Vec::len)
    );
}
