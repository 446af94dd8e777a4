//! The Redis store on its own: its script's semantics against the in-memory engine,
//! sends made late, TLS to Redis, reloaded limits, daily budgets and shared lessons, and
//! the same script on a Redis Cluster.

use std::time::Duration;

use crate::support::*;
use hubgate::pace::clock::Clock;
use hubgate::store::{BudgetStore, Lesson};
use hubgate::store::{OnFailure, RedisSettings, RedisStore};
use hubgate_engine::{BudgetBook, BudgetKey, DailySpec, Limits, Reservation, Tick, WindowSpec};

const MS: u64 = 1_000;
const APP: BudgetKey = BudgetKey::Burst {
    app_id: 1,
    portal_id: 10,
};
const DAILY: BudgetKey = BudgetKey::Daily { portal_id: 10 };

fn settings(redis: &RedisServer, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: redis.url(),
        cluster_seeds: Vec::new(),
        key_prefix: prefix.into(),
        on_failure: OnFailure::LocalShare,
        replicas: 2,
        command_timeout: Duration::from_millis(500),
        degrade_after: Duration::from_millis(1_000),
        connect_timeout: Duration::from_millis(500),
        reconnect_interval: Duration::from_millis(100),
        ca_file: None,
    }
}

fn store(redis: &RedisServer, limits: &Limits) -> RedisStore {
    RedisStore::new(
        settings(redis, "t"),
        limits.clone(),
        prometheus::IntGauge::new("g", "g").unwrap(),
    )
    .unwrap()
}

fn burst_limits(limit: u32, window_ms: u64, daily: DailySpec) -> Limits {
    Limits {
        burst: WindowSpec::new(limit, Duration::from_millis(window_ms)),
        daily,
        ..Limits::default()
    }
}

/// How far `t` is from `now`, in ms (negative = earlier).
fn ms_after(t: Tick, now: Tick) -> i64 {
    (t.as_micros() as i64 - now.as_micros() as i64) / 1_000
}

