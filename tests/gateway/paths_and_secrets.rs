//! Paths, credentials and logs as hostile or unlucky callers send them: a path that
//! disguises a `..` is refused rather than classified by its raw segments, a trailing `/`
//! or an escaped letter does not move a call to another budget, a call with two
//! credentials is refused, and no log line the binary writes holds a secret however the
//! caller spelled its name.

use crate::support::echo;
use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hubgate::config::StaticCredential;
use hubgate::Config;

const TOKEN: &str = "pat-na1-paths-0123456789abcdef";

/// An echo upstream and a gateway in front of it that knows `TOKEN` as app 7, portal 70.
async fn echo_gateway() -> Gateway {
    let upstream = echo::start().await;
    Gateway::start(&format!("http://{upstream}"), |c: &mut Config| {
        c.credentials = vec![StaticCredential {
            token: Some(TOKEN.to_string()),
            token_sha256: None,
            app_id: 7,
            portal_id: 70,
        }];
    })
    .await
}

async fn call(gateway: &Gateway, method: Method, target: &str) -> (StatusCode, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(gateway.url(target))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, body) = send(request).await;
    if status != StatusCode::OK {
        assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
    }
    (status, body)
}

/// What the owner 7:70 has spent of its burst and search windows, per `/admin/owners`.
async fn spent(gateway: &Gateway) -> (u64, u64) {
    let (status, _, body) = get(&gateway.admin_url("/admin/owners/7:70")).await;
    if status == StatusCode::NOT_FOUND {
        return (0, 0);
    }
    let owner = json(&body);
    let used = |budget: &str| owner["budgets"][budget]["used"].as_u64().unwrap_or(0);
    (used("burst"), used("search"))
}

#[tokio::test]
async fn a_disguised_dot_segment_is_refused_not_exempt() {
    let gateway = echo_gateway().await;
    let disguises = [
        "/webhooks-journal/../crm/v3/objects/contacts",
        "/webhooks-journal/%2e%2e/crm/v3/objects/contacts",
        "/webhooks-journal/%2E./crm/v3/objects/contacts?limit=1",
        "/webhooks-journal//../../crm/v3/objects/contacts",
        "/webhooks-journal/..;/crm/v3/objects/contacts",
        "/webhooks-journal/..%2Fcrm/v3/objects/contacts",
        "/webhooks-journal/./../crm/v3/objects/contacts",
        "/events/v3/send/%2e%2e/%2e%2e/%2e%2e/crm/v3/objects/contacts",
    ];
    let mut forwarded = Vec::new();
    for target in disguises {
        let (status, body) = call(&gateway, Method::GET, target).await;
        if status == StatusCode::OK {
            forwarded.push(echo::parse(&body).target);
            continue;
        }
        let message = json(&body)["message"].as_str().unwrap().to_string();
        assert_eq!(json(&body)["category"], "VALIDATION_ERROR", "{target}");
        let names_why = message.contains("'.' or '..'") || message.contains("';'");
        assert!(names_why, "{target}: {message}");
    }
    let (burst, _) = spent(&gateway).await;
    println!(
        "disguised dot segments: {} of {} forwarded, burst spent {burst}",
        forwarded.len(),
        disguises.len()
    );
    assert!(
        forwarded.is_empty(),
        "forwarded, exempt from every budget (burst spent {burst}): {forwarded:?}"
    );
    // The refusal says which path to send instead.
    let (_, body) = call(&gateway, Method::GET, disguises[1]).await;
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert!(message.contains("/crm/v3/objects/contacts"), "{message}");

    // The exemption itself still holds for the paths it names, `;` aside.
    let (status, _) = call(
        &gateway,
        Method::GET,
        "/webhooks-journal/journal/2026-03/offset/1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&gateway, Method::GET, "/webhooks-journal;x/journal").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json(&body)["message"].as_str().unwrap().contains("';'"),
        "{body:?}"
    );
    assert_eq!(spent(&gateway).await, (0, 0));
}

#[tokio::test]
async fn a_search_spends_search_however_its_path_is_spelled() {
    let gateway = echo_gateway().await;
    let spellings = [
        "/crm/v3/objects/contacts/search/",
        "/crm/v3/objects/contacts//search",
        "//crm/v3/objects/contacts/search",
        "/crm/v3/objects/%63ontacts/%73earch",
        "/crm/objects/2026-03/deals/search/",
    ];
    for target in spellings {
        let (status, body) = call(&gateway, Method::POST, target).await;
        assert_eq!(status, StatusCode::OK, "{target}");
        // Forwarded as sent: these differ from the canonical path only in ways every
        // server reads alike.
        assert_eq!(echo::parse(&body).target, target);
    }
    let (burst, search) = spent(&gateway).await;
    println!(
        "{} searches spelled differently: burst spent {burst}, search spent {search}",
        spellings.len()
    );
    assert_eq!(
        (burst, search),
        (0, spellings.len() as u64),
        "each search spends the search window, never the burst window"
    );
}

