//! Observability through real sockets: budget and queue gauges while calls wait, bounded
//! owner labels, the admin budget API's shape, and no credential in anything the admin
//! listener says.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hubgate::Config;

const TOKEN: &str = "pat-na1-obs-secret-0123456789abcdef";

async fn ok_upstream() -> String {
    let addr = upstream(|_| async { Response::new(Full::new(Bytes::from_static(b"{}"))) }).await;
    format!("http://{addr}")
}

async fn call(gateway: &Gateway, token: &str) -> StatusCode {
    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(request).await.0
}

async fn admin_json(gateway: &Gateway, path: &str) -> (StatusCode, serde_json::Value, String) {
    let (status, headers, body) = get(&format!("http://{}{path}", gateway.admin)).await;
    assert_eq!(
        headers["content-type"], "application/json;charset=utf-8",
        "{path}"
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    (status, serde_json::from_str(&text).unwrap(), text)
}

#[tokio::test]
async fn gauges_and_admin_api_follow_a_queued_burst() {
    let base = ok_upstream().await;
    let gateway = Gateway::start(&base, |c: &mut Config| {
        c.budgets.burst_limit = 3;
        c.budgets.burst_window_ms = 1500;
        c.budgets.burst_margin_ms = 0;
        c.budgets.daily_limit = 1000;
        c.credentials = vec![known_owner(TOKEN, 7, 70)];
    })
    .await;
    for _ in 0..3 {
        assert_eq!(call(&gateway, TOKEN).await, StatusCode::OK);
    }
    // Two more wait for the window to slide.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let url = gateway.url("/crm/v3/objects/contacts");
            tokio::spawn(async move {
                let request = Request::get(url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                send(request).await.0
            })
        })
        .collect();
    gateway
        .wait_for_queue_depth(2.0, Duration::from_secs(1))
        .await;

    let text = gateway.metrics().await;
    let owner = [("app_id", "7"), ("portal_id", "70")];
    assert_eq!(
        sample(&text, "hubgate_queue_depth", &owner),
        Some(2.0),
        "{text}"
    );
    let burst = [("app_id", "7"), ("portal_id", "70"), ("budget", "burst")];
    assert_eq!(sample(&text, "hubgate_budget_used", &burst), Some(3.0));
    assert_eq!(sample(&text, "hubgate_budget_limit", &burst), Some(3.0));
    let daily = [("portal_id", "70"), ("budget", "daily")];
    assert_eq!(sample(&text, "hubgate_budget_used", &daily), Some(3.0));
    assert_eq!(sample(&text, "hubgate_budget_limit", &daily), Some(1000.0));
    // Portal-wide budgets carry no app id.
    assert!(text.contains(r#"app_id="",budget="daily""#), "{text}");
    let forecast = sample(
        &text,
        "hubgate_daily_exhaustion_forecast_seconds",
        &[("portal_id", "70")],
    )
    .expect("a forecast for a portal with a daily limit and calls today");
    assert!(forecast > 0.0, "{forecast}");
    assert_eq!(sample(&text, "hubgate_owners_active", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "hubgate_queue_max_wait_seconds", &[]),
        Some(30.0)
    );

    let (status, budgets, _) = admin_json(&gateway, "/admin/budgets").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(budgets["owners_active"], 1);
    let owners = budgets["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{budgets}");
    let owner = &owners[0];
    assert_eq!(owner["owner"], "7:70");
    assert_eq!(owner["app_id"], 7);
    assert_eq!(owner["portal_id"], 70);
    assert_eq!(owner["queue_depth"], 2);
    let now = budgets["now_unix_ms"].as_i64().unwrap();
    let burst = &owner["budgets"]["burst"];
    assert_eq!(burst["limit"], 3);
    assert_eq!(burst["used"], 3);
    assert_eq!(burst["remaining"], 0);
    let next_free = burst["next_free_unix_ms"].as_i64().unwrap();
    assert!(next_free > now && next_free <= now + 1500, "{burst}");
    assert_eq!(owner["budgets"]["search"], serde_json::Value::Null);
    let day = &owner["budgets"]["daily"];
    assert_eq!(day["limit"], 1000);
    assert_eq!(day["used"], 3);
    assert_eq!(day["remaining"], 997);
    assert_eq!(day["next_free_unix_ms"], now);
    let reset = day["resets_at_unix_ms"].as_i64().unwrap();
    assert!(reset > now && reset <= now + 86_400_000 && reset % 86_400_000 == 0);
    assert!(day["exhaustion_forecast_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(budgets["portals"][0]["portal_id"], 70);
    assert_eq!(budgets["portals"][0]["daily"]["used"], 3);

    let (status, one, _) = admin_json(&gateway, "/admin/owners/7:70").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["owner"], "7:70");
    assert_eq!(one["queue_depth"], 2);
    assert_eq!(one["budgets"]["burst"]["used"], 3);
    assert_eq!(one["budgets"]["daily"]["limit"], 1000);

    for call in waiting {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let text = gateway.metrics().await;
    assert_eq!(
        sample(&text, "hubgate_queue_depth", &owner_pair()),
        Some(0.0)
    );
    let waits = sample(
        &text,
        "hubgate_queue_wait_seconds_count",
        &[("lane", "normal")],
    );
    assert_eq!(waits, Some(5.0), "{text}");
    let waited = sample(
        &text,
        "hubgate_queue_wait_seconds_sum",
        &[("lane", "normal")],
    )
    .unwrap();
    assert!(
        waited > 2.0,
        "two calls waited over a second each: {waited}"
    );
    // A new owner's first call goes alone and the next two on its answer, a loopback
    // round trip later (see docs/pacing.md, the probe after a quiet spell).
    let fast = sample(
        &text,
        "hubgate_queue_wait_seconds_bucket",
        &[("lane", "normal"), ("le", "0.05")],
    );
    assert_eq!(fast, Some(3.0), "the first three went at once");
}

fn owner_pair() -> [(&'static str, &'static str); 2] {
    [("app_id", "7"), ("portal_id", "70")]
}

#[tokio::test]
async fn owners_beyond_max_owner_series_are_summed_under_other() {
    let base = ok_upstream().await;
    let tokens: Vec<String> = (1..=4).map(|i| format!("pat-na1-obs-owner-{i}")).collect();
    let gateway = Gateway::start(&base, |c: &mut Config| {
        c.metrics.max_owner_series = 2;
        c.budgets.daily_limit = 100;
        c.credentials = tokens
            .iter()
            .zip(1u64..)
            .map(|(t, i)| known_owner(t, i, 10 * i))
            .collect();
    })
    .await;
    for token in &tokens {
        assert_eq!(call(&gateway, token).await, StatusCode::OK);
    }
    let text = gateway.metrics().await;
    // The two lowest pairs, portal 10's daily ("", 10) and burst (1, 10), keep their own
    // series; the others' burst and daily budgets are summed.
    let used = |labels: &[(&str, &str)]| sample(&text, "hubgate_budget_used", labels);
    assert_eq!(
        used(&[("app_id", "1"), ("portal_id", "10"), ("budget", "burst")]),
        Some(1.0)
    );
    assert_eq!(used(&[("portal_id", "10"), ("budget", "daily")]), Some(1.0));
    let other = |budget| {
        [
            ("app_id", "other"),
            ("portal_id", "other"),
            ("budget", budget),
        ]
    };
    assert_eq!(used(&other("burst")), Some(3.0), "{text}");
    assert_eq!(used(&other("daily")), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, "hubgate_budget_limit", &other("burst")),
        Some(3.0 * 110.0)
    );
    for portal in ["20", "30", "40"] {
        assert!(
            !text
                .lines()
                .filter(|l| l.starts_with("hubgate_budget_"))
                .any(|l| l.contains(&format!("portal_id=\"{portal}\""))),
            "portal {portal} must be under other: {text}"
        );
    }
    // Queue depth: (1, 10) and (2, 20) keep theirs; the rest are summed.
    assert_eq!(
        sample(
            &text,
            "hubgate_queue_depth",
            &[("app_id", "other"), ("portal_id", "other")]
        ),
        Some(0.0)
    );
    let series = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count()
    };
    assert_eq!(series("hubgate_queue_depth"), 3, "{text}");
    assert_eq!(series("hubgate_budget_used"), 4, "{text}");
    assert_eq!(
        sample(
            &text,
            "hubgate_daily_exhaustion_forecast_seconds",
            &[("portal_id", "other")]
        )
        .map(|f| f > 0.0),
        Some(true),
        "{text}"
    );
}

#[tokio::test]
async fn admin_owner_lookups_and_nothing_leaks_a_token() {
    let base = ok_upstream().await;
    let gateway = Gateway::start(&base, |c: &mut Config| {
        c.credentials = vec![known_owner(TOKEN, 7, 70)];
    })
    .await;
    assert_eq!(call(&gateway, TOKEN).await, StatusCode::OK);
    // A call without credentials and one with an unknown token (HubSpot cannot be asked:
    // this upstream answers the lookup with "{}") make the other kinds of owners.
    assert_eq!(
        call(&gateway, "pat-na1-obs-unknown-fedcba9876543210")
            .await
            .as_u16()
            / 100,
        2
    );
    let request = Request::get(gateway.url("/crm/v3/objects/contacts?hapikey=hapi-secret-42"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(request).await;

    let (status, body, _) = admin_json(&gateway, "/admin/owners/1:1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["category"], "OBJECT_NOT_FOUND");
    for bad in [
        "/admin/owners/7",
        "/admin/owners/7:x",
        &format!("/admin/owners/{TOKEN}"),
    ] {
        let (status, body, text) = admin_json(&gateway, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert!(!text.contains(TOKEN));
    }
    let (status, _, _) = admin_json(&gateway, "/admin/owners/7:70").await;
    assert_eq!(status, StatusCode::OK);

    let (_, budgets, budgets_text) = admin_json(&gateway, "/admin/budgets").await;
    assert!(
        budgets["owners"].as_array().unwrap().len() >= 2,
        "{budgets}"
    );
    let metrics = gateway.metrics().await;
    for (what, text) in [("/metrics", &metrics), ("/admin/budgets", &budgets_text)] {
        for secret in [TOKEN, "obs-unknown", "hapi-secret", "/crm/v3"] {
            assert!(!text.contains(secret), "{what} contains {secret}: {text}");
        }
    }
}
