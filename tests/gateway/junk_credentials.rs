//! Junk credentials: random `?hapikey=` values and random bearer tokens, sent at a `hubgate`
//! child process (so its memory is its own, read from /proc) in front of the simulator, while
//! a real owner's calls must go on as if nothing happened; and the identity cache's bound
//! against a flood of tokens HubSpot rejects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hubgate::config::{IdentityConfig, UpstreamTarget};
use hubgate::hubspot::{Credential, Owner};
use hubgate::ops::metrics::Metrics;
use hubgate::proxy::identify::{IdentityResolver, Resolution};
use hubgate_sim::{SimConfig, Simulator};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::support::*;

const REAL_TOKEN: &str = "pat-na1-sim-1";
const REAL_OWNER: &str = "2001:1001";
/// Memory a flood of junk may add to the gateway, at most.
const RSS_BOUND_KIB: u64 = 32 * 1024;

type Pool = Client<HttpConnector, Full<Bytes>>;

/// One pool for a flood, so its calls reuse connections as a real client's would.
fn pool() -> Pool {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// The status and `X-Hubgate-Owner` of one call, the body read to its end.
async fn call(pool: &Pool, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let response = tokio::time::timeout(Duration::from_secs(60), pool.request(request))
        .await
        .expect("an answer within 60 s")
        .expect("the call completes");
    let owner = response
        .headers()
        .get("x-hubgate-owner")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let status = response.status();
    response.into_body().collect().await.expect("body read");
    (status, owner)
}

fn contacts(url: String, token: Option<&str>, caller: &str) -> Request<Full<Bytes>> {
    let mut request = Request::get(url).header("x-hubgate-caller", caller);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

/// Resident memory of process `pid`, from /proc/<pid>/status.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The simulator (one real token, `pat-na1-sim-1`), and `hubgate` as a child process in
/// front of it with the simulator's burst limit.
async fn sim_and_process(extra: &str) -> (Simulator, HubgateProcess, tempfile::NamedTempFile) {
    let sim = simulator(SimConfig {
        generate_tokens: 1,
        ..SimConfig::default()
    })
    .await;
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}[upstream]\nbase_url = \"{}\"\n[budgets]\nburst_limit = 100\n{extra}",
        sim.base_url()
    ));
    let mut command = hubgate();
    command.args(["--config", config.path().to_str().unwrap()]);
    let process = tokio::task::spawn_blocking(move || HubgateProcess::start(command))
        .await
        .unwrap();
    (sim, process, config)
}

/// The real owner's steady calls (5 a second) for as long as `flooding` holds: each must
/// be answered 200 under its own owner; returns how many and the slowest answer.
async fn real_owner_calls(
    process_url: impl Fn() -> String,
    flooding: impl Fn() -> bool,
) -> (usize, Duration) {
    let pool = pool();
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while flooding() {
        tick.tick().await;
        let started = Instant::now();
        let (status, owner) =
            call(&pool, contacts(process_url(), Some(REAL_TOKEN), "crm-sync")).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, StatusCode::OK, "the real owner's call {calls}");
        assert_eq!(owner, REAL_OWNER);
        calls += 1;
    }
    (calls, slowest)
}