#[tokio::test]
async fn a_burst_from_idle_goes_at_once_and_the_next_waits_one_window_like_the_engine() {
    let redis = RedisServer::start();
    let limits = burst_limits(5, 500, DailySpec::default());
    let (a, b) = (store(&redis, &limits), store(&redis, &limits));
    let mut book = BudgetBook::new(limits.clone());
    let clock = Clock::new();
    // Two "replicas" spend one budget: 3 + 2 sends fill it.
    for s in [&a, &a, &a, &b, &b] {
        assert_eq!(
            s.reserve(&[APP], clock.now(), clock.unix_ms()).await,
            Reservation::Granted
        );
        assert_eq!(book.reserve(&[APP], Tick::ZERO, 0), Reservation::Granted);
    }
    let now = clock.now();
    let Reservation::NotBefore(t) = a.reserve(&[APP], now, clock.unix_ms()).await else {
        panic!("the 6th send must wait")
    };
    let Reservation::NotBefore(engine) = book.reserve(&[APP], Tick::ZERO, 0) else {
        panic!("the engine refuses too")
    };
    assert_eq!(engine, Tick(500 * MS));
    let wait = ms_after(t, now);
    assert!((440..=510).contains(&wait), "waits {wait} ms, engine 500");
    // Waking at the answer is never too early: Redis's clock has reached it by then. (The
    // window is Redis's, on its wall clock: only waiting moves it.)
    tokio::time::sleep_until(clock.instant_of(t)).await;
    assert_eq!(
        b.reserve(&[APP], clock.now(), clock.unix_ms()).await,
        Reservation::Granted
    );
    assert_eq!(a.round_trips() + b.round_trips(), 7);
    // Idle keys expire: the log lives one span (plus a second), not forever.
    let ttl = redis.command(&["PTTL", "t:{p10}:burst:1"]).unwrap();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((1..=1_500).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn a_send_one_replica_made_late_holds_its_slot_for_every_replica() {
    let redis = RedisServer::start();
    let limits = burst_limits(3, 1_000, DailySpec::default());
    let (a, b) = (store(&redis, &limits), store(&redis, &limits));
    let clock = Clock::new();
    for _ in 0..3 {
        assert_eq!(
            a.reserve(&[APP], clock.now(), clock.unix_ms()).await,
            Reservation::Granted
        );
    }
    let admitted = clock.now();
    // Two of A's sends were answered 300 ms later: the lateness under test, on Redis's
    // wall clock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = clock.now();
    for _ in 0..2 {
        a.learn(
            Lesson::ArrivedBy {
                key: APP,
                admitted,
                held_at: admitted,
                by: sent,
            },
            clock.now(),
            clock.unix_ms(),
        )
        .await;
    }
    // One slot frees a window after the burst, the two late ones 300 ms after that.
    let asked = clock.now();
    let Reservation::NotBefore(t) = b.reserve(&[APP], asked, clock.unix_ms()).await else {
        panic!("the window is full")
    };
    let wait = ms_after(t, asked);
    assert!(
        (640..=720).contains(&wait),
        "the on-time slot frees in {wait} ms"
    );
    // Until the slot frees on Redis's clock.
    tokio::time::sleep_until(clock.instant_of(t)).await;
    assert_eq!(
        b.reserve(&[APP], clock.now(), clock.unix_ms()).await,
        Reservation::Granted
    );
    let asked = clock.now();
    let Reservation::NotBefore(t) = b.reserve(&[APP], asked, clock.unix_ms()).await else {
        panic!("the late sends still hold their slots")
    };
    let wait = ms_after(t, asked);
    assert!(
        (250..=320).contains(&wait),
        "the late slots free in {wait} ms"
    );
}

#[tokio::test]
async fn redis_over_tls_is_trusted_through_ca_file_and_refused_without_it() {
    let pki = crate::support::pki::make_pki();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca = file("ca.pem", &pki.ca_pem);
    // The plain port is the test's own view into Redis; the store gets the TLS one only.
    let redis = RedisServer::start_tls(Tls {
        cert: file("redis.pem", &pki.server_cert_pem),
        key: file("redis.key", &pki.server_key_pem),
        ca: ca.clone(),
    });
    let limits = burst_limits(5, 10_000, DailySpec::default());
    let over_tls = |ca_file: Option<std::path::PathBuf>| {
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let settings = RedisSettings {
            url: redis.tls_url(),
            ca_file,
            ..settings(&redis, "tls")
        };
        (
            RedisStore::new(settings, limits.clone(), gauge.clone()).unwrap(),
            gauge,
        )
    };
    let clock = Clock::new();
    let (trusted, degraded) = over_tls(Some(ca.clone()));
    for _ in 0..3 {
        assert_eq!(
            trusted.reserve(&[APP], clock.now(), clock.unix_ms()).await,
            Reservation::Granted
        );
    }
    assert_eq!(degraded.get(), 0, "the store reached Redis over TLS");
    let log = redis.command(&["LLEN", "tls:{p10}:burst:1"]).unwrap();
    assert_eq!(log.trim(), ":3", "three sends in Redis's log");

    // The same server with only the public roots: its certificate is refused, nothing
    // reaches Redis, and the store says it is degraded.
    let (untrusting, degraded) = over_tls(None);
    let _ = untrusting
        .reserve(&[APP], clock.now(), clock.unix_ms())
        .await;
    assert_eq!(
        degraded.get(),
        1,
        "an untrusted certificate is a failed Redis"
    );
    let log = redis.command(&["LLEN", "tls:{p10}:burst:1"]).unwrap();
    assert_eq!(log.trim(), ":3", "nothing more in Redis's log");
}

#[tokio::test]
async fn reloaded_limits_apply_to_the_shared_budgets_and_their_state_carries_over() {
    use hubgate::store::BudgetStore;
    let redis = RedisServer::start();
    let store = store(&redis, &burst_limits(2, 30_000, DailySpec::default()));
    let clock = Clock::new();
    let reserve = || store.reserve(&[APP], clock.now(), clock.unix_ms());
    assert_eq!(reserve().await, Reservation::Granted);
    assert_eq!(reserve().await, Reservation::Granted);
    assert!(matches!(reserve().await, Reservation::NotBefore(_)));
    // Raised: the two sends in Redis still count, two more go now.
    store.set_limits(
        burst_limits(4, 30_000, DailySpec::default()),
        clock.unix_ms(),
    );
    assert_eq!(reserve().await, Reservation::Granted);
    assert_eq!(reserve().await, Reservation::Granted);
    assert!(matches!(reserve().await, Reservation::NotBefore(_)));
    // Lowered below what was sent: nothing goes until the window slides.
    store.set_limits(
        burst_limits(3, 30_000, DailySpec::default()),
        clock.unix_ms(),
    );
    assert!(matches!(reserve().await, Reservation::NotBefore(_)));
    let views = store.snapshot(clock.now(), clock.unix_ms());
    let view = views.iter().find(|v| v.key == APP).expect("the local view");
    assert_eq!(view.limit, 3, "the admin view reports the new limit");
}

#[tokio::test]
async fn a_spent_daily_budget_refuses_until_local_midnight_then_resets() {
    let redis = RedisServer::start();
    let clock = Clock::new();
    // A time zone whose midnight is 3 to 4 s away (offsets are whole seconds) (Redis's clock decides; it is ours).
    let day = 86_400_000i64;
    let now_ms = clock.unix_ms();
    let offset_secs = ((day - 3_000 - now_ms.rem_euclid(day)) / 1_000) as i32;
    let spec = DailySpec {
        limit: 2,
        utc_offset_secs: offset_secs,
    };
    let limits = burst_limits(100, 1_000, spec);
    let s = store(&redis, &limits);
    let mut book = BudgetBook::new(limits.clone());
    for _ in 0..2 {
        assert_eq!(
            s.reserve(&[APP, DAILY], clock.now(), clock.unix_ms()).await,
            Reservation::Granted
        );
        book.reserve(&[APP, DAILY], Tick::ZERO, now_ms);
    }
    let Reservation::DailyExhausted(spent) =
        s.reserve(&[APP, DAILY], clock.now(), clock.unix_ms()).await
    else {
        panic!("the third call of the day must be refused")
    };
    let Reservation::DailyExhausted(engine) = book.reserve(&[APP, DAILY], Tick::ZERO, now_ms)
    else {
        panic!("the engine refuses too")
    };
    assert_eq!(spent, engine, "same reset as the engine");
    let until = spent.resets_at_unix_ms - clock.unix_ms();
    assert!((0..=4_100).contains(&until), "resets in {until} ms");
    // The refusal spent nothing in the burst window either (all or nothing).
    let log = redis.command(&["LLEN", "t:{p10}:burst:1"]).unwrap();
    assert!(log.starts_with(":2"), "{log}");
    // Past midnight in that time zone, on Redis's clock.
    tokio::time::sleep(Duration::from_millis(until as u64 + 100)).await;
    assert_eq!(
        s.reserve(&[APP, DAILY], clock.now(), clock.unix_ms()).await,
        Reservation::Granted
    );
}

#[tokio::test]
async fn what_one_replica_learns_every_replica_obeys() {
    let redis = RedisServer::start();
    let limits = burst_limits(
        10,
        500,
        DailySpec {
            limit: 100,
            utc_offset_secs: 0,
        },
    );
    let (a, b) = (store(&redis, &limits), store(&redis, &limits));
    let clock = Clock::new();
    // A 429's pause, learned by A, holds B.
    let now = clock.now();
    a.learn(
        Lesson::BlockUntil {
            key: APP,
            until: now.saturating_add(Duration::from_millis(300)),
        },
        now,
        clock.unix_ms(),
    )
    .await;
    let asked = clock.now();
    let Reservation::NotBefore(t) = b.reserve(&[APP], asked, clock.unix_ms()).await else {
        panic!("blocked window must refuse")
    };
    let wait = ms_after(t, asked);
    assert!((250..=310).contains(&wait), "blocked for {wait} ms more");
    // Until the pause ends on Redis's clock.
    tokio::time::sleep_until(clock.instant_of(t)).await;
    // HubSpot says 3 left: after the send above, both replicas see 3 more slots, no more.
    assert_eq!(
        b.reserve(&[APP], clock.now(), clock.unix_ms()).await,
        Reservation::Granted
    );
    a.learn(
        Lesson::Remaining {
            key: APP,
            remaining: 3,
        },
        clock.now(),
        clock.unix_ms(),
    )
    .await;
    for s in [&b, &a, &b] {
        assert_eq!(
            s.reserve(&[APP], clock.now(), clock.unix_ms()).await,
            Reservation::Granted
        );
    }
    assert!(matches!(
        a.reserve(&[APP], clock.now(), clock.unix_ms()).await,
        Reservation::NotBefore(_)
    ));
    // A lowered daily remaining and a DAILY 429 reach the other replica.
    b.learn(
        Lesson::Remaining {
            key: DAILY,
            remaining: 1,
        },
        clock.now(),
        clock.unix_ms(),
    )
    .await;
    assert_eq!(
        a.reserve(&[DAILY], clock.now(), clock.unix_ms()).await,
        Reservation::Granted
    );
    assert!(matches!(
        a.reserve(&[DAILY], clock.now(), clock.unix_ms()).await,
        Reservation::DailyExhausted(_)
    ));
    let other = BudgetKey::Daily { portal_id: 20 };
    a.learn(
        Lesson::DailyExhausted { portal_id: 20 },
        clock.now(),
        clock.unix_ms(),
    )
    .await;
    assert!(matches!(
        b.reserve(&[other], clock.now(), clock.unix_ms()).await,
        Reservation::DailyExhausted(_)
    ));
}

/// The script on a cluster: the same answers as on one node for budgets on every master,
/// and a master that lost its scripts (`SCRIPT FLUSH`, as after a restart or a promotion)
/// is sent the script again by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_script_answers_as_on_one_node_and_reloads_where_flushed() {
    let cluster = RedisCluster::start(3, 0);
    let limits = burst_limits(5, 500, DailySpec::default());
    let settings = RedisSettings {
        url: String::new(),
        cluster_seeds: cluster.urls(),
        key_prefix: "cl".into(),
        on_failure: OnFailure::LocalShare,
        replicas: 2,
        command_timeout: Duration::from_millis(500),
        degrade_after: Duration::from_millis(1_000),
        connect_timeout: Duration::from_millis(500),
        reconnect_interval: Duration::from_millis(100),
        ca_file: None,
    };
    let store = RedisStore::new(
        settings,
        limits.clone(),
        prometheus::IntGauge::new("g", "g").unwrap(),
    )
    .unwrap();
    let clock = Clock::new();
    // Portals until every master holds one.
    let mut masters = std::collections::BTreeSet::new();
    let mut portals = Vec::new();
    for portal in 1..1_000u64 {
        if masters.insert(cluster.master_of(&format!("{{p{portal}}}"))) {
            portals.push(portal);
        }
        if masters.len() == 3 {
            break;
        }
    }
    for round in 0..2 {
        if round == 1 {
            assert!(cluster
                .on_every_node(&["SCRIPT", "FLUSH"])
                .iter()
                .all(|answer| answer.as_deref().map(str::trim) == Some("OK")));
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        for portal in &portals {
            let keys = [
                BudgetKey::Burst {
                    app_id: 1,
                    portal_id: *portal,
                },
                BudgetKey::Daily { portal_id: *portal },
            ];
            for _ in 0..5 {
                assert_eq!(
                    store.reserve(&keys, clock.now(), clock.unix_ms()).await,
                    Reservation::Granted,
                    "portal {portal}, round {round}"
                );
            }
            let now = clock.now();
            let Reservation::NotBefore(t) = store.reserve(&keys, now, clock.unix_ms()).await else {
                panic!("portal {portal}: the 6th send must wait")
            };
            let wait = ms_after(t, now);
            assert!(
                (380..=510).contains(&wait),
                "portal {portal}: waits {wait} ms"
            );
        }
    }
    assert_eq!(store.health(), hubgate::store::StoreHealth::Healthy);
}

#[tokio::test]
async fn a_probes_refused_followers_are_held_until_its_answer_lands() {
    let redis = RedisServer::start();
    let limits = Limits {
        burst: WindowSpec::new(110, Duration::from_secs(10)).learning_first(),
        ..Limits::default()
    };
    let s = store(&redis, &limits);
    let clock = Clock::new();
    let (now, unix_ms) = (clock.now(), clock.unix_ms());
    // One batch from idle: the probe goes, the rest wait for its answer.
    let asks: Vec<&[BudgetKey]> = vec![&[APP]; 3];
    let answers = s.reserve_many(&asks, now, unix_ms).await;
    let [Reservation::Granted, Reservation::NotBefore(t)] = answers[..] else {
        panic!("the probe alone goes: {answers:?}")
    };
    // Kept, so a lane woken by an arrival sleeps on instead of hearing it again from Redis.
    assert_eq!(s.known_wait(&[APP], clock.now()), Some(t));
    let before = s.round_trips();
    s.learn(
        Lesson::Usage {
            key: APP,
            hub_used: 1,
            max: 110,
            admitted: now,
        },
        clock.now(),
        clock.unix_ms(),
    )
    .await;
    assert_eq!(s.round_trips(), before + 1);
    // Its answer is in Redis: the rest may go, and Redis grants them.
    assert_eq!(s.known_wait(&[APP], clock.now()), None);
    let answers = s
        .reserve_many(&asks[1..], clock.now(), clock.unix_ms())
        .await;
    assert_eq!(answers, [Reservation::Granted, Reservation::Granted]);
}
