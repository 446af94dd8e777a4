//! A lane's reservations batched into one script call, with Redis far away: a real
//! `redis-server` behind a proxy on loopback that delays every chunk each way, a gateway
//! on it, the simulator upstream. A burst from idle costs two reservation round trips
//! (the probe after a quiet spell, then the rest), and an owner's throughput is its
//! budget, not one call per round trip.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use hubgate::Config;
use tokio::time::Instant;

const BURST_TOKEN: &str = "pat-na1-app1-portal10";
/// Another owner, to open the gateway's connection to Redis before the burst.
const WARM_TOKEN: &str = "pat-na1-app2-portal20";

fn world(limit: u32, window_ms: u64) -> String {
    format!(
        r#"
burst_limit = {limit}
burst_window_ms = {window_ms}
daily_limit = 0
[[tokens]]
token = "{BURST_TOKEN}"
app_id = 1
portal_id = 10
[[tokens]]
token = "{WARM_TOKEN}"
app_id = 2
portal_id = 20
"#
    )
}

/// Redis behind a proxy adding `one_way` each way, with both scripts already loaded (so
/// no call pays for `NOSCRIPT`), and the reservation script's SHA, which marks each
/// reservation round trip in what crosses the proxy.
async fn far_redis(one_way: Duration) -> (RedisServer, DelayProxy, String) {
    let redis = RedisServer::start();
    let load = |script: &str| {
        let reply = redis.command(&["SCRIPT", "LOAD", script]).unwrap();
        reply.lines().nth(1).expect("a SHA").trim().to_string()
    };
    let reserve_sha = load(include_str!("../../../src/store/redis/reserve.lua"));
    load(include_str!("../../../src/store/redis/learn.lua"));
    assert_eq!(
        reserve_sha.len(),
        40,
        "SCRIPT LOAD answered {reserve_sha:?}"
    );
    let target = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let proxy = DelayProxy::start(target, one_way).await;
    (redis, proxy, reserve_sha)
}

async fn gateway_on(sim: &Hubspot, proxy: &DelayProxy) -> Gateway {
    let url = proxy.redis_url();
    sim.gateway(move |c: &mut Config| {
        let owners = [(BURST_TOKEN, 1, 10), (WARM_TOKEN, 2, 20)];
        super::known_owners_on_redis(c, url, "far", &owners);
        c.queue.max_wait_ms = 20_000;
        c.store.command_timeout_ms = 1_000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_110_from_idle_costs_two_reservation_round_trips_to_a_far_redis() {
    let _turn = heavy_turn().await;
    const ONE_WAY: Duration = Duration::from_millis(20);
    const BURST: usize = 110;
    let (_redis, proxy, reserve_sha) = far_redis(ONE_WAY).await;
    let sim = Hubspot::start(sim_config(&world(110, 10_000))).await;
    let gateway = Arc::new(gateway_on(&sim, &proxy).await);
    // The connection to Redis opens on the first reservation: another owner's call opens
    // it, and its answer's lessons go before the burst starts.
    assert_eq!(
        super::contacts_as(&gateway, WARM_TOKEN).await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reservations_before = proxy.count_sent(reserve_sha.as_bytes());

    let started = Instant::now();
    let calls: Vec<_> = (0..BURST)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                (
                    super::contacts_as(&gateway, BURST_TOKEN).await,
                    started.elapsed(),
                )
            })
        })
        .collect();
    let mut answered_at = Vec::new();
    for call in calls {
        let (status, at) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        answered_at.push(at);
    }
    answered_at.sort();
    let all_answered = started.elapsed();
    let reservations = proxy.count_sent(reserve_sha.as_bytes()) - reservations_before;
    let owner = sim.stats().owner(1, 10).cloned().expect("owner seen");
    let round_trip = ONE_WAY * 2;
    println!(
        "burst of {BURST} from idle, Redis {} ms away: first answered in {} ms, all in {} ms; \
         {reservations} reservation round trips; simulator: {} arrivals, 429s {:?}",
        round_trip.as_millis(),
        answered_at[0].as_millis(),
        all_answered.as_millis(),
        owner.arrivals,
        owner.rate_limited,
    );
    assert_eq!(owner.arrivals, BURST as u64);
    assert_eq!(owner.rate_limited.total(), 0);
    // The probe after the quiet spell (alone, or granted at the head of a script whose
    // rest it holds back), then every other call in one script.
    assert!(
        reservations <= 2,
        "{reservations} reservation round trips for one burst"
    );
    // 3 round trips and 50 ms is the release build's target (BENCHMARKS.md); a debug build
    // on a shared machine spends more than that forwarding 110 calls, so the bound here
    // only tells two round trips from one per call (4.4 s).
    assert!(
        all_answered < Duration::from_millis(1_500),
        "the burst took {all_answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_throughput_with_redis_90_ms_away_is_its_budget_not_one_call_per_round_trip() {
    let _turn = heavy_turn().await;
    const ONE_WAY: Duration = Duration::from_millis(45);
    const LIMIT: u64 = 50;
    const WINDOW: Duration = Duration::from_millis(1_000);
    const CALLERS: usize = 60;
    const MEASURED: Duration = Duration::from_millis(3_000);
    let (_redis, proxy, _) = far_redis(ONE_WAY).await;
    let sim = Hubspot::start(sim_config(&world(LIMIT as u32, 1_000))).await;
    let gateway = Arc::new(gateway_on(&sim, &proxy).await);
    assert_eq!(
        super::contacts_as(&gateway, WARM_TOKEN).await,
        StatusCode::OK
    );

    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let mut answered = Vec::new();
                while started.elapsed() < MEASURED {
                    let status = super::contacts_as(&gateway, BURST_TOKEN).await;
                    answered.push((status, started.elapsed()));
                }
                answered
            })
        })
        .collect();
    let mut answered = Vec::new();
    for caller in callers {
        answered.extend(caller.await.unwrap());
    }
    let ok_in_time = answered
        .iter()
        .filter(|(s, t)| *s == StatusCode::OK && *t < MEASURED)
        .count() as u64;
    let not_ok = answered
        .iter()
        .filter(|(s, _)| *s != StatusCode::OK)
        .count();
    let owner = sim.stats().owner(1, 10).cloned().expect("owner seen");
    let round_trip = ONE_WAY * 2;
    let one_per_round_trip = (MEASURED.as_millis() / round_trip.as_millis()) as u64;
    let windows = (MEASURED.as_millis() / WINDOW.as_millis()) as u64;
    println!(
        "Redis {} ms away, limit {LIMIT} per {} ms, {CALLERS} callers for {} ms: {ok_in_time} \
         answered (one per round trip would be at most {one_per_round_trip}; the budget \
         allows {}); non-200 {not_ok}; simulator: {} arrivals, 429s {:?}, max in window {}",
        round_trip.as_millis(),
        WINDOW.as_millis(),
        MEASURED.as_millis(),
        LIMIT * windows,
        owner.arrivals,
        owner.rate_limited,
        owner.max_arrivals_in_window,
    );
    assert_eq!(not_ok, 0);
    assert_eq!(owner.rate_limited.total(), 0);
    assert!(owner.max_arrivals_in_window <= LIMIT);
    // Each window's slots go in one script once they free, so the owner gets its budget
    // (150 of 150 on an idle machine; less a round trip per window and the probe at
    // worst), far more than a call per round trip (27 when each call had its own). Bounds
    // for a debug build on a shared machine.
    assert!(
        ok_in_time >= 2 * one_per_round_trip && ok_in_time * 2 >= LIMIT * windows,
        "{ok_in_time} calls in {MEASURED:?}"
    );
}
