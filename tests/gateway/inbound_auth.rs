//! `[inbound] require_caller_key` through a real gateway and simulator on loopback: calls
//! without a known key are refused before HubSpot hears anything (no call, no token
//! lookup), a key names its caller, the key never travels upstream, and with the setting
//! off nothing changes.

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hubgate::config::{key_sha256, CallerConfig};
use hubgate::Config;
use hubgate_sim::{SimConfig, Simulator};

const SYNC_KEY: &str = "hgk-sync-7f3a9c2e51d84b06a1e2";
const WEB_KEY: &str = "hgk-web-0c5d8e1f2a3b4c5d6e7f";
const TOKEN: &str = "oauth-sim-1";

/// The simulator's defaults with one generated token pair (`oauth-sim-1` is app 3001).
async fn one_token_simulator() -> Simulator {
    simulator(SimConfig {
        generate_tokens: 1,
        ..SimConfig::default()
    })
    .await
}

/// `sync` is capped at one call per second, so a refusal naming it shows whose name a
/// call carried; `web` is not capped.
fn require_keys(config: &mut Config) {
    config.inbound.require_caller_key = true;
    config.inbound.key_header = "X-Hubgate-Key".into();
    config.callers = vec![
        CallerConfig {
            name: "sync".into(),
            weight: 1,
            max_rps: Some(1),
            key_sha256: Some(key_sha256(SYNC_KEY)),
            priorities: hubgate::config::default_priorities(),
            portals: Vec::new(),
        },
        CallerConfig {
            name: "web".into(),
            weight: 1,
            max_rps: None,
            key_sha256: Some(key_sha256(WEB_KEY)),
            priorities: hubgate::config::default_priorities(),
            portals: Vec::new(),
        },
    ];
}

async fn call(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request =
        Request::get(gateway.url(path)).header("authorization", format!("Bearer {TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await
}

/// The header names the upstream received, from the simulator's echo route.
fn echoed_header_names(body: &Bytes) -> Vec<String> {
    json(body)["headers"]
        .as_array()
        .expect("echo lists headers")
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn calls_without_a_known_key_are_refused_before_hubspot_hears_of_them() {
    let sim = one_token_simulator().await;
    let gateway = Gateway::start(&sim.base_url(), require_keys).await;

    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("no key", &[]),
        (
            "wrong key",
            &[("x-hubgate-key", "hgk-sync-7f3a9c2e51d84b06a1e3")],
        ),
        (
            "two keys",
            &[("x-hubgate-key", SYNC_KEY), ("x-hubgate-key", WEB_KEY)],
        ),
    ];
    for (case, headers) in cases {
        let (status, response_headers, body) =
            call(&gateway, "/crm/v3/objects/contacts", headers).await;
        let error =
            assert_hubspot_error(status, &response_headers, &body, StatusCode::UNAUTHORIZED);
        assert_eq!(error["category"], "HUBGATE_UNAUTHORIZED", "{case}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("X-Hubgate-Key"), "{case}: {message}");
        assert!(!message.contains(SYNC_KEY), "{case}: key echoed: {message}");
    }

    let stats = sim.stats();
    assert_eq!(stats.totals.requests, 0, "nothing reached the upstream");
    assert_eq!(stats.introspection.total, 0, "no token was looked up");
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="unauthorized"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_identity_lookups_total{result="introspected"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("hubgate_budget_used{"),
        "no budget was touched:\n{metrics}"
    );
}

#[tokio::test]
async fn a_known_key_is_served_as_its_caller_and_never_sent_upstream() {
    let sim = one_token_simulator().await;
    // A key header outside X-Hubgate-* (which is never forwarded anyway), so this shows
    // the key itself is taken off the call.
    let gateway = Gateway::start(&sim.base_url(), |config| {
        require_keys(config);
        config.inbound.key_header = "X-Team-Key".into();
    })
    .await;

    let (status, _, body) = call(
        &gateway,
        "/crm/v3/objects/contacts",
        &[("x-team-key", WEB_KEY)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let stats = sim.stats();
    assert_eq!(stats.owner(3001, 1001).map(|o| o.accepted), Some(1));

    let (status, _, body) = call(&gateway, "/__sim/echo/x", &[("x-team-key", WEB_KEY)]).await;
    assert_eq!(status, StatusCode::OK);
    let names = echoed_header_names(&body);
    assert!(names.contains(&"authorization".to_string()), "{names:?}");
    assert!(
        !names.contains(&"x-team-key".to_string()),
        "the caller key went upstream: {names:?}"
    );
    let (status, _, _) = call(
        &gateway,
        "/crm/v3/objects/contacts",
        &[("x-hubgate-key", WEB_KEY)],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "only the configured header counts"
    );

    // Calls with sync's key are sync's, whatever X-Hubgate-Caller would have said: its
    // cap of one per second refuses most of a quick burst, by name.
    let burst = (0..5).map(|_| {
        call(
            &gateway,
            "/crm/v3/objects/contacts",
            &[("x-team-key", SYNC_KEY)],
        )
    });
    let answers = futures_util::future::join_all(burst).await;
    let capped: Vec<serde_json::Value> = answers
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, _, body)| json(body))
        .collect();
    assert!(!capped.is_empty(), "sync's cap applied to its key's calls");
    assert!(capped[0]["message"].as_str().unwrap().contains("'sync'"));

    // web's key with no cap: never capped, even in a burst.
    let burst = (0..5).map(|_| {
        call(
            &gateway,
            "/crm/v3/objects/contacts",
            &[("x-team-key", WEB_KEY)],
        )
    });
    for (status, _, body) in futures_util::future::join_all(burst).await {
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }

    // A key cannot be combined with another caller's name.
    let (status, headers, body) = call(
        &gateway,
        "/crm/v3/objects/contacts",
        &[("x-team-key", WEB_KEY), ("x-hubgate-caller", "sync")],
    )
    .await;
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("does not match"));
}

#[tokio::test]
async fn with_keys_not_required_nothing_changes() {
    let sim = one_token_simulator().await;
    let gateway = Gateway::start(&sim.base_url(), |config| {
        // Keys may be configured ahead of switching them on; they are not checked yet.
        require_keys(config);
        config.inbound.require_caller_key = false;
    })
    .await;

    let (status, _, _) = call(&gateway, "/crm/v3/objects/contacts", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        &gateway,
        "/crm/v3/objects/contacts",
        &[("x-hubgate-key", "not-a-key")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.stats().introspection.total, 1, "one token, one lookup");
}
