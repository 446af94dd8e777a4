//! The admin listener against callers it cannot trust and owners by the thousand: an
//! optional bearer token guards what changes state (while `/metrics`, `/healthz` and
//! `/readyz` stay open), a browser page cannot post a reload, `/admin/budgets` answers in
//! pages and one owner's view costs the same with one owner or thousands. And every
//! labelled counter is exported at 0 from the start, so dashboards see 0, not "no data".

use crate::support::echo;
use crate::support::*;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Full;
use hubgate::config::{key_sha256, StaticCredential};

/// The operator's admin token in these tests; the config holds only its SHA-256.
const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// This process's CPU time (user + system) so far, from `/proc/self/stat`; the gateway
/// runs in this process, so what one admin request costs it shows here.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().unwrap();
    // utime and stime (fields 14 and 15 of the line) in USER_HZ, which Linux fixes at 100.
    (ticks(11) + ticks(12)) / 100.0
}

fn post(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

/// An admin refusal: HubSpot's error shape, naming what to fix.
fn assert_admin_error(status: StatusCode, body: &Bytes, expected: StatusCode) -> String {
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(body));
    let error = json(body);
    assert_eq!(error["status"], "error", "{error}");
    assert!(error["category"].is_string(), "{error}");
    error["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn admin_token_guards_reload_and_leaves_metrics_and_health_open() {
    let upstream = echo::start().await;
    let config = ConfigFile::new(&format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n\n[admin]\ntoken_sha256 = \"{}\"\n",
        key_sha256(ADMIN_TOKEN)
    ));
    let gateway = Gateway::start_from_file(config.path()).await;
    let reload = gateway.admin_url("/admin/reload");

    let (status, headers, body) = send(post(&reload, &[])).await;
    let message = assert_admin_error(status, &body, StatusCode::UNAUTHORIZED);
    assert!(message.contains("Authorization: Bearer"), "{message}");
    assert!(message.contains("admin.token_sha256"), "{message}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let (status, _, body) = send(post(&reload, &[("authorization", &wrong)])).await;
    assert_admin_error(status, &body, StatusCode::UNAUTHORIZED);
    // The token itself never comes back in an answer.
    assert!(!String::from_utf8_lossy(&body).contains(ADMIN_TOKEN));
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "hubgate_config_reloads_total",
            &[("result", "success")]
        ),
        Some(0.0),
        "a refused reload did not run"
    );

    let right = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, body) = send(post(&reload, &[("authorization", &right)])).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["status"], "reloaded");

    for open in ["/healthz", "/readyz", "/metrics", "/admin/budgets"] {
        let (status, _, body) = get(&gateway.admin_url(open)).await;
        assert_eq!(status, StatusCode::OK, "{open}: {body:?}");
    }
}

#[tokio::test]
async fn a_browser_page_cannot_post_a_reload() {
    let upstream = echo::start().await;
    let config = ConfigFile::new(&format!("[upstream]\nbase_url = \"http://{upstream}\"\n"));
    let gateway = Gateway::start_from_file(config.path()).await;
    let reload = gateway.admin_url("/admin/reload");
    // What a page on another site sends with a form or fetch(): a plain POST with its
    // Origin, which no script or curl sends.
    let (status, _, body) = send(post(&reload, &[("origin", "http://intranet.example")])).await;
    let message = assert_admin_error(status, &body, StatusCode::FORBIDDEN);
    assert!(message.contains("Origin"), "{message}");
    let (status, _, body) = send(post(&reload, &[("sec-fetch-site", "cross-site")])).await;
    assert_admin_error(status, &body, StatusCode::FORBIDDEN);
    let (status, _, _) = send(post(&reload, &[])).await;
    assert_eq!(status, StatusCode::OK, "an operator's POST still reloads");
}

/// Owners given to the gateway by static credentials, so no introspection is involved.
const OWNERS: u64 = 4000;

fn owner_token(i: u64) -> String {
    format!("pat-na1-admin-owner-{i}")
}

