//! Rate-limit behaviour of the simulator: burst, search, daily, exemptions, stats and reset.
//!
//! Tests whose assertions depend on when requests arrive run on tokio's paused clock, which
//! the simulator's windows follow: no request and no window edge depends on machine load.
//! Paused time only moves when a test moves it, since nothing else here sets a timer.

use std::time::Duration;

use crate::support::*;
use hubgate_sim::SimConfig;
use serde_json::json;

const LIST: &str = "/crm/v3/objects/contacts";

#[tokio::test(start_paused = true)]
async fn burst_window_rejects_exactly_and_slides() {
    let (sim, c) = start(SimConfig {
        burst_limit: 10,
        burst_window_ms: 1000,
        ..config()
    })
    .await;
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..15 {
        let r = c.get(LIST, PAT).await;
        match r.status {
            200 => ok += 1,
            429 => limited.push(r),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(limited.len(), 5);
    let r = &limited[0];
    let b = r.json();
    assert_eq!(b["status"], "error");
    assert_eq!(
        b["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(b["errorType"], "RATE_LIMIT");
    assert_eq!(b["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(b["groupName"].as_str().expect("groupName").contains("1001"));
    let corr = b["correlationId"].as_str().expect("correlationId");
    assert!(!corr.is_empty());
    assert_eq!(r.header("x-hubspot-correlation-id").as_deref(), Some(corr));
    assert_eq!(r.header("x-hubspot-ratelimit-max").as_deref(), Some("10"));
    assert_eq!(
        r.header("x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        r.header("x-hubspot-ratelimit-interval-milliseconds")
            .as_deref(),
        Some("1000")
    );

    // Another app in the same portal has its own burst budget.
    assert_eq!(c.get(LIST, OAUTH).await.status, 200);

    tokio::time::advance(Duration::from_millis(1100)).await;
    let r = c.get(LIST, PAT).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-hubspot-ratelimit-remaining").as_deref(),
        Some("9")
    );

    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!(o.arrivals, 16);
    assert_eq!(o.accepted, 11);
    assert_eq!(o.rate_limited.ten_secondly_rolling, 5);
    assert_eq!(o.max_arrivals_in_window, 15);
    assert_eq!(o.max_accepted_in_window, 10);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rejected_arrivals_count_against_the_window() {
    let (sim, c) = start(SimConfig {
        burst_limit: 2,
        burst_window_ms: 800,
        ..config()
    })
    .await;
    let t0 = tokio::time::Instant::now();
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    advance_to(t0 + Duration::from_millis(400)).await;
    assert_eq!(c.get(LIST, PAT).await.status, 429);
    // The two accepted calls have left the window; the rejected one has not.
    advance_to(t0 + Duration::from_millis(850)).await;
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    let r = c.get(LIST, PAT).await;
    assert_eq!(
        r.status, 429,
        "only 1 accepted call is in the window, so the rejected arrival must be counting"
    );
    assert_eq!(
        tokio::time::Instant::now() - t0,
        Duration::from_millis(850),
        "only the test moves paused time: the requests set no timer that would advance it"
    );
    let o = sim.stats().owner(PAT_APP, PORTAL).cloned().expect("owner");
    assert_eq!((o.arrivals, o.accepted), (5, 3));
    assert_eq!(o.rate_limited.ten_secondly_rolling, 2);
    assert_eq!(o.max_arrivals_in_window, 3);
    assert_eq!(o.max_accepted_in_window, 2);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn search_has_its_own_per_portal_secondly_limit_and_no_headers() {
    let (sim, c) = start(SimConfig {
        burst_limit: 2,
        search_limit: 3,
        search_window_ms: 1000,
        ..config()
    })
    .await;
    let body = json!({ "filterGroups": [], "limit": 10 });
    let paths = [
        "/crm/v3/objects/contacts/search",
        "/crm/objects/2025-09/contacts/search",
        "/crm/objects/2026-03-beta/deals/search",
    ];
    let mut statuses = Vec::new();
    for i in 0..5 {
        // The OAuth app shares the portal's search budget with the private app.
        let token = if i % 2 == 0 { PAT } else { OAUTH };
        let r = c
            .call("POST", paths[i % 3], Some(token), Some(body.clone()))
            .await;
        assert!(
            r.rate_headers().is_empty(),
            "search answered with {:?}",
            r.rate_headers()
        );
        assert!(r.header("x-hubspot-correlation-id").is_some());
        if r.status == 429 {
            let b = r.json();
            assert_eq!(b["policyName"], "SECONDLY");
            assert_eq!(b["message"], "You have reached your secondly limit.");
            assert_eq!(b["errorType"], "RATE_LIMIT");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    // Searches are exempt from the burst window: burst_limit 2 is untouched.
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    assert_eq!(c.get(LIST, PAT).await.status, 200);

    let s = c.stats().await;
    let sp = s.search_portal(PORTAL).expect("search stats");
    assert_eq!((sp.arrivals, sp.accepted, sp.rate_limited), (5, 3, 2));
    assert_eq!(sp.max_in_window, 5);
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!(o.arrivals, 2);
    assert_eq!(o.rate_limited.secondly, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn daily_limit_applies_to_private_apps_only() {
    let (sim, c) = start(SimConfig {
        daily_limit: 3,
        ..config()
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let r = c.get(LIST, PAT).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-hubspot-ratelimit-daily").as_deref(), Some("3"));
        assert_eq!(
            r.header("x-hubspot-ratelimit-daily-remaining").as_deref(),
            Some(remaining)
        );
    }
    let r = c.get(LIST, PAT).await;
    assert_eq!(r.status, 429);
    let b = r.json();
    assert_eq!(b["policyName"], "DAILY");
    assert_eq!(b["message"], "You have reached your daily limit.");
    assert!(b["groupName"].as_str().expect("groupName").contains("1001"));

    for _ in 0..5 {
        let r = c.get(LIST, OAUTH).await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-hubspot-ratelimit-max").is_some());
        assert!(r.header("x-hubspot-ratelimit-daily").is_none());
        assert!(r.header("x-hubspot-ratelimit-daily-remaining").is_none());
    }
    let s = sim.stats();
    assert_eq!(
        s.owner(PAT_APP, PORTAL).expect("owner").rate_limited.daily,
        1
    );
    assert_eq!(s.daily[0].portal_id, PORTAL);
    assert_eq!(s.daily[0].used, 4);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exempt_paths_skip_the_burst_window() {
    let (sim, c) = start(SimConfig {
        burst_limit: 1,
        ..config()
    })
    .await;
    for _ in 0..4 {
        let r = c
            .call(
                "POST",
                "/crm/v4/associations/contacts/companies/batch/read",
                Some(PAT),
                Some(json!({ "inputs": [] })),
            )
            .await;
        assert_ne!(r.status, 429);
        assert_eq!(r.header("x-hubspot-ratelimit-max").as_deref(), Some("1"));
    }
    for _ in 0..3 {
        let r = c
            .call("POST", "/events/v3/send", Some(PAT), Some(json!({})))
            .await;
        assert_eq!(r.status, 204);
    }
    assert_eq!(c.get(LIST, PAT).await.status, 200);
    assert_eq!(c.get(LIST, PAT).await.status, 429);
    let s = sim.stats();
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!(o.exempt, 7);
    assert_eq!(o.arrivals, 2);
    // Associations batch calls are not daily-exempt, the events endpoint is.
    assert_eq!(s.daily[0].used, 6);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_or_missing_token_is_401_and_sim_routes_need_none() {
    let (sim, c) = start(config()).await;
    for token in [Some("pat-na1-nope"), None] {
        let r = c.call("GET", LIST, token, None).await;
        assert_eq!(r.status, 401);
        let b = r.json();
        assert_eq!(b["status"], "error");
        assert_eq!(b["category"], "INVALID_AUTHENTICATION");
        assert!(b["message"]
            .as_str()
            .expect("message")
            .starts_with("Authentication credentials not found"));
        assert!(!b["correlationId"].as_str().expect("corr").is_empty());
        assert!(r.header("x-hubspot-correlation-id").is_some());
        assert!(r.rate_headers().is_empty());
    }
    assert_eq!(c.call("GET", "/__sim/health", None, None).await.status, 200);
    assert_eq!(sim.stats().totals.unauthorized, 2);
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stats_over_http_and_reset() {
    let (sim, c) = start(SimConfig {
        burst_limit: 3,
        ..config()
    })
    .await;
    let created = c
        .call(
            "POST",
            LIST,
            Some(PAT),
            Some(json!({ "properties": { "email": "a@example.com" } })),
        )
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().expect("id").to_string();
    for _ in 0..4 {
        c.get(LIST, PAT).await;
    }
    let s = c.stats().await;
    let o = s.owner(PAT_APP, PORTAL).expect("owner");
    assert_eq!(o.max_arrivals_in_window, 5);
    assert_eq!(o.max_accepted_in_window, 3);
    assert_eq!(o.rate_limited.ten_secondly_rolling, 2);
    assert_eq!(s.totals.requests, 5);
    assert_eq!(s, sim.stats());

    let r = c.call("POST", "/__sim/reset", None, None).await;
    assert_eq!(r.status, 204);
    let s = c.stats().await;
    assert!(s.owners.is_empty());
    assert_eq!(s.totals.requests, 0);
    // Windows are cleared too, so the owner may call again at once; the store is empty.
    let r = c.get(&format!("{LIST}/{id}"), PAT).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "resource not found");
    sim.reset();
    assert!(sim.stats().owners.is_empty());
    sim.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn config_file_tokens_overrides_and_hapikeys() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("sim.toml");
    std::fs::write(
        &path,
        r#"
burst_limit = 50
daily_limit = 0

[[tokens]]
token = "pat-na1-custom"
app_id = 77
portal_id = 88
kind = "private"
burst_limit = 2
daily_limit = 10
hub_domain = "custom.hubspot.com"

[[tokens]]
token = "oauth-custom"
app_id = 78
portal_id = 88
kind = "oauth"

[[hapikeys]]
key = "hk-1"
portal_id = 88
app_id = 79
"#,
    )
    .expect("write");
    let cfg = SimConfig::from_toml_file(&path).expect("parse");
    let (sim, c) = start(cfg).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(c.get(LIST, "pat-na1-custom").await.status);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 429]);
    let r = c.get(LIST, "oauth-custom").await;
    assert_eq!(r.header("x-hubspot-ratelimit-max").as_deref(), Some("50"));
    let r = c
        .call("GET", "/oauth/v1/access-tokens/oauth-custom", None, None)
        .await;
    assert_eq!(r.json()["hub_id"], 88);
    let r = c
        .call("GET", &format!("{LIST}?hapikey=hk-1"), None, None)
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call("GET", &format!("{LIST}?hapikey=nope"), None, None)
        .await;
    assert_eq!(r.status, 401);
    let s = sim.stats();
    assert_eq!(s.owner(79, 88).expect("hapikey owner").arrivals, 1);
    assert_eq!(
        s.daily.iter().find(|d| d.portal_id == 88).map(|d| d.limit),
        Some(10)
    );
    std::fs::write(&path, "burst_limit = 5\nnot_a_key = 1\n").expect("write");
    assert!(SimConfig::from_toml_file(&path).is_err());
    sim.shutdown().await;
}