#[tokio::test]
async fn random_hapikeys_leave_memory_bounded_and_a_real_owner_unaffected() {
    let _turn = heavy_turn().await;
    let (sim, process, _config) = sim_and_process("").await;
    let pool = pool();
    // Warm up: the first calls allocate the runtime's and the pools' working set.
    for _ in 0..20 {
        let (status, _) = call(
            &pool,
            contacts(
                process.url("/crm/v3/objects/contacts"),
                Some(REAL_TOKEN),
                "crm-sync",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let before = rss_kib(process.pid());
    let done = Arc::new(AtomicU64::new(0));
    const JUNK: u64 = 20_000;
    let flood = {
        let (done, url) = (done.clone(), process.url(""));
        async move {
            let statuses = stream::iter(0..JUNK)
                .map(|i| {
                    let (pool, done) = (pool.clone(), done.clone());
                    let url = format!(
                        "{url}/crm/v3/objects/contacts?hapikey=junk-{i:08}-{}",
                        i * 7919
                    );
                    async move {
                        let (status, _) = call(&pool, contacts(url, None, "junk-script")).await;
                        done.fetch_add(1, Ordering::Relaxed);
                        status
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<StatusCode>>()
                .await;
            statuses
        }
    };
    let real = real_owner_calls(
        || process.url("/crm/v3/objects/contacts"),
        || done.load(Ordering::Relaxed) < JUNK,
    );
    let started = Instant::now();
    let (statuses, (real_calls, slowest)) = tokio::join!(flood, real);
    let flood_took = started.elapsed();
    let after = rss_kib(process.pid());
    let grown = after.saturating_sub(before);
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    eprintln!(
        "{JUNK} random hapikeys in {flood_took:?}: RSS {before} KiB -> {after} KiB (+{grown} KiB); \
         {unauthorized} x 401 from HubSpot, {refused} x 429 from hubgate; real owner: {real_calls} calls, slowest {slowest:?}"
    );
    assert_eq!(
        unauthorized + refused,
        statuses.len(),
        "every junk call gets HubSpot's 401 or hubgate's 429"
    );
    assert!(
        grown < RSS_BOUND_KIB,
        "RSS grew by {grown} KiB under {JUNK} random hapikeys (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "the real owner's slowest call took {slowest:?}"
    );
    let stats = sim.stats();
    let owner = stats
        .owner(2001, 1001)
        .expect("the real owner reached HubSpot");
    assert_eq!(
        owner.rate_limited.total(),
        0,
        "HubSpot 429s for the real owner: {owner:?}"
    );
    drop(process);
}

#[tokio::test]
async fn a_hapikey_hubspot_accepts_is_proven_and_gets_its_own_owner() {
    let sim = simulator(sim_config(
        "[[hapikeys]]\nkey = \"real-legacy-key\"\nportal_id = 77\napp_id = 88\n",
    ))
    .await;
    // Unproven keys share one budget of the default limits: 3 calls per window here.
    let gateway = Gateway::start(&sim.base_url(), |c| c.budgets.burst_limit = 3).await;
    let url = gateway.url("/crm/v3/objects/contacts?hapikey=real-legacy-key");
    let (status, headers, _) = get(&url).await;
    assert_eq!(status, StatusCode::OK);
    let shared = Owner::Unidentified { credential_hash: 0 }.label();
    assert_eq!(
        headers["x-hubgate-owner"],
        shared.as_str(),
        "an unproven key shares the unproven budget"
    );
    let (status, headers, _) = get(&url).await;
    assert_eq!(status, StatusCode::OK);
    let own = headers["x-hubgate-owner"].to_str().unwrap();
    assert!(
        own.starts_with("unidentified:") && own != shared,
        "once proven, its own owner: {own}"
    );
    // A key HubSpot refuses gets HubSpot's 401, and stays unproven.
    let (status, headers, _) = get(&gateway.url("/crm/v3/objects/contacts?hapikey=nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-hubgate-owner"], shared.as_str());
    // The shared budget is spent: junk is refused at once, saying why.
    let (status, headers, _) = get(&gateway.url("/crm/v3/objects/contacts?hapikey=nope-2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-hubgate-owner"], shared.as_str());
    let started = Instant::now();
    let (status, headers, body) =
        get(&gateway.url("/crm/v3/objects/contacts?hapikey=nope-3")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused within the unproven wait"
    );
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::TOO_MANY_REQUESTS);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("has not accepted this call's credential"),
        "{message}"
    );
}

#[tokio::test]
async fn a_real_token_resolves_within_2_s_under_300_junk_tokens_a_second() {
    let _turn = heavy_turn().await;
    let (sim, process, _config) = sim_and_process("").await;
    let pool = pool();
    let before = rss_kib(process.pid());
    let sent = Arc::new(AtomicU64::new(0));
    // 300 junk tokens a second for 6 s, each call its own task so a slow answer never
    // slows the pace; the real token's first call comes 3 s in, when the introspection
    // pacer (20 a second) has long been saturated.
    let flood = {
        let (pool, sent, url) = (
            pool.clone(),
            sent.clone(),
            process.url("/crm/v3/objects/contacts"),
        );
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut calls = Vec::new();
            for i in 0..1_800u64 {
                // Three calls per 10 ms tick: 300 a second.
                if i % 3 == 0 {
                    tick.tick().await;
                }
                let (pool, url) = (pool.clone(), url.clone());
                calls.push(tokio::spawn(async move {
                    let token = format!("junk-{i:08}-{}", i.wrapping_mul(2_654_435_761));
                    call(&pool, contacts(url, Some(&token), "junk-script"))
                        .await
                        .0
                }));
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let mut statuses = Vec::new();
            for c in calls {
                statuses.push(c.await.unwrap());
            }
            statuses
        }
    };
    let real = {
        let (pool, sent, url) = (
            pool.clone(),
            sent.clone(),
            process.url("/crm/v3/objects/contacts"),
        );
        async move {
            wait_until("3 s of junk sent", Duration::from_secs(30), || {
                let sent = sent.load(Ordering::Relaxed);
                async move { sent >= 900 }
            })
            .await;
            let started = Instant::now();
            let (status, owner) = call(&pool, contacts(url, Some(REAL_TOKEN), "crm-sync")).await;
            (status, owner, started.elapsed())
        }
    };
    let (statuses, (status, owner, took)) = tokio::join!(flood, real);
    let after = rss_kib(process.pid());
    let grown = after.saturating_sub(before);
    let stats = sim.stats();
    eprintln!(
        "{} junk tokens: RSS {before} KiB -> {after} KiB (+{grown} KiB), {} introspections; \
         real token's first call: {status} as {owner:?} in {took:?}",
        statuses.len(),
        stats.introspection.total
    );
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS)),
        "junk gets 401 or 429"
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        owner, REAL_OWNER,
        "the real token resolves to its (app, portal)"
    );
    assert!(
        took < Duration::from_secs(2),
        "the real token's first call took {took:?}"
    );
    assert!(
        grown < RSS_BOUND_KIB,
        "RSS grew by {grown} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    let real = stats
        .owner(2001, 1001)
        .expect("the real owner reached HubSpot");
    assert_eq!(real.rate_limited.total(), 0);
    drop(process);
}

fn resolver(sim: &Simulator, config: &IdentityConfig) -> IdentityResolver {
    let client = hubgate::proxy::upstream::build_client(&Default::default()).unwrap();
    let target = UpstreamTarget::parse(&sim.base_url()).unwrap();
    IdentityResolver::new(config, &[], client, target, Metrics::new()).unwrap()
}

#[tokio::test]
async fn tokens_hubspot_rejects_never_evict_real_ones() {
    let sim = simulator(SimConfig {
        generate_tokens: 3,
        ..SimConfig::default()
    })
    .await;
    let config = IdentityConfig {
        max_entries: 10,
        introspection_per_second: 1_000,
        ..IdentityConfig::default()
    };
    let r = resolver(&sim, &config);
    let real = ["pat-na1-sim-1", "pat-na1-sim-2", "oauth-sim-3"];
    for token in real {
        assert!(matches!(
            r.resolve(&Credential::Bearer(token.into())).await,
            Resolution::Owner(Owner::App { .. })
        ));
    }
    for i in 0..200 {
        let junk = Credential::Bearer(format!("junk-{i}"));
        assert_eq!(r.resolve(&junk).await, Resolution::Invalid);
    }
    for token in real {
        assert!(matches!(
            r.resolve(&Credential::Bearer(token.into())).await,
            Resolution::Owner(Owner::App { .. })
        ));
    }
    let stats = sim.stats();
    for token in real {
        assert_eq!(
            stats.introspection.by_token.get(token),
            Some(&1),
            "{token} was looked up again: junk evicted it"
        );
    }
}
