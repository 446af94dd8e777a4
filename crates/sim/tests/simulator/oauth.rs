//! HubSpot's 2026 OAuth surface: the authorize stub, the token endpoint's grants and errors,
//! dated introspection and revocation, expiry, rotation, the token endpoint's own limit and
//! failures, its counters, and the v1 route switched off.

use std::time::Duration;

use http::Request;
use serde_json::{json, Value};

use crate::support::*;

const CLIENT: &str = "sim-client-3001";
const SECRET: &str = "sim-secret-3001";
const REDIRECT: &str = "http://127.0.0.1/oauth/callback";

async fn form(c: &Client, path: &str, fields: &[(&str, &str)]) -> Resp {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let req = Request::builder()
        .method("POST")
        .uri(format!("{}{path}", c.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full(body.join("&")))
        .expect("request");
    c.request(req).await
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn refresh(c: &Client, refresh_token: &str) -> Resp {
    form(
        c,
        "/oauth/2026-03/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn introspect(c: &Client, token: &str) -> Value {
    let r = form(
        c,
        "/oauth/2026-03/token/introspect",
        &[
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("token", token),
            ("token_type_hint", "access_token"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn install(c: &Client, hub_id: u64) -> Value {
    let r = c
        .call(
            "POST",
            "/__sim/oauth/install",
            None,
            Some(json!({ "app_id": OAUTH_APP, "hub_id": hub_id })),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn set_oauth(c: &Client, settings: Value) {
    let r = c.call("POST", "/__sim/oauth", None, Some(settings)).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}

async fn oauth_stats(c: &Client) -> Value {
    let r = c.call("GET", "/__sim/stats", None, None).await;
    assert_eq!(r.status, 200);
    r.json()["oauth"].clone()
}

fn install_stats(oauth: &Value, hub_id: u64) -> Value {
    oauth["installs"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["hub_id"] == hub_id))
        .cloned()
        .unwrap_or_else(|| panic!("no install of hub {hub_id} in {oauth}"))
}

#[tokio::test]
async fn the_install_flow_refresh_introspection_and_revocation() {
    let (_sim, c) = start(config()).await;
    let authorize = format!(
        "/oauth/authorize?client_id={CLIENT}&redirect_uri={}&scope=oauth%20crm.objects.contacts.read&state=xyz&hub_id=4242",
        encode(REDIRECT)
    );
    let r = c.call("GET", &authorize, None, None).await;
    assert_eq!(r.status, 302, "{:?}", String::from_utf8_lossy(&r.body));
    let location = r.header("location").expect("a redirect");
    let (back, query) = location.split_once('?').expect("a query");
    assert_eq!(back, REDIRECT);
    assert!(query.contains("state=xyz"), "{location}");
    let code = query
        .split('&')
        .find_map(|p| p.strip_prefix("code="))
        .expect("a code");
    let bad_redirect = c
        .call(
            "GET",
            &format!("/oauth/authorize?client_id={CLIENT}&redirect_uri=http%3A%2F%2Fevil"),
            None,
            None,
        )
        .await;
    assert_eq!(bad_redirect.status, 400);
    assert!(bad_redirect.header("location").is_none());

    let exchange = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("redirect_uri", REDIRECT),
        ("code", code),
    ];
    let r = form(&c, "/oauth/2026-03/token", &exchange).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let grant = r.json();
    assert_eq!(grant["hub_id"], 4242);
    assert_eq!(grant["expires_in"], 1800);
    assert_eq!(grant["token_type"], "bearer");
    let access = grant["access_token"].as_str().expect("access token");
    let refresh_token = grant["refresh_token"].as_str().expect("refresh token");
    assert!(!access.starts_with("pat-"), "{access}");

    let again = form(&c, "/oauth/2026-03/token", &exchange).await;
    assert_eq!(again.status, 400, "a code is single-use");
    assert_eq!(again.json()["error"], "invalid_grant");
    assert_eq!(again.json()["status"], "BAD_AUTH_CODE");

    let api = c.get("/crm/v3/objects/contacts", access).await;
    assert_eq!(api.status, 200);
    assert_eq!(
        c.stats().await.owner(OAUTH_APP, 4242).map(|o| o.accepted),
        Some(1),
        "an issued token bills its (app, portal)"
    );

    let info = introspect(&c, access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["hub_id"], 4242);
    assert_eq!(info["app_id"], OAUTH_APP);
    assert_eq!(info["token_use"], "access_token");
    assert!(info["expires_in"].as_u64().is_some_and(|s| s <= 1800));
    assert_eq!(info["signed_access_token"]["hubId"], 4242);
    assert_eq!(introspect(&c, "not-a-token").await["active"], false);

    let r = refresh(&c, refresh_token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["hub_id"], 4242);
    assert_eq!(
        r.json()["refresh_token"],
        refresh_token,
        "without rotation the refresh token stays"
    );
    assert_ne!(r.json()["access_token"], access);

    let wrong_secret = form(
        &c,
        "/oauth/2026-03/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT),
            ("client_secret", "wrong"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    assert_eq!(wrong_secret.status, 400);
    assert_eq!(wrong_secret.json()["error"], "invalid_client");
    assert_eq!(wrong_secret.json()["status"], "BAD_CLIENT_SECRET");
    let json_body = c
        .call(
            "POST",
            "/oauth/2026-03/token",
            None,
            Some(json!({"grant_type": "refresh_token"})),
        )
        .await;
    assert_eq!(json_body.status, 415);

    let revoke = form(
        &c,
        "/oauth/2026-03/token/revoke",
        &[
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("token", refresh_token),
        ],
    )
    .await;
    assert_eq!(revoke.status, 200);
    let r = refresh(&c, refresh_token).await;
    assert_eq!(r.status, 400);
    let body = r.json();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        body["error_description"],
        "refresh token is invalid, expired or revoked"
    );
    assert_eq!(body["status"], "BAD_REFRESH_TOKEN");
    assert_eq!(body["message"], body["error_description"]);

    let oauth = oauth_stats(&c).await;
    assert_eq!(oauth["token_calls"]["authorization_code"], 2);
    assert_eq!(oauth["token_calls"]["refresh_token"], 3);
    let hub = install_stats(&oauth, 4242);
    assert_eq!(hub["refreshes"], 1);
    assert_eq!(hub["active"], false);
}

#[tokio::test]
async fn expired_access_tokens_are_answered_401_expired_authentication() {
    let (_sim, c) = start(config()).await;
    set_oauth(&c, json!({ "access_token_lifetime_s": 1 })).await;
    let grant = install(&c, 5001).await;
    assert_eq!(grant["expires_in"], 1);
    let access = grant["access_token"].as_str().expect("access token");
    assert_eq!(c.get("/crm/v3/objects/contacts", access).await.status, 200);
    // Real time: the lifetime is in seconds of the simulator's clock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let r = c.get("/crm/v3/objects/contacts", access).await;
        if r.status != 200 {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(expired.status, 401);
    let body = expired.json();
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The OAuth token used to make this call expired")),
        "{body}"
    );
    assert!(body["context"]["expire time"].is_array(), "{body}");
    assert_eq!(introspect(&c, access).await["active"], false);
}

#[tokio::test]
async fn rotation_lets_one_of_concurrent_refreshes_win_and_stats_see_them_overlap() {
    let (_sim, c) = start(config()).await;
    set_oauth(
        &c,
        json!({ "rotate_refresh_tokens": true, "token_latency_ms": 400 }),
    )
    .await;
    let grant = install(&c, 6001).await;
    let first = grant["refresh_token"].as_str().expect("refresh token");
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            let token = first.to_string();
            tokio::spawn(async move { refresh(&c, &token).await })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = 0;
    for racer in racers {
        let r = racer.await.expect("racer");
        match r.status {
            200 => won.push(r.json()),
            400 => {
                assert_eq!(r.json()["error"], "invalid_grant");
                lost += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (won.len(), lost),
        (1, 3),
        "one redeemer wins under rotation"
    );
    let next = won[0]["refresh_token"].as_str().expect("rotated");
    assert_ne!(next, first);
    assert_eq!(refresh(&c, next).await.status, 200, "the new one works");
    assert_eq!(refresh(&c, first).await.status, 400, "the old one is gone");

    let hub = install_stats(&oauth_stats(&c).await, 6001);
    eprintln!("install after the race: {hub}");
    assert_eq!(hub["refresh_attempts"], 6);
    assert_eq!(hub["refreshes"], 2);
    assert_eq!(hub["stale_refreshes"], 4);
    assert!(
        hub["max_concurrent_refreshes"].as_u64() >= Some(2),
        "four refreshes held 400 ms each, sent at once, overlap: {hub}"
    );
}

#[tokio::test]
async fn the_token_endpoint_has_its_own_limit_and_injected_failures() {
    let (_sim, c) = start(config()).await;
    let grant = install(&c, 7001).await;
    let token = grant["refresh_token"].as_str().expect("refresh token");
    set_oauth(&c, json!({ "token_fail_next": 1 })).await;
    assert_eq!(refresh(&c, token).await.status, 503);
    assert_eq!(refresh(&c, token).await.status, 200);
    set_oauth(
        &c,
        json!({ "token_rate_limit": 2, "token_rate_window_ms": 60000 }),
    )
    .await;
    assert_eq!(refresh(&c, token).await.status, 200);
    assert_eq!(refresh(&c, token).await.status, 200);
    let limited = refresh(&c, token).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.json()["message"],
        "You have reached your rate limit."
    );
    assert!(limited.header("retry-after").is_some());
    let api = c.get("/crm/v3/objects/contacts", OAUTH).await;
    assert_eq!(api.status, 200, "the API's budgets are apart from it");

    let oauth = oauth_stats(&c).await;
    assert_eq!(oauth["token_errors"]["injected"], 1);
    assert_eq!(oauth["token_errors"]["rate_limited"], 1);
    let settings = c.call("GET", "/__sim/oauth", None, None).await.json();
    assert_eq!(settings["token_rate_limit"], 2);
    assert_eq!(settings["token_fail_next"], 0, "counted down");
    let bad = c
        .call("POST", "/__sim/oauth", None, Some(json!({"bogus": 1})))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn without_v1_oauth_only_dated_introspection_knows_tokens() {
    let (_sim, c) = start(config()).await;
    let path = format!("/oauth/v1/access-tokens/{OAUTH}");
    assert_eq!(c.call("GET", &path, None, None).await.status, 200);
    set_oauth(&c, json!({ "v1_oauth": false })).await;
    let gone = c.call("GET", &path, None, None).await;
    assert_eq!(gone.status, 404);
    assert!(
        !String::from_utf8_lossy(&gone.body).contains(OAUTH),
        "the token is not echoed"
    );
    let v1_token = form(&c, "/oauth/v1/token", &[("grant_type", "refresh_token")]).await;
    assert_eq!(v1_token.status, 404);
    let info = introspect(&c, OAUTH).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["hub_id"], PORTAL);
    let other_app = form(
        &c,
        "/oauth/2026-03/token/introspect",
        &[
            ("client_id", "sim-client-3002"),
            ("client_secret", "sim-secret-3002"),
            ("token", OAUTH),
        ],
    )
    .await;
    assert_eq!(
        other_app.json()["active"],
        false,
        "another app's credentials do not see the token"
    );
}

#[tokio::test]
async fn the_rust_handle_installs_and_steers_the_oauth_server() {
    let (sim, c) = start(config()).await;
    assert!(sim.oauth_install(9999, 1, &[]).is_err(), "unknown app");
    sim.set_oauth(hubgate_sim::OauthSettings {
        rotate_refresh_tokens: true,
        ..sim.oauth_settings()
    });
    let grant = sim
        .oauth_install(OAUTH_APP, 8001, &["oauth"])
        .expect("install");
    assert_eq!(grant.scopes, ["oauth"]);
    let r = refresh(&c, &grant.refresh_token).await;
    assert_ne!(r.json()["refresh_token"], grant.refresh_token.as_str());
    let stats = sim.stats().oauth;
    let install = stats.install(OAUTH_APP, 8001).expect("install stats");
    assert_eq!((install.refreshes, install.access_tokens_issued), (1, 2));
    assert_eq!(stats.token_calls.refresh_token, 1);
}