#[tokio::test]
async fn budgets_come_in_pages_and_one_owner_costs_the_same_among_thousands() {
    let _turn = heavy_turn().await;
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        c.credentials = (0..OWNERS)
            .map(|i| StaticCredential {
                token: Some(owner_token(i)),
                token_sha256: None,
                app_id: 1_000 + i,
                portal_id: 50_000 + i,
            })
            .collect();
    })
    .await;
    let client = client();
    let sent: Vec<StatusCode> = stream::iter(0..OWNERS)
        .map(|i| {
            let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
                .header("authorization", format!("Bearer {}", owner_token(i)))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let client = client.clone();
            async move { client.request(request).await.unwrap().status() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(sent.iter().all(|s| *s == StatusCode::OK));

    let before = cpu_seconds();
    let (status, _, body) = get(&gateway.admin_url("/admin/budgets")).await;
    let page_cpu = cpu_seconds() - before;
    assert_eq!(status, StatusCode::OK);
    let page = json(&body);
    let owners = page["owners"].as_array().unwrap().len();
    println!("one /admin/budgets page among {OWNERS} owners: {owners} owners, {page_cpu:.2} s CPU");
    assert_eq!(owners, 100, "the default page is 100 owners");
    assert_eq!(page["owners_active"], OWNERS);

    // Following the cursor visits every owner and every portal once.
    let (mut seen_owners, mut seen_portals) = (Vec::new(), Vec::new());
    let mut next = Some(String::new());
    while let Some(after) = next {
        let (status, _, body) =
            get(&gateway.admin_url(&format!("/admin/budgets?limit=1000&after={after}"))).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let page = json(&body);
        for owner in page["owners"].as_array().unwrap() {
            seen_owners.push(owner["owner"].as_str().unwrap().to_string());
        }
        for portal in page["portals"].as_array().unwrap() {
            seen_portals.push(portal["portal_id"].as_u64().unwrap());
        }
        next = page["next_after"].as_str().map(str::to_string);
    }
    assert_eq!(seen_owners.len() as u64, OWNERS);
    seen_owners.sort();
    seen_owners.dedup();
    assert_eq!(seen_owners.len() as u64, OWNERS, "no owner twice");
    assert_eq!(seen_portals.len() as u64, OWNERS);

    for bad in ["limit=0", "limit=x", "limit=1001", "after=nobody"] {
        let (status, _, body) = get(&gateway.admin_url(&format!("/admin/budgets?{bad}"))).await;
        let message = assert_admin_error(status, &body, StatusCode::BAD_REQUEST);
        assert!(
            message.contains("limit") || message.contains("after"),
            "{bad}: {message}"
        );
    }

    // One owner's view next to the cheapest answer the listener has: the same few
    // hundred requests, over the same kind of connection.
    const LOOKUPS: u64 = 300;
    let before = cpu_seconds();
    for _ in 0..LOOKUPS {
        let (status, _, _) = get(&gateway.admin_url("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let health = cpu_seconds() - before;
    let before = cpu_seconds();
    for i in 0..LOOKUPS {
        let j = i * 13 % OWNERS;
        let path = format!("/admin/owners/{}:{}", 1_000 + j, 50_000 + j);
        let (status, _, body) = get(&gateway.admin_url(&path)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
        let view = json(&body);
        assert!(view["budgets"]["burst"].is_object(), "{view}");
    }
    let lookups = cpu_seconds() - before;
    println!(
        "{LOOKUPS} owner lookups among {OWNERS} owners: {lookups:.2} s CPU; {LOOKUPS} /healthz: {health:.2} s"
    );
    assert!(
        lookups < 4.0 * health.max(0.05),
        "an owner lookup must not scan every owner: {lookups:.2} s vs {health:.2} s"
    );
    assert!(
        page_cpu < 0.5,
        "a page must not cost the whole book: {page_cpu:.2} s"
    );
}

/// Every labelled counter family and the label values it is known to take.
fn known_series() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "hubgate_requests_total",
            "outcome",
            vec![
                "forwarded",
                "bad_request",
                "upstream_error",
                "rejected_deadline",
                "rejected_queue_full",
                "rejected_daily",
                "rejected_cap",
                "rejected_store_unavailable",
                "caller_gone",
                "unauthorized",
            ],
        ),
        (
            "hubgate_coalesced_calls_total",
            "kind",
            vec!["batch_read", "identical_get"],
        ),
        (
            "hubgate_upstream_responses_total",
            "status_class",
            vec!["1xx", "2xx", "3xx", "4xx", "5xx"],
        ),
        (
            "hubgate_upstream_rate_limited_total",
            "policy",
            vec!["TEN_SECONDLY_ROLLING", "SECONDLY", "DAILY", "UNKNOWN"],
        ),
        (
            "hubgate_retries_total",
            "reason",
            vec![
                "rate_limited",
                "locked",
                "connect",
                "upstream_5xx",
                "upstream_failure",
                "timeout",
            ],
        ),
        (
            "hubgate_identity_lookups_total",
            "result",
            vec![
                "static",
                "cached",
                "introspected",
                "invalid",
                "unreachable",
                "hapikey",
                "anonymous",
            ],
        ),
        (
            "hubgate_config_reloads_total",
            "result",
            vec!["success", "failure"],
        ),
    ]
}

#[tokio::test]
async fn a_fresh_gateway_exports_every_labelled_counter_at_zero() {
    let upstream = echo::start().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |_| {}).await;
    let text = gateway.metrics().await;
    let mut missing = Vec::new();
    let mut total = 0;
    for (family, label, values) in known_series() {
        for value in values {
            total += 1;
            if sample(&text, family, &[(label, value)]) != Some(0.0) {
                missing.push(format!("{family}{{{label}=\"{value}\"}}"));
            }
        }
    }
    println!(
        "{} of {total} known counter series missing or not 0 at start",
        missing.len()
    );
    assert!(missing.is_empty(), "missing at start: {missing:?}\n{text}");
    // Every counter family the gateway exports with labels is one the list above knows.
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    for family in families {
        assert!(
            known_series().iter().any(|(f, _, _)| *f == family)
                || text.contains(&format!("\n{family} ")),
            "{family} is a labelled counter this test does not know"
        );
    }
}
