//! The OAuth token broker against the simulator's 2026 token endpoints: installs imported
//! and installed through the browser flow, brokered calls that carry no token, refreshes
//! ahead of expiry one at a time, and an install whose refresh token dies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use hubgate::config::AppConfig;
use hubgate::Config;

use crate::support::{
    get, heavy_turn, json, metric_sum, send, sim_config, wait_for, Gateway, Hubspot,
};

pub(crate) const APP_ID: u64 = 3001;
const CLIENT_ID: &str = "broker-client";
const CLIENT_SECRET: &str = "broker-secret";
/// Registered with the app; HubSpot sends the browser there, which in these tests is the
/// gateway under test (the test follows the redirect to the gateway's own address).
const REDIRECT_URI: &str = "http://127.0.0.1/oauth/callback";

/// A simulator with one OAuth app whose access tokens live `lifetime_s`.
pub(crate) async fn oauth_sim(lifetime_s: u64, rotate: bool) -> Hubspot {
    Hubspot::start(sim_config(&format!(
        "burst_limit = 1000\n\
         [[apps]]\napp_id = {APP_ID}\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         redirect_uri = \"{REDIRECT_URI}\"\nscopes = [\"crm.objects.contacts.read\"]\n\
         [oauth]\naccess_token_lifetime_s = {lifetime_s}\nrotate_refresh_tokens = {rotate}\n"
    )))
    .await
}

/// A secret key for sealing installs (64 hex digits), only ever used by these tests.
const TEST_KEY: &str = "5b0c2f0f9a6e4d7c8b1a2e3f405162738495a6b7c8d9eaf00112233445566778";

/// Where one gateway's installs live: its database and key files, removed with it.
pub(crate) struct InstallFiles {
    dir: tempfile::TempDir,
}

impl InstallFiles {
    pub(crate) fn new() -> InstallFiles {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.key"), TEST_KEY).unwrap();
        InstallFiles { dir }
    }

    /// Points `config`'s `[oauth]` at these files.
    pub(crate) fn apply(&self, config: &mut Config) {
        config.oauth.store_path = self.dir.path().join("installs.redb").display().to_string();
        config.oauth.key_file = self.dir.path().join("secret.key").display().to_string();
    }
}

/// The gateway config's `[[apps]]` entry for the simulator's app, and `[oauth]`.
pub(crate) fn broker_config(config: &mut Config, sim: &Hubspot, files: &InstallFiles) {
    files.apply(config);
    config.apps = vec![AppConfig {
        app_id: APP_ID,
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uri: REDIRECT_URI.into(),
        scopes: vec!["crm.objects.contacts.read".into()],
        ..AppConfig::default()
    }];
    config.oauth.authorize_url = format!("{}/oauth/authorize", sim.base_url());
}

