//! Credentials never leave hubgate except towards HubSpot: distinctive tokens, API keys and
//! caller keys pushed through the real binary (debug logs on) must not appear in its logs,
//! in `/metrics` or in any `/admin/*` answer — not even as a full SHA-256; short hashes
//! (a few bytes) are all an operator gets.

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hubgate::config::key_sha256;
use sha2::{Digest, Sha256};

/// A private-app token the simulator knows: introspected, then budgeted as 4242:4343.
const KNOWN_TOKEN: &str = "pat-na1-leakcheck-known-5f1e2d3c4b5a";
/// An OAuth token the simulator rejects.
const REJECTED_TOKEN: &str = "leakcheck-oauth-rejected-8a7b6c5d4e3f";
const HAPIKEY: &str = "leakcheck-hapikey-1b2c3d4e5f60";
const PATH_TOKEN: &str = "leakcheck-path-token-99aa88bb77cc";
const REFRESH_TOKEN: &str = "leakcheck-refresh-token-0f0e0d0c";
const CALLER_KEY: &str = "leakcheck-caller-key-6e5d4c3b2a19";
const WRONG_CALLER_KEY: &str = "leakcheck-wrong-caller-key-13579b";

async fn call(url: String, headers: &[(&str, &str)]) -> (StatusCode, Bytes) {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, _, body) = send(request.body(Full::new(Bytes::new())).unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn tokens_and_keys_appear_nowhere_an_operator_looks() {
    let sim = simulator(sim_config(&format!(
        "[[tokens]]\ntoken = \"{KNOWN_TOKEN}\"\napp_id = 4242\nportal_id = 4343\n\
         [[hapikeys]]\nkey = \"{HAPIKEY}\"\nportal_id = 4343\n"
    )))
    .await;
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}\
         [upstream]\nbase_url = \"{}\"\n\
         [inbound]\nrequire_caller_key = true\n\
         [[callers]]\nname = \"leak-test\"\nkey_sha256 = \"{}\"\n\
         [log]\nformat = \"json\"\nlevel = \"debug\"\n",
        sim.base_url(),
        key_sha256(CALLER_KEY)
    ));
    let mut command = hubgate();
    command.args(["--config", config.path().to_str().unwrap()]);
    let child = HubgateProcess::start(command);

    let proxy = child.url("");
    let key = ("x-hubgate-key", CALLER_KEY);
    let known = format!("Bearer {KNOWN_TOKEN}");
    let rejected = format!("Bearer {REJECTED_TOKEN}");
    let answers = [
        call(
            format!("{proxy}/crm/v3/objects/contacts"),
            &[key, ("authorization", &known)],
        )
        .await,
        call(
            format!("{proxy}/crm/v3/objects/contacts"),
            &[key, ("authorization", &rejected)],
        )
        .await,
        call(
            format!("{proxy}/crm/v3/objects/contacts?hapikey={HAPIKEY}"),
            &[key],
        )
        .await,
        call(
            format!("{proxy}/oauth/v1/access-tokens/{PATH_TOKEN}?refresh_token={REFRESH_TOKEN}"),
            &[key],
        )
        .await,
        call(
            format!("{proxy}/crm/v3/objects/contacts"),
            &[
                ("x-hubgate-key", WRONG_CALLER_KEY),
                ("authorization", &known),
            ],
        )
        .await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert_eq!(statuses[1], 401, "HubSpot's own 401 for its rejected token");
    assert_eq!(statuses[2], 200, "{statuses:?}");
    assert_eq!(statuses[4], 401, "hubgate's 401 for an unknown caller key");
    // Both bearer tokens were looked up, and the caller's own introspection call passed.
    assert_eq!(sim.stats().introspection.total, 3);

    let admin = child.admin_url("");
    let mut operator_view = String::new();
    for path in [
        "/metrics".to_string(),
        "/admin/budgets".to_string(),
        "/admin/owners/4242:4343".to_string(),
        "/admin/owners/anonymous".to_string(),
        format!("/admin/owners/{KNOWN_TOKEN}"),
        format!("/admin/owners/unidentified:{HAPIKEY}"),
    ] {
        let (status, _, body) = get(&format!("{admin}{path}")).await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        operator_view.push_str(&String::from_utf8_lossy(&body));
    }
    let budgets = json(&get(&format!("{admin}/admin/budgets")).await.2);
    let owners: Vec<&str> = budgets["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["owner"].as_str().unwrap())
        .collect();
    assert!(
        owners.contains(&"4242:4343"),
        "the known token's owner: {owners:?}"
    );
    for owner in owners.iter().filter(|o| o.starts_with("unidentified:")) {
        let (status, _, body) = get(&format!("{admin}/admin/owners/{owner}")).await;
        assert_eq!(status, StatusCode::OK);
        operator_view.push_str(&String::from_utf8_lossy(&body));
    }

    let (_, logs) = child.terminate().await;
    assert!(
        logs.contains("\"level\":\"DEBUG\""),
        "debug logging was on, so the check covers it:\n{logs}"
    );
    assert!(
        logs.contains("/oauth/v1/access-tokens/<redacted>?refresh_token=<redacted>"),
        "{logs}"
    );

    for secret in [
        KNOWN_TOKEN,
        REJECTED_TOKEN,
        HAPIKEY,
        PATH_TOKEN,
        REFRESH_TOKEN,
        CALLER_KEY,
        WRONG_CALLER_KEY,
    ] {
        let full_hash = hex::encode(Sha256::digest(secret.as_bytes()));
        for (place, text) in [
            ("logs", &logs),
            ("metrics and admin answers", &operator_view),
        ] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into {place}:\n{text}"
            );
            assert!(
                !text.contains(&full_hash),
                "the full SHA-256 of {secret} leaked into {place}:\n{text}"
            );
            // Tokens are long; no fragment of one may show either.
            assert!(
                !text.contains(&secret[..20]),
                "part of {secret} leaked into {place}:\n{text}"
            );
        }
    }
}
