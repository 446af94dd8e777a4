//! Identity resolution against the simulator over real loopback sockets: static credentials,
//! introspection of both token kinds, single-flight, negative and failure caching, expiry,
//! pacing, the cache bound, unproven credentials, and reading credentials off a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use hubgate::config::UpstreamTarget;
use hubgate::config::{IdentityConfig, StaticCredential};
use hubgate::hubspot::{credential_of, Credential, Owner};
use hubgate::ops::metrics::Metrics;
use hubgate::proxy::identify::{IdentityResolver, Resolution};
use hubgate_sim::{Faults, SimConfig, Simulator};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::{jump_clock, simulator, wait_until, ClosedPort};

const PAT: &str = "pat-na1-sim-1";
const OAUTH: &str = "oauth-sim-1";

fn sim_config(generate_tokens: u32) -> SimConfig {
    SimConfig {
        generate_tokens,
        ..SimConfig::default()
    }
}

fn resolver_for(
    base_url: &str,
    config: &IdentityConfig,
    credentials: &[StaticCredential],
) -> (IdentityResolver, Metrics) {
    let metrics = Metrics::new();
    let client = hubgate::proxy::upstream::build_client(&Default::default()).unwrap();
    let target = UpstreamTarget::parse(base_url).unwrap();
    let resolver =
        IdentityResolver::new(config, credentials, client, target, metrics.clone()).unwrap();
    (resolver, metrics)
}

fn resolver(sim: &Simulator, config: &IdentityConfig) -> (IdentityResolver, Metrics) {
    resolver_for(&sim.base_url(), config, &[])
}

fn bearer(token: &str) -> Credential {
    Credential::Bearer(token.to_string())
}

fn app(app_id: u64, portal_id: u64) -> Resolution {
    Resolution::Owner(Owner::App { app_id, portal_id })
}

/// The credential hash as the docs specify it (first 8 bytes of SHA-256, big-endian), computed independently of the crate.
fn hash_of(credential: &str) -> u64 {
    let digest = Sha256::digest(credential.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap())
}

fn introspections(sim: &Simulator) -> u64 {
    sim.stats().introspection.total
}