/// A refresh token for a fresh install of the app in `hub_id`, minted by the simulator.
pub(crate) async fn mint_refresh_token(sim: &Hubspot, hub_id: u64) -> String {
    let (status, _, body) = post_json(
        &format!("{}/__sim/oauth/install", sim.base_url()),
        serde_json::json!({"app_id": APP_ID, "hub_id": hub_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    json(&body)["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string()
}

pub(crate) async fn post_json(
    url: &str,
    body: serde_json::Value,
) -> (StatusCode, http::HeaderMap, Bytes) {
    send(
        Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

/// `POST /admin/installs`, answering the new install's JSON.
pub(crate) async fn import(gateway: &Gateway, refresh_token: &str) -> serde_json::Value {
    let (status, _, body) = post_json(
        &gateway.admin_url("/admin/installs"),
        serde_json::json!({"app_id": APP_ID, "refresh_token": refresh_token}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body:?}");
    json(&body)
}

/// A brokered call: the portal header and no token.
pub(crate) async fn brokered(gateway_url: String, portal: u64) -> (StatusCode, Bytes) {
    let (status, _, body) = send(
        Request::get(gateway_url)
            .header("x-hubgate-portal", portal.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    (status, body)
}

/// The simulator's stats for one install: (refreshes, most refreshes at once).
pub(crate) async fn sim_install_stats(sim: &Hubspot, hub_id: u64) -> (u64, u64) {
    let (_, _, body) = get(&format!("{}/__sim/stats", sim.base_url())).await;
    let stats = json(&body);
    let install = stats["oauth"]["installs"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|i| i["app_id"] == APP_ID && i["hub_id"] == hub_id)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no install {hub_id} in the stats: {stats}"));
    (
        install["refreshes"].as_u64().unwrap_or(0),
        install["max_concurrent_refreshes"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn brokered_calls_need_no_token_and_one_refresh_runs_at_a_time() {
    let _turn = heavy_turn().await;
    const LIFETIME_S: u64 = 4;
    const RUN: Duration = Duration::from_secs(12);
    let sim = oauth_sim(LIFETIME_S, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let refresh_token = mint_refresh_token(&sim, 1001).await;
    let install = import(&gateway, &refresh_token).await;
    assert_eq!(install["hub_id"], 1001, "{install}");
    let (listed_status, _, listed) = get(&gateway.admin_url("/admin/installs")).await;
    assert_eq!(listed_status, StatusCode::OK);
    assert!(
        !String::from_utf8_lossy(&listed).contains(&refresh_token),
        "the install list never shows a token"
    );
    let (before, _) = sim_install_stats(&sim, 1001).await;

    let failures = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let url = gateway.url("/crm/v3/objects/contacts");
            let (failures, calls) = (failures.clone(), calls.clone());
            tokio::spawn(async move {
                while started.elapsed() < RUN {
                    let (status, body) = brokered(url.clone(), 1001).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if status != StatusCode::OK {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("brokered call answered {status}: {body:?}");
                    }
                    // Paced so the run measures refreshes, not the burst limit.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let (after, most_at_once) = sim_install_stats(&sim, 1001).await;
    let refreshes = after - before;
    let expected = RUN.as_secs_f64() / (0.75 * LIFETIME_S as f64);
    eprintln!(
        "{} brokered calls, {} failed; {refreshes} refreshes (expected about {expected:.1}), at most {most_at_once} at once",
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no brokered call fails"
    );
    assert!(calls.load(Ordering::Relaxed) > 100);
    assert!(
        (expected * 0.5..=expected * 2.0 + 1.0).contains(&(refreshes as f64)),
        "{refreshes} refreshes in {RUN:?} of {LIFETIME_S} s tokens"
    );
    assert_eq!(
        most_at_once, 1,
        "never two refreshes of one install at once"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metric_sum(&metrics, "hubgate_oauth_refreshes_total{outcome=\"ok\"") >= refreshes as f64
    );
    assert_eq!(
        metric_sum(&metrics, "hubgate_oauth_installs{status=\"active\""),
        1.0
    );
}

#[tokio::test]
async fn the_install_flow_ends_in_an_install_its_callers_can_use() {
    let sim = oauth_sim(1800, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let (status, body) = brokered(gateway.url("/crm/v3/objects/contacts"), 1002).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    let refusal = json(&body);
    assert_eq!(refusal["category"], "HUBGATE_UNKNOWN_INSTALL");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains(&format!("/oauth/install/{APP_ID}")),
        "{refusal}"
    );

    let (status, headers, _) = get(&gateway.url(&format!("/oauth/install/{APP_ID}"))).await;
    assert_eq!(status, StatusCode::FOUND);
    let consent = headers[header::LOCATION].to_str().unwrap().to_string();
    assert!(
        consent.starts_with(&format!("{}/oauth/authorize?", sim.base_url())),
        "{consent}"
    );
    for part in [
        format!("client_id={CLIENT_ID}"),
        "state=".into(),
        "scope=crm.objects.contacts.read".into(),
    ] {
        assert!(consent.contains(&part), "{consent} has {part}");
    }
    // The simulator's consent screen is already accepted; hub_id picks the portal.
    let (status, headers, body) = get(&format!("{consent}&hub_id=1002")).await;
    assert_eq!(status, StatusCode::FOUND, "{body:?}");
    let back = headers[header::LOCATION].to_str().unwrap().to_string();
    let query = back
        .split_once('?')
        .expect("a code and state")
        .1
        .to_string();
    let callback = gateway.url(&format!("/oauth/callback?{query}"));
    let (status, _, page) = get(&callback).await;
    let page = String::from_utf8_lossy(&page).to_string();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("portal 1002"), "{page}");
    let (status, _, _) = get(&callback).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a state is single-use");

    let (status, body) = brokered(gateway.url("/crm/v3/objects/contacts"), 1002).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (_, _, listed) = get(&gateway.admin_url("/admin/installs")).await;
    let listed = json(&listed);
    assert_eq!(listed["installs"][0]["hub_id"], 1002, "{listed}");
    assert_eq!(listed["installs"][0]["status"], "active", "{listed}");

    let (status, _, body) = send(
        Request::delete(gateway.admin_url(&format!("/admin/installs/{APP_ID}/1002")))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, _) = brokered(gateway.url("/crm/v3/objects/contacts"), 1002).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a revoked install is forgotten"
    );
}

#[tokio::test]
async fn a_dead_refresh_token_asks_for_reauthorization() {
    let sim = oauth_sim(2, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let refresh_token = mint_refresh_token(&sim, 1003).await;
    import(&gateway, &refresh_token).await;
    let (status, _) = brokered(gateway.url("/crm/v3/objects/contacts"), 1003).await;
    assert_eq!(status, StatusCode::OK);
    // Revoked behind hubgate's back, as a portal admin uninstalling the app would.
    let (status, _, _) = send(
        Request::post(format!("{}/oauth/2026-03/token/revoke", sim.base_url()))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&token={refresh_token}&token_type_hint=refresh_token"
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    wait_for(
        "the install needs reauthorization",
        Duration::from_secs(15),
        || async {
            let (status, body) = brokered(gateway.url("/crm/v3/objects/contacts"), 1003).await;
            match status {
                StatusCode::UNAUTHORIZED => Ok(json(&body)),
                other => Err(format!("{other}")),
            }
        },
    )
    .await;
    let (_, body) = brokered(gateway.url("/crm/v3/objects/contacts"), 1003).await;
    let refusal = json(&body);
    assert_eq!(refusal["category"], "HUBGATE_REAUTH_REQUIRED", "{refusal}");
    let metrics = wait_for(
        "the gauge counts the install",
        Duration::from_secs(10),
        || async {
            let metrics = gateway.metrics().await;
            match metric_sum(&metrics, "hubgate_oauth_installs{status=\"needs_reauth\"") {
                1.0 => Ok(metrics),
                other => Err(format!("{other} installs need reauthorization")),
            }
        },
    )
    .await;
    assert!(
        metric_sum(
            &metrics,
            "hubgate_oauth_refreshes_total{outcome=\"invalid_grant\""
        ) >= 1.0
    );
    assert!(metric_sum(&metrics, "hubgate_oauth_reauth_refusals_total") >= 1.0);
}

#[tokio::test]
async fn an_expired_authentication_answer_is_refreshed_and_replayed_once() {
    let _turn = heavy_turn().await;
    let sim = oauth_sim(2, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let refresh_token = mint_refresh_token(&sim, 1004).await;
    import(&gateway, &refresh_token).await;
    // HubSpot's clock starts a token's life before hubgate receives it: with a slow token
    // endpoint, hubgate believes each token lives 1.5 s longer than HubSpot does, so calls
    // meet EXPIRED_AUTHENTICATION before hubgate's own refresh is due.
    let (status, _, body) = post_json(
        &format!("{}/__sim/oauth", sim.base_url()),
        serde_json::json!({"token_latency_ms": 1500}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let started = tokio::time::Instant::now();
    let mut failures = 0;
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let (status, body) = brokered(gateway.url("/crm/v3/objects/contacts"), 1004).await;
        calls += 1;
        if status != StatusCode::OK {
            failures += 1;
            eprintln!("brokered call answered {status}: {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = gateway.metrics().await;
    let expired_answers = metric_sum(
        &metrics,
        "hubgate_upstream_responses_total{status_class=\"4xx\"",
    );
    println!("{calls} calls, {failures} failed; HubSpot answered {expired_answers} 4xx (expired tokens), each replayed");
    assert!(expired_answers >= 1.0, "the run met expired tokens");
    assert_eq!(
        failures, 0,
        "every expired-token answer was replayed with a fresh token"
    );
}

#[tokio::test]
async fn keyed_callers_use_only_the_portals_their_entry_lists() {
    let sim = oauth_sim(1800, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| {
            broker_config(config, &sim, &files);
            config.inbound.require_caller_key = true;
            config.callers = vec![hubgate::config::CallerConfig {
                name: "sync".into(),
                weight: 1,
                max_rps: None,
                key_sha256: Some(hubgate::config::key_sha256("sync-key")),
                priorities: hubgate::config::default_priorities(),
                portals: vec![1005],
            }];
        })
        .await;
    for portal in [1005, 1006] {
        let refresh_token = mint_refresh_token(&sim, portal).await;
        import(&gateway, &refresh_token).await;
    }
    let call = |portal: u64| {
        Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header("x-hubgate-portal", portal.to_string())
            .header("x-hubgate-key", "sync-key")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (status, _, body) = send(call(1005)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, _, body) = send(call(1006)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:?}");
    assert_eq!(json(&body)["category"], "HUBGATE_FORBIDDEN");
}

#[tokio::test]
async fn a_failing_token_endpoint_is_waited_out_while_the_token_still_works() {
    let _turn = heavy_turn().await;
    let sim = oauth_sim(12, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| broker_config(config, &sim, &files))
        .await;
    let refresh_token = mint_refresh_token(&sim, 1007).await;
    import(&gateway, &refresh_token).await;
    let (before, _) = sim_install_stats(&sim, 1007).await;
    // The refresh due at 9 s meets a token endpoint answering 503 twice: the broker backs
    // off (at most 0.5 s, then 1 s) and serves the old token meanwhile.
    let (status, _, body) = post_json(
        &format!("{}/__sim/oauth", sim.base_url()),
        serde_json::json!({"token_fail_next": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let started = tokio::time::Instant::now();
    let mut failures = 0;
    while started.elapsed() < Duration::from_secs(13) {
        let (status, body) = brokered(gateway.url("/crm/v3/objects/contacts"), 1007).await;
        if status != StatusCode::OK {
            failures += 1;
            eprintln!("brokered call answered {status}: {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, stats) = get(&format!("{}/__sim/stats", sim.base_url())).await;
    let injected = json(&stats)["oauth"]["token_errors"]["injected"]
        .as_u64()
        .unwrap_or(0);
    let (after, _) = sim_install_stats(&sim, 1007).await;
    let metrics = gateway.metrics().await;
    println!(
        "{injected} token endpoint 503s waited out; {} refreshes, {failures} failed calls; broker outcomes unavailable {}",
        after - before,
        metric_sum(&metrics, "hubgate_oauth_refreshes_total{outcome=\"unavailable\"")
    );
    assert_eq!(injected, 2, "every injected failure was met");
    assert!(
        after > before,
        "the refresh got through once the endpoint recovered"
    );
    assert_eq!(
        failures, 0,
        "callers were served the still-valid token meanwhile"
    );
}

#[tokio::test]
async fn changing_installs_needs_the_admin_token_and_own_tokens_pass_untouched() {
    let sim = oauth_sim(1800, false).await;
    let files = InstallFiles::new();
    let gateway = sim
        .gateway(|config| {
            broker_config(config, &sim, &files);
            config.admin.token_sha256 = hubgate::config::key_sha256("admin-secret");
        })
        .await;
    let refresh_token = mint_refresh_token(&sim, 1008).await;
    let (status, _, _) = post_json(
        &gateway.admin_url("/admin/installs"),
        serde_json::json!({"app_id": APP_ID, "refresh_token": refresh_token}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no admin token, no import"
    );
    let (status, _, body) = send(
        Request::post(gateway.admin_url("/admin/installs"))
            .header(header::AUTHORIZATION, "Bearer admin-secret")
            .body(Full::new(Bytes::from(
                serde_json::json!({"app_id": APP_ID, "refresh_token": refresh_token}).to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body:?}");
    let (status, _, _) = send(
        Request::delete(gateway.admin_url(&format!("/admin/installs/{APP_ID}/1008")))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no admin token, no revoke"
    );
    // A caller's own credential wins over the portal header: it reaches HubSpot as sent.
    let (status, _, _) = send(
        Request::get(gateway.url("/crm/v3/objects/contacts"))
            .header("x-hubgate-portal", "1008")
            .header(header::AUTHORIZATION, "Bearer not-a-token-hubspot-knows")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "HubSpot's own 401 for the caller's token"
    );
}