#[tokio::test]
async fn a_call_with_two_credentials_is_refused() {
    let gateway = echo_gateway().await;
    let bearer = format!("Bearer {TOKEN}");
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "two Authorization headers",
            "/crm/v3/objects/contacts",
            &[&bearer, "Bearer pat-na1-other-token"],
        ),
        (
            "a bearer token and ?hapikey",
            "/crm/v3/objects/contacts?hapikey=key-1",
            &[&bearer],
        ),
        (
            "a bearer token and an escaped ?hapikey",
            "/crm/v3/objects/contacts?limit=2&hapi%6Bey=key-1",
            &[&bearer],
        ),
        (
            "two hapikeys",
            "/crm/v3/objects/contacts?hapikey=key-1&hapikey=key-2",
            &[],
        ),
        (
            "Basic and ?hapikey",
            "/crm/v3/objects/contacts?hapikey=key-1",
            &["Basic dXNlcjpwYXNz"],
        ),
    ];
    let mut forwarded = Vec::new();
    for (what, target, authorizations) in cases {
        let mut request = Request::get(gateway.url(target));
        for value in authorizations {
            request = request.header("authorization", *value);
        }
        let (status, headers, body) = send(request.body(Full::new(Bytes::new())).unwrap()).await;
        if status == StatusCode::OK {
            let seen = echo::parse(&body);
            forwarded.push(format!(
                "{what}: {} with {:?}",
                seen.target,
                seen.header_values("authorization")
            ));
            continue;
        }
        let error = assert_hubspot_error(status, &headers, &body, StatusCode::BAD_REQUEST);
        assert_eq!(error["category"], "VALIDATION_ERROR", "{what}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("one credential"), "{what}: {message}");
        assert!(
            !message.contains(TOKEN) && !message.contains("key-1"),
            "{message}"
        );
    }
    println!(
        "calls with two credentials: {} of {} forwarded",
        forwarded.len(),
        cases.len()
    );
    assert!(forwarded.is_empty(), "forwarded: {forwarded:#?}");
    // One credential, either way, still goes.
    let (status, _) = call(&gateway, Method::GET, "/crm/v3/objects/contacts").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts?hapikey=key-1")).await;
    assert_eq!(status, StatusCode::OK);
    let text = gateway.metrics().await;
    assert_eq!(
        sample(
            &text,
            "hubgate_requests_total",
            &[("outcome", "bad_request")]
        ),
        Some(cases.len() as f64),
        "{text}"
    );
}

/// Secrets behind names spelled so that only a decoding reader finds them; no two share
/// 12 bytes, so each leak is counted once.
const SECRETS: [(&str, &str); 7] = [
    ("/crm/v3/objects/contacts?hapi%6Bey=", "hk0a91c2e37b54d6f8"),
    ("/crm/v3/objects/contacts?%68apikey=", "hk1f03b8d27e6c945a"),
    (
        "/crm/v3/objects/contacts?limit=1&HapiKey=",
        "hk2c7e5a09d18f36b4",
    ),
    ("/oauth/v1/access-tokens//", "tk3d29f4b6a80e1c75"),
    ("/oauth/v1/access%2Dtokens/", "tk4b86e1d53c9a07f2"),
    ("/oauth/v1/access-tokens/./", "tk5e40a7c1f92b68d3"),
    (
        "/oauth/v1/refresh-tokens?refresh%5Ftoken=",
        "rt6a15d8f3b07c92e4",
    ),
];

#[tokio::test]
async fn no_log_line_holds_a_secret_however_its_name_is_spelled() {
    let sim = simulator(sim_config("")).await;
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}\
         [upstream]\nbase_url = \"{}\"\n\
         [log]\nformat = \"json\"\nlevel = \"debug\"\n",
        sim.base_url(),
    ));
    let mut command = hubgate();
    command.args(["--config", config.path().to_str().unwrap()]);
    let child = HubgateProcess::start(command);
    for (prefix, secret) in SECRETS {
        let (status, _, _) = get(&child.url(&format!("{prefix}{secret}"))).await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{prefix}");
    }
    let (_, logs) = child.terminate().await;
    assert!(
        logs.contains("\"level\":\"DEBUG\""),
        "debug logging was on, so the check covers it:\n{logs}"
    );
    let calls = logs.lines().filter(|l| l.contains("\"call\"")).count();
    assert!(calls >= SECRETS.len(), "every call was logged:\n{logs}");
    let mut leaks = Vec::new();
    for (prefix, secret) in SECRETS {
        // Any 12 bytes of a secret are too many.
        let holds =
            |line: &&str| (0..=secret.len() - 12).any(|i| line.contains(&secret[i..i + 12]));
        if let Some(line) = logs.lines().find(holds) {
            leaks.push(format!("{prefix}{secret}: {line}"));
        }
    }
    println!(
        "secrets found in the logs: {} of {}",
        leaks.len(),
        SECRETS.len()
    );
    assert!(leaks.is_empty(), "{leaks:#?}");
}