/// `hubgate_identity_lookups_total{result="..."}` from the text exposition.
fn lookups(metrics: &Metrics, result: &str) -> u64 {
    let text = String::from_utf8(metrics.encode()).unwrap();
    let prefix = format!("hubgate_identity_lookups_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no series for {result} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn private_app_and_oauth_tokens_resolve_to_their_app_and_portal() {
    let sim = simulator(sim_config(2)).await;
    let (r, metrics) = resolver(&sim, &IdentityConfig::default());

    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(r.resolve(&bearer("oauth-sim-2")).await, app(3002, 1002));
    let stats = sim.stats().introspection;
    assert_eq!(stats.private_app_token_info, 1);
    assert_eq!(stats.oauth_access_token, 1);

    // Answers are cached: no further introspection.
    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(r.resolve(&bearer("oauth-sim-2")).await, app(3002, 1002));
    assert_eq!(introspections(&sim), 2);
    assert_eq!(r.cached_entries(), 2);
    assert_eq!(lookups(&metrics, "introspected"), 2);
    assert_eq!(lookups(&metrics, "cached"), 2);
    assert_eq!(lookups(&metrics, "invalid"), 0);
}

#[tokio::test]
async fn static_credentials_win_without_introspection() {
    let sim = simulator(sim_config(1)).await;
    let by_hash = "pat-na1-known-by-hash";
    let credentials = [
        // Overrides what the simulator would say about this token.
        StaticCredential {
            token: Some(PAT.to_string()),
            token_sha256: None,
            app_id: 11,
            portal_id: 12,
        },
        StaticCredential {
            token: None,
            token_sha256: Some(hex::encode(Sha256::digest(by_hash.as_bytes()))),
            app_id: 21,
            portal_id: 22,
        },
    ];
    let (r, metrics) = resolver_for(&sim.base_url(), &IdentityConfig::default(), &credentials);
    for _ in 0..3 {
        assert_eq!(r.resolve(&bearer(PAT)).await, app(11, 12));
        assert_eq!(r.resolve(&bearer(by_hash)).await, app(21, 22));
    }
    assert_eq!(introspections(&sim), 0);
    assert_eq!(r.cached_entries(), 0);
    assert_eq!(lookups(&metrics, "static"), 6);
}

#[tokio::test]
async fn bad_static_credentials_are_refused() {
    let bad = StaticCredential {
        token: Some("t".into()),
        token_sha256: Some("0".repeat(64)),
        app_id: 1,
        portal_id: 2,
    };
    let client = hubgate::proxy::upstream::build_client(&Default::default()).unwrap();
    let target = UpstreamTarget::parse("http://127.0.0.1:1").unwrap();
    let err = IdentityResolver::new(
        &IdentityConfig::default(),
        &[bad],
        client,
        target,
        Metrics::new(),
    )
    .expect_err("both token and token_sha256 must be refused");
    assert!(err.to_string().contains("credentials.0"), "{err}");

    let zero = IdentityConfig {
        max_entries: 0,
        introspection_per_second: 0,
        ..IdentityConfig::default()
    };
    let keys: Vec<String> = hubgate::Config {
        identity: zero,
        ..hubgate::Config::default()
    }
    .validate()
    .into_iter()
    .map(|p| p.key)
    .collect();
    assert_eq!(
        keys,
        ["identity.max_entries", "identity.introspection_per_second"]
    );
    assert!(hubgate::Config::default().validate().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_share_one_introspection() {
    // A slow answer keeps the lookup in flight while all 100 callers arrive.
    let config = SimConfig {
        faults: Faults {
            latency_ms: 300,
            ..Faults::default()
        },
        ..sim_config(1)
    };
    let sim = simulator(config).await;
    let (r, metrics) = resolver(&sim, &IdentityConfig::default());
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (r, barrier) = (r.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            r.resolve(&bearer(PAT)).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), app(2001, 1001));
    }
    let stats = sim.stats().introspection;
    assert_eq!(stats.total, 1, "{stats:?}");
    assert_eq!(stats.by_token.get(PAT), Some(&1));
    assert_eq!(lookups(&metrics, "introspected"), 1);
    assert_eq!(lookups(&metrics, "cached"), 99);

    for _ in 0..10 {
        assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    }
    assert_eq!(introspections(&sim), 1);
    assert_eq!(lookups(&metrics, "cached"), 109);
}

#[tokio::test]
async fn unknown_tokens_are_invalid_and_that_is_remembered_briefly() {
    let sim = simulator(sim_config(1)).await;
    let config = IdentityConfig {
        negative_ttl_ms: 400,
        ..IdentityConfig::default()
    };
    let (r, metrics) = resolver(&sim, &config);
    for token in ["pat-na1-nobody", "oauth-nobody"] {
        assert_eq!(r.resolve(&bearer(token)).await, Resolution::Invalid);
        assert_eq!(r.resolve(&bearer(token)).await, Resolution::Invalid);
    }
    assert_eq!(introspections(&sim), 2);
    assert_eq!(lookups(&metrics, "invalid"), 4);

    // Past the 400 ms the verdict is kept, on the resolver's clock.
    jump_clock(Duration::from_millis(500)).await;
    assert_eq!(
        r.resolve(&bearer("pat-na1-nobody")).await,
        Resolution::Invalid
    );
    assert_eq!(introspections(&sim), 3, "the verdict expires");
}

#[tokio::test]
async fn failing_introspection_is_unproven_and_retried_later() {
    let config = SimConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..sim_config(1)
    };
    let sim = simulator(config).await;
    let identity = IdentityConfig {
        unreachable_ttl_ms: 400,
        ..IdentityConfig::default()
    };
    let (r, metrics) = resolver(&sim, &identity);
    // Not a second owner with a full budget of its own: the budget unproven calls share.
    let unproven = Resolution::Owner(Owner::UNPROVEN);
    assert_eq!(r.resolve(&bearer(PAT)).await, unproven);
    assert_eq!(r.resolve(&bearer(PAT)).await, unproven);
    assert_eq!(introspections(&sim), 1, "the failure is remembered");
    assert_eq!(lookups(&metrics, "unreachable"), 2);

    // After the TTL HubSpot is asked again, and once it answers the owner is known.
    sim.set_faults(Faults::default());
    jump_clock(Duration::from_millis(500)).await;
    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(introspections(&sim), 2);
}

#[tokio::test]
async fn a_call_hubspot_accepts_has_a_failed_lookup_asked_again_at_once() {
    let config = SimConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..sim_config(1)
    };
    let sim = simulator(config).await;
    let (r, _) = resolver(&sim, &IdentityConfig::default());
    assert_eq!(
        r.resolve(&bearer(PAT)).await,
        Resolution::Owner(Owner::UNPROVEN)
    );
    sim.set_faults(Faults::default());
    // Well within unreachable_ttl_ms: the 2xx, not the clock, has it asked again.
    r.observe_answer(&bearer(PAT), http::StatusCode::OK);
    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(introspections(&sim), 2);
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let closed = ClosedPort::new();
    let (r, metrics) = resolver_for(&closed.url(), &IdentityConfig::default(), &[]);
    assert_eq!(
        r.resolve(&bearer(OAUTH)).await,
        Resolution::Owner(Owner::UNPROVEN)
    );
    assert_eq!(lookups(&metrics, "unreachable"), 1);
}

