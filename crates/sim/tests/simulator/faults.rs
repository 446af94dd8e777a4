//! Fault injection: transit and answer latency, the arrival queue, 5xx answers and drops.

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

fn arrivals(sim: &hubgate_sim::Simulator) -> u64 {
    sim.stats().owner(PAT_APP, PORTAL).map_or(0, |o| o.arrivals)
}

/// Real time, like the HTTP tests below: the request is in flight while the test watches.
/// Nothing can count it before its 600 ms of transit are over, however slow the machine.
#[tokio::test]
async fn transit_latency_delays_the_arrival() {
    let (sim, c) = start(SimConfig {
        faults: Faults {
            latency_ms: 600,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let t = Instant::now();
    let call = tokio::spawn(async move { c.get(LIST, PAT).await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(arrivals(&sim), 0, "still on its way");
    assert_eq!(call.await.expect("call"), 200);
    assert!(t.elapsed() >= Duration::from_millis(600));
    assert_eq!(arrivals(&sim), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn answer_latency_comes_after_the_arrival_is_counted() {
    let (sim, c) = start(config()).await;
    let r = c
        .call(
            "POST",
            "/__sim/faults",
            None,
            Some(json!({ "answer_latency_ms": 800 })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["answer_latency_ms"], 800);
    assert_eq!(r.json()["arrival_service_us"], 0, "defaults when left out");

    let t = Instant::now();
    let call = {
        let c = c.clone();
        tokio::spawn(async move { c.get(LIST, PAT).await.status })
    };
    wait_until(Duration::from_secs(5), || arrivals(&sim) == 1).await;
    let counted = t.elapsed();
    assert!(
        !call.is_finished(),
        "counted at {counted:?}, answer still out"
    );
    assert_eq!(call.await.expect("call"), 200);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(counted < took, "{counted:?} vs {took:?}");
    sim.shutdown().await;
}

/// Real time: 20 calls sent at once leave a 20 ms-per-call queue one by one, so the last is
/// counted (and answered) at least 19 × 20 ms after the first, and a 100 ms window never
/// holds them all.
#[tokio::test]
async fn arrival_queue_spreads_a_burst_over_time() {
    let (sim, c) = start(SimConfig {
        burst_limit: 100,
        burst_window_ms: 100,
        faults: Faults {
            arrival_service_us: 20_000,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let t = Instant::now();
    let calls = (0..20).map(|_| {
        let c = c.clone();
        async move { c.get(LIST, PAT).await.status }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let took = t.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(took >= Duration::from_millis(380), "{took:?}");
    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!(o.arrivals, 20);
    // About 5 per 100 ms; a stalled runtime may bunch a few, never all 20.
    assert!(o.max_arrivals_in_window <= 12, "{o:?}");
    // Control routes skip the queue.
    let t = Instant::now();
    c.call("GET", "/__sim/health", None, None).await;
    assert!(t.elapsed() < Duration::from_millis(380));
    sim.shutdown().await;
}
