//! Outside consumers: steady, bursty and ramp patterns spending an owner's burst budget, and
//! how `POST /__sim/outside` accepts and rejects them.
//!
//! Pattern schedules are checked on paused time with no HTTP, where every tick lands exactly
//! when the consumer asked for it; HTTP exchanges run on real time (see the first test).

use std::time::Duration;

use crate::support::*;
use hubgate_sim::{OutsideConfig, OutsidePattern, SimConfig, SimStats};
use serde_json::json;
use tokio::time::Instant;

const LIST: &str = "/crm/v3/objects/contacts";

fn outside_of(s: &SimStats, app: u64) -> u64 {
    s.owner(app, PORTAL).map_or(0, |o| o.outside)
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

/// Paused time: blocks land at 0 and 400 ms exactly, so by 450 ms there are two of them.
#[tokio::test(start_paused = true)]
async fn bursty_consumer_lands_whole_blocks() {
    let (sim, _c) = start(SimConfig {
        burst_limit: 100,
        burst_window_ms: 1000,
        ..config()
    })
    .await;
    let t0 = Instant::now();
    sim.set_outside(OutsideConfig {
        pattern: OutsidePattern::Bursty { every_ms: 400 },
        ..OutsideConfig::steady(PAT_APP, PORTAL, 5)
    });

    tokio::time::sleep_until(t0 + Duration::from_millis(10)).await;
    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!((o.outside, o.max_arrivals_in_window), (5, 5), "{o:?}");

    tokio::time::sleep_until(t0 + Duration::from_millis(450)).await;
    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!(o.outside, 10, "two blocks: {o:?}");
    assert_eq!(o.max_arrivals_in_window, 10, "both in one 1 s window");
    assert_eq!(o.outside_rate_limited, 0);
    sim.shutdown().await;
}

/// A block is one instant: five at once against a limit of 3 overflow the window at once,
/// where a steady consumer of 5 per window would never hold more than 5 / 2 of them.
#[tokio::test(start_paused = true)]
async fn a_bursty_block_overflows_a_small_limit_at_once() {
    let (sim, _c) = start(SimConfig {
        burst_limit: 3,
        burst_window_ms: 1000,
        ..config()
    })
    .await;
    sim.set_outside(OutsideConfig {
        pattern: OutsidePattern::Bursty { every_ms: 10_000 },
        ..OutsideConfig::steady(PAT_APP, PORTAL, 5)
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!((o.outside, o.accepted, o.outside_rate_limited), (5, 3, 2));
    sim.shutdown().await;
}

/// Paused time. 40 per 1 s window at the peak, 500 ms up and 500 ms down: the triangle's
/// area is 40 × 0.5 = 20 arrivals, 10 of them by the peak, and none after 1 s.
#[tokio::test(start_paused = true)]
async fn ramp_consumer_rises_falls_and_finishes() {
    let (sim, _c) = start(SimConfig {
        burst_limit: 100,
        burst_window_ms: 1000,
        ..config()
    })
    .await;
    let t0 = Instant::now();
    sim.set_outside(OutsideConfig {
        pattern: OutsidePattern::Ramp { ramp_ms: 500 },
        ..OutsideConfig::steady(PAT_APP, PORTAL, 40)
    });
    let sim_ref = &sim;
    let at = |ms| async move {
        tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
        outside_of(&sim_ref.stats(), PAT_APP)
    };
    // Due by then: 2.5, 10, 17.5 (the integral); a tick may land a millisecond late.
    let quarter = at(250).await;
    assert!((1..=3).contains(&quarter), "slow start: {quarter}");
    let peak = at(500).await;
    assert!((9..=10).contains(&peak), "half by the peak: {peak}");
    let three_quarters = at(750).await;
    assert!((16..=17).contains(&three_quarters), "{three_quarters}");
    let done = at(1300).await;
    assert_eq!(done, 20, "the whole triangle");
    assert_eq!(
        at(1600).await,
        done,
        "finished: no arrival after 2 × ramp_ms"
    );
    sim.shutdown().await;
}

#[tokio::test]
#[should_panic(expected = "every_ms > 0")]
async fn set_outside_refuses_an_invalid_pattern() {
    let (sim, _c) = start(config()).await;
    sim.set_outside(OutsideConfig {
        pattern: OutsidePattern::Bursty { every_ms: 0 },
        ..OutsideConfig::steady(PAT_APP, PORTAL, 5)
    });
}

/// Real time: HTTP all the way.
#[tokio::test]
async fn post_outside_takes_patterns_and_rejects_bad_ones() {
    let (sim, c) = start(SimConfig {
        burst_window_ms: 1000,
        ..config()
    })
    .await;
    let owner = json!({ "app_id": PAT_APP, "portal_id": PORTAL, "per_window": 5 });
    let with = |extra: serde_json::Value| {
        let mut body = owner.clone();
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    for (extra, says) in [
        (json!({ "pattern": "bursty" }), "every_ms"),
        (
            json!({ "pattern": "bursty", "every_ms": 0 }),
            "every_ms > 0",
        ),
        (json!({ "pattern": "ramp" }), "ramp_ms"),
        (json!({ "pattern": "ramp", "ramp_ms": 0 }), "ramp_ms > 0"),
        (json!({ "every_ms": 400 }), "every_ms"),
        (json!({ "pattern": "sawtooth" }), "sawtooth"),
    ] {
        let r = c
            .call("POST", "/__sim/outside", None, Some(with(extra.clone())))
            .await;
        assert_eq!(r.status, 400, "{extra}");
        let message = r.json()["message"].as_str().expect("message").to_string();
        assert!(message.contains(says), "{extra}: {message}");
    }
    assert_eq!(sim.stats().totals.outside, 0, "nothing rejected started");

    let r = c
        .call(
            "POST",
            "/__sim/outside",
            None,
            Some(with(json!({ "pattern": "bursty", "every_ms": 60_000 }))),
        )
        .await;
    assert_eq!(r.status, 204);
    wait_until(Duration::from_secs(5), || {
        outside_of(&sim.stats(), PAT_APP) == 5
    })
    .await;
    assert_eq!(
        sim.stats()
            .owner(PAT_APP, PORTAL)
            .expect("owner")
            .max_arrivals_in_window,
        5
    );
    // The old shape, without `pattern`, still means steady.
    let r = c.call("POST", "/__sim/outside", None, Some(owner)).await;
    assert_eq!(r.status, 204);
    wait_until(Duration::from_secs(5), || {
        outside_of(&sim.stats(), PAT_APP) > 5
    })
    .await;
    sim.shutdown().await;
}