#[tokio::test]
async fn slow_introspection_times_out_as_unreachable() {
    let config = SimConfig {
        faults: Faults {
            latency_ms: 3_000,
            ..Faults::default()
        },
        ..sim_config(1)
    };
    let sim = simulator(config).await;
    let identity = IdentityConfig {
        introspection_timeout_ms: 200,
        ..IdentityConfig::default()
    };
    let (r, _) = resolver(&sim, &identity);
    let started = Instant::now();
    assert_eq!(
        r.resolve(&bearer(PAT)).await,
        Resolution::Owner(Owner::UNPROVEN)
    );
    assert!(started.elapsed() < Duration::from_millis(2_000));
}

#[tokio::test]
async fn oauth_tokens_are_introspected_again_once_expired() {
    let config = SimConfig {
        access_token_expires_in: 1,
        ..sim_config(1)
    };
    let sim = simulator(config).await;
    let (r, _) = resolver(&sim, &IdentityConfig::default());
    assert_eq!(r.resolve(&bearer(OAUTH)).await, app(3001, 1001));
    assert_eq!(r.resolve(&bearer(OAUTH)).await, app(3001, 1001));
    assert_eq!(introspections(&sim), 1);
    // Past the token's `expires_in` of 1 s.
    jump_clock(Duration::from_millis(1_200)).await;
    assert_eq!(r.resolve(&bearer(OAUTH)).await, app(3001, 1001));
    assert_eq!(introspections(&sim), 2);
}

#[tokio::test]
async fn private_app_tokens_are_rechecked_after_their_ttl() {
    let sim = simulator(sim_config(1)).await;
    let identity = IdentityConfig {
        private_app_ttl_ms: 300,
        ..IdentityConfig::default()
    };
    let (r, _) = resolver(&sim, &identity);
    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(introspections(&sim), 1);
    jump_clock(Duration::from_millis(400)).await;
    assert_eq!(r.resolve(&bearer(PAT)).await, app(2001, 1001));
    assert_eq!(introspections(&sim), 2);
}

#[tokio::test]
async fn the_cache_stays_within_max_entries() {
    let sim = simulator(sim_config(30)).await;
    let identity = IdentityConfig {
        max_entries: 10,
        introspection_per_second: 10_000,
        ..IdentityConfig::default()
    };
    let (r, _) = resolver(&sim, &identity);
    for i in 1..=30u64 {
        assert_eq!(
            r.resolve(&bearer(&format!("pat-na1-sim-{i}"))).await,
            app(2000 + i, 1000 + i)
        );
        assert_eq!(
            r.resolve(&bearer(&format!("pat-na1-unknown-{i}"))).await,
            Resolution::Invalid
        );
        assert!(r.cached_entries() <= 10, "{} entries", r.cached_entries());
    }
    assert!(r.cached_entries() >= 5, "eviction drops only what it must");
    // The newest token is still cached.
    let before = introspections(&sim);
    r.resolve(&bearer("pat-na1-unknown-30")).await;
    assert_eq!(introspections(&sim), before);
}

#[tokio::test]
async fn introspection_is_paced() {
    let sim = simulator(sim_config(10)).await;
    let identity = IdentityConfig {
        introspection_per_second: 5,
        ..IdentityConfig::default()
    };
    let (r, _) = resolver(&sim, &identity);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 1..=10u64 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            r.resolve(&bearer(&format!("pat-na1-sim-{i}"))).await == app(2000 + i, 1000 + i)
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    // Five go at once from idle; the other five follow at 5 per second.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    assert_eq!(introspections(&sim), 10);
}

#[tokio::test]
async fn hapikeys_and_anonymous_calls_need_no_lookup() {
    let sim = simulator(sim_config(1)).await;
    let (r, metrics) = resolver(&sim, &IdentityConfig::default());
    let key = Credential::HapiKey("my-key".into());
    // Unproven until HubSpot accepts a call with it; then keyed by its own hash.
    assert_eq!(r.resolve(&key).await, Resolution::Owner(Owner::UNPROVEN));
    r.observe_answer(&key, http::StatusCode::OK);
    assert_eq!(
        r.resolve(&key).await,
        Resolution::Owner(Owner::Unidentified {
            credential_hash: hash_of("my-key")
        })
    );
    assert_eq!(r.proven_hapikeys(), 1);
    r.observe_answer(&key, http::StatusCode::UNAUTHORIZED);
    assert_eq!(r.resolve(&key).await, Resolution::Owner(Owner::UNPROVEN));
    assert_eq!(
        r.resolve(&Credential::None).await,
        Resolution::Owner(Owner::Anonymous)
    );
    assert_eq!(introspections(&sim), 0);
    assert_eq!(lookups(&metrics, "hapikey"), 1);
    assert_eq!(lookups(&metrics, "unproven"), 2);
    assert_eq!(lookups(&metrics, "anonymous"), 1);
    let label = Owner::Unidentified {
        credential_hash: hash_of("my-key"),
    }
    .label();
    assert_eq!(label, format!("unidentified:{:016x}", hash_of("my-key")));
}

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(a) = authorization {
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(a).unwrap(),
        );
    }
    h
}

