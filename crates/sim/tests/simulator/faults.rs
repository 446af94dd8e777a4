//! Fault injection and the outside consumer.

use std::time::Duration;

use crate::support::*;
use hubgate_sim::{Faults, SimConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const LIST: &str = "/crm/v3/objects/contacts";

#[tokio::test]
async fn error_rate_one_answers_hubspot_shaped_5xx() {
    let (sim, c) = start(config()).await;
    let r = c
        .call(
            "POST",
            "/__sim/faults",
            None,
            Some(json!({ "error_rate": 1.0 })),
        )
        .await;
    assert_eq!(r.status, 200);
    for _ in 0..8 {
        let r = c.get(LIST, PAT).await;
        assert!(
            [500, 502, 503, 504].contains(&r.status),
            "status {}",
            r.status
        );
        let b = r.json();
        assert_eq!(b["status"], "error");
        assert!(b["correlationId"].is_string());
        assert!(r.header("x-hubspot-correlation-id").is_some());
    }
    // Control routes are never faulted.
    assert_eq!(c.call("GET", "/__sim/health", None, None).await.status, 200);
    let s = c.stats().await;
    assert_eq!(s.totals.fault_errors, 8);
    // Faulted requests still count as arrivals.
    assert_eq!(s.owner(PAT_APP, PORTAL).expect("owner").arrivals, 8);

    sim.set_faults(Faults::default());
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    let r = c
        .call(
            "POST",
            "/__sim/faults",
            None,
            Some(json!({ "error_rate": 3.0 })),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .call("POST", "/__sim/faults", None, Some(json!({ "bogus": 1 })))
        .await;
    assert_eq!(r.status, 400);
    sim.shutdown().await;
}

/// Real time: on paused time the 5 s guard below would fire as soon as the test waits on
/// the socket, before the server has even read the request.
#[tokio::test]
async fn drop_rate_one_closes_without_answering() {
    let (sim, c) = start(config()).await;
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let mut s = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .expect("connect");
    s.write_all(
        format!("GET {LIST} HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer {PAT}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) | Ok(Err(_)) => assert!(buf.is_empty(), "got an answer: {buf:?}"),
        Err(_) => panic!("connection was not closed"),
    }
    let st = c.stats().await;
    assert_eq!(st.totals.fault_drops, 1);
    assert_eq!(st.owner(PAT_APP, PORTAL).expect("owner").arrivals, 1);
    sim.shutdown().await;
}

/// Paused time: the injected sleep completes as soon as nothing else can run, so the measured
/// latency is exactly the injected one, however loaded the machine is.
#[tokio::test(start_paused = true)]
async fn latency_is_added() {
    let (sim, c) = start(SimConfig {
        faults: Faults {
            latency_ms: 150,
            latency_jitter_ms: 50,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let t = Instant::now();
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(
        took <= Duration::from_millis(200),
        "jitter is at most 50 ms: {took:?}"
    );
    let t = Instant::now();
    c.call("GET", "/__sim/stats", None, None).await;
    assert!(t.elapsed() < Duration::from_millis(150));
    sim.shutdown().await;
}

/// Real time, unlike the tests around it: on paused time every idle moment of the HTTP
/// exchanges below would jump the clock to a consumer's next tick, sliding the window by an
/// amount that depends on scheduling.
#[tokio::test]
async fn outside_consumer_spends_the_owner_budget() {
    let (sim, c) = start(SimConfig {
        burst_limit: 30,
        burst_window_ms: 500,
        ..config()
    })
    .await;
    sim.set_outside_consumer(PAT_APP, PORTAL, 20);
    let r = c
        .call(
            "POST",
            "/__sim/outside",
            None,
            Some(json!({ "app_id": OAUTH_APP, "portal_id": PORTAL, "per_window": 10 })),
        )
        .await;
    assert_eq!(r.status, 204);
    // One arrival more than a window holds: the oldest has left, so the window is full.
    wait_until(Duration::from_secs(10), || {
        let s = sim.stats();
        let outside = |app| s.owner(app, PORTAL).map_or(0, |o| o.outside);
        outside(PAT_APP) > 20 && outside(OAUTH_APP) > 10
    })
    .await;

    // About 20 outside arrivals sit in the window, so only about 10 of ours fit.
    let mut ok = 0;
    for _ in 0..30 {
        if c.get(LIST, PAT).await.status == 200 {
            ok += 1;
        }
    }
    assert!((5..=15).contains(&ok), "{ok} calls passed");

    let s = c.stats().await;
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert!(o.outside >= 18, "{o:?}");
    assert!(o.arrivals >= o.outside + 30);
    assert!(o.rate_limited.ten_secondly_rolling >= 15);
    let other = s.owner(OAUTH_APP, PORTAL).expect("outside-only owner");
    assert!(other.outside >= 8, "{other:?}");
    assert_eq!(s.totals.outside, o.outside + other.outside);
    sim.shutdown().await;
}

/// Paused time and no HTTP, so the consumers' schedule is exact: the first tick is at once,
/// then one every window/per_window (25 ms for 20 per window, 50 ms for 10).
#[tokio::test(start_paused = true)]
async fn outside_consumer_spreads_its_arrivals_and_stops_at_zero() {
    let (sim, _c) = start(SimConfig {
        burst_limit: 30,
        burst_window_ms: 500,
        ..config()
    })
    .await;
    let t0 = Instant::now();
    sim.set_outside_consumer(PAT_APP, PORTAL, 20);
    sim.set_outside_consumer(OAUTH_APP, PORTAL, 10);
    // A sleep, not `advance`: on paused time it lets each tick fire in turn, where one big
    // jump would fire a single (late) tick.
    tokio::time::sleep_until(t0 + Duration::from_millis(610)).await;

    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!((o.outside, o.arrivals, o.accepted), (25, 25, 25), "{o:?}");
    assert_eq!(o.outside_rate_limited, 0);
    assert_eq!(o.max_arrivals_in_window, 20, "evenly spread: 20 per window");
    let other = s.owner(OAUTH_APP, PORTAL).expect("outside-only owner");
    assert_eq!(other.outside, 13, "{other:?}");
    assert_eq!(other.max_arrivals_in_window, 10);
    assert_eq!(s.totals.outside, 38);

    sim.set_outside_consumer(PAT_APP, PORTAL, 0);
    sim.set_outside_consumer(OAUTH_APP, PORTAL, 0);
    let before = sim.stats().totals.outside;
    // Paused too: ten windows pass at no cost, and any consumer still running would tick.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    assert_eq!(sim.stats().totals.outside, before);
    sim.shutdown().await;
}