#[test]
fn credential_of_reads_bearer_in_any_case() {
    let uri: Uri = "/crm/v3/objects/contacts".parse().unwrap();
    for a in [
        "Bearer pat-na1-x",
        "bearer pat-na1-x",
        "BEARER pat-na1-x",
        "  bEaReR   pat-na1-x ",
    ] {
        assert_eq!(
            credential_of(&headers(Some(a)), &uri),
            bearer("pat-na1-x"),
            "{a:?}"
        );
    }
    // Bearer wins over a hapikey in the query.
    let both: Uri = "/x?hapikey=k".parse().unwrap();
    assert_eq!(
        credential_of(&headers(Some("Bearer t")), &both),
        bearer("t")
    );
}

#[test]
fn credential_of_reads_hapikey_from_the_query() {
    let h = headers(None);
    let cases = [
        ("/x?hapikey=abc", "abc"),
        ("/x?limit=10&hapikey=abc&after=5", "abc"),
        ("/x?a=1&hapikey=a%2Fb%20c%3D&b=2", "a/b c="),
        ("/x?hapi%6Bey=k2", "k2"),
    ];
    for (uri, key) in cases {
        let uri: Uri = uri.parse().unwrap();
        assert_eq!(
            credential_of(&h, &uri),
            Credential::HapiKey(key.into()),
            "{uri}"
        );
    }
    // Not a bearer scheme: the query decides.
    let uri: Uri = "/x?hapikey=q".parse().unwrap();
    assert_eq!(
        credential_of(&headers(Some("Basic dXNlcjpwYXNz")), &uri),
        Credential::HapiKey("q".into())
    );
}

#[test]
fn credential_of_finds_none() {
    for (auth, uri) in [
        (None, "/x"),
        (None, "/x?hapikeys=1&xhapikey=2"),
        (None, "/x?hapikey="),
        (Some("Bearer"), "/x"),
        (Some("Bearer   "), "/x"),
        (Some("Basic abc"), "/x?%zz"),
    ] {
        let uri: Uri = uri.parse().unwrap();
        assert_eq!(
            credential_of(&headers(auth), &uri),
            Credential::None,
            "{auth:?} {uri}"
        );
    }
}

/// An upstream that answers every request with `status` and `body`, counting requests.
async fn fixed_upstream(status: u16, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test]
async fn unusable_answers_are_unreachable_and_rate_limits_are_not_invalid() {
    for (status, body) in [
        (200, "not json"),
        (200, r#"{"hub_id": 1}"#),
        (200, r#""pat-na1-echoed""#),
        (429, r#"{"status":"error"}"#),
        (503, ""),
    ] {
        let (base, _) = fixed_upstream(status, body).await;
        let (r, _) = resolver_for(&base, &IdentityConfig::default(), &[]);
        for token in [PAT, OAUTH] {
            assert_eq!(
                r.resolve(&bearer(token)).await,
                Resolution::Owner(Owner::UNPROVEN),
                "{status} {body}"
            );
        }
    }
    // Any other 4xx says the token is not valid.
    for status in [400, 401, 403, 404] {
        let (base, count) = fixed_upstream(status, "{}").await;
        let (r, _) = resolver_for(&base, &IdentityConfig::default(), &[]);
        assert_eq!(r.resolve(&bearer(PAT)).await, Resolution::Invalid);
        assert_eq!(r.resolve(&bearer(PAT)).await, Resolution::Invalid);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_lookup_abandoned_by_its_caller_is_taken_over() {
    // Answer latency, not transit: the lookup must be counted at once and then stay out.
    let config = SimConfig {
        faults: Faults {
            answer_latency_ms: 300,
            ..Faults::default()
        },
        ..sim_config(1)
    };
    let sim = simulator(config).await;
    let (r, _) = resolver(&sim, &IdentityConfig::default());
    let first = {
        let r = r.clone();
        tokio::spawn(async move { r.resolve(&bearer(PAT)).await })
    };
    // Aborted while its lookup is at HubSpot (which takes 300 ms to answer).
    wait_until(
        "the lookup reaches HubSpot",
        Duration::from_secs(5),
        || async { introspections(&sim) == 1 },
    )
    .await;
    first.abort();
    let _ = first.await;
    // The slot left pending must not hang or poison later callers.
    let resolved = tokio::time::timeout(Duration::from_secs(3), r.resolve(&bearer(PAT)))
        .await
        .expect("a later caller runs the lookup itself");
    assert_eq!(resolved, app(2001, 1001));
    assert_eq!(r.cached_entries(), 1);
}
