//! Shared budgets on Redis, measured in one run: Redis round trips per forwarded call,
//! latency added by the Redis store against the memory store at the same load, pacing
//! efficiency with 1, 2 and 3 replicas sharing one Redis, and, with Redis far away behind
//! a delaying proxy (0, 20, 40 and 90 ms round trips), a burst from idle and one owner's
//! throughput. Starts its own `redis-server` on a free loopback port.
//! `cargo bench --bench redis` (`-- far` for the far-Redis part alone); results go to
//! BENCHMARKS.md.

#[path = "../tests/support/delay_proxy.rs"]
mod delay_proxy;
mod support;

use support::{client, get};

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use http::StatusCode;
use hubgate::Config;
use hubgate_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

const TOKEN: &str = "pat-na1-a";
const LIMIT: u64 = 60;
const WINDOW_MS: u64 = 1_000;
const WINDOWS: u64 = 5;
const CALLERS: usize = 60;
const LATENCY_CALLS: usize = 2_000;

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server installed (scripts/test.sh installs it)");
        let redis = Redis { port, child };
        while redis.info_calls().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// EVAL + EVALSHA calls so far (INFO commandstats).
    fn info_calls(&self) -> Option<u64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.write_all(b"INFO commandstats\r\n").ok()?;
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let calls = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split("calls=").nth(1))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        text.contains("# Commandstats")
            .then(|| calls("cmdstat_evalsha:") + calls("cmdstat_eval:"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn simulator(limit: u64) -> Simulator {
    let config = SimConfig::from_toml_str(&format!(
        "burst_limit = {limit}\nburst_window_ms = {WINDOW_MS}\ndaily_limit = 0\n[[tokens]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 10\n"
    ))
    .unwrap();
    Simulator::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap()
}

async fn gateway(sim: &Simulator, limit: u64, redis: Option<(&Redis, &str, u32)>) -> String {
    let mut config = Config::default();
    config.upstream.base_url = sim.base_url();
    config.budgets.burst_limit = limit as u32;
    config.budgets.burst_window_ms = WINDOW_MS;
    config.budgets.burst_margin_ms = 40;
    config.queue.max_wait_ms = 60_000;
    if let Some((redis, prefix, replicas)) = redis {
        config.store.kind = "redis".into();
        config.store.redis_url = format!("redis://127.0.0.1:{}", redis.port);
        config.store.key_prefix = prefix.into();
        config.store.replicas = replicas;
    }
    support::start_gateway(config).await
}

/// `LATENCY_CALLS` calls from `callers` closed-loop callers on a budget that never fills:
/// the latency is hubgate's own plus the store's. Returns sorted latencies.
async fn latencies(base: &str, callers: usize) -> Vec<Duration> {
    let client = client();
    for _ in 0..20 {
        get(&client, base, TOKEN).await; // warm-up: identity, pooled connections
    }
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, base) = (client.clone(), base.to_string());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..LATENCY_CALLS / callers {
                    let t = Instant::now();
                    assert_eq!(get(&client, &base, TOKEN).await, StatusCode::OK);
                    out.push(t.elapsed());
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1_000.0
}

/// Closed-loop callers spread over `bases` for `WINDOWS` windows; (2xx in span, allowed).
async fn saturate(bases: &[String]) -> (u64, u64, u64) {
    let measured = Duration::from_millis(WINDOW_MS * WINDOWS - WINDOW_MS / 2);
    let started = Instant::now();
    let client = client();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (client, base) = (client.clone(), bases[i % bases.len()].clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < measured {
                    let status = get(&client, &base, TOKEN).await;
                    seen.push((status, started.elapsed()));
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let first = all.iter().map(|(_, t)| *t).min().unwrap_or_default();
    let ok = all
        .iter()
        .filter(|(s, t)| s.is_success() && *t < first + measured)
        .count() as u64;
    let not_ok = all.iter().filter(|(s, _)| !s.is_success()).count() as u64;
    let allowed = LIMIT * (measured.as_millis() as u64).div_ceil(WINDOW_MS);
    (ok, allowed, not_ok)
}

/// The reservation script's SHA, as Redis names it: each reservation round trip carries it.
fn load_reserve_script(redis: &Redis) -> String {
    use std::io::{Read, Write};
    let script = include_str!("../src/store/redis/reserve.lua");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let command = format!(
        "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n${}\r\n{script}\r\n",
        script.len()
    );
    s.write_all(command.as_bytes()).unwrap();
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    reply.lines().nth(1).unwrap_or_default().trim().to_string()
}

/// A gateway on Redis behind `proxy`, its owner known in advance (no introspection).
async fn far_gateway(
    sim: &Simulator,
    limit: u64,
    window_ms: u64,
    proxy: &str,
    prefix: &str,
) -> String {
    let mut config = Config::default();
    config.upstream.base_url = sim.base_url();
    config.budgets.burst_limit = limit as u32;
    config.budgets.burst_window_ms = window_ms;
    config.budgets.burst_margin_ms = 40;
    config.queue.max_wait_ms = 60_000;
    config.store.kind = "redis".into();
    config.store.redis_url = proxy.into();
    config.store.key_prefix = prefix.into();
    config.store.command_timeout_ms = 1_000;
    for (token, app_id) in [(TOKEN, 1), (WARM_TOKEN, 2)] {
        config.credentials.push(hubgate::config::StaticCredential {
            token: Some(token.into()),
            token_sha256: None,
            app_id,
            portal_id: 10,
        });
    }
    support::start_gateway(config).await
}

/// Another owner's token: its call opens the gateway's connection to Redis.
const WARM_TOKEN: &str = "pat-na1-warm";

async fn far_simulator(limit: u64, window_ms: u64) -> Simulator {
    let config = SimConfig::from_toml_str(&format!(
        "burst_limit = {limit}\nburst_window_ms = {window_ms}\ndaily_limit = 0\n[[tokens]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 10\n[[tokens]]\ntoken = \"{WARM_TOKEN}\"\napp_id = 2\nportal_id = 10\n"
    ))
    .unwrap();
    Simulator::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap()
}

/// Redis `round_trip` away: a burst of 110 from idle on HubSpot's 110 per 10 s (time to
/// the last answer, reservation round trips), then one owner's throughput on 100 per 1 s.
async fn far(redis: &Redis, sha: &str, round_trip: Duration) {
    let target = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let proxy = delay_proxy::DelayProxy::start(target, round_trip / 2).await;
    let url = proxy.redis_url();
    let client = client();
    let rtt = round_trip.as_millis();

    let sim = far_simulator(110, 10_000).await;
    let base = far_gateway(&sim, 110, 10_000, &url, &format!("burst{rtt}")).await;
    get(&client, &base, WARM_TOKEN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proxy.count_sent(sha.as_bytes());
    let started = Instant::now();
    let calls: Vec<_> = (0..110)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move { get(&client, &base, TOKEN).await })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        ok += usize::from(call.await.unwrap().is_success());
    }
    let took = started.elapsed();
    let trips = proxy.count_sent(sha.as_bytes()) - before;
    let owner = sim.stats().owner(1, 10).cloned().expect("owner stats");
    println!(
        "far redis {rtt} ms: burst of 110 from idle: {ok} x 2xx in {:.1} ms (target {} ms); reservation round trips {trips}; 429s {}",
        took.as_secs_f64() * 1_000.0,
        3 * rtt + 50,
        owner.rate_limited.total()
    );

    const LIMIT: u64 = 100;
    const MEASURED: Duration = Duration::from_millis(3_000);
    let sim = far_simulator(LIMIT, 1_000).await;
    let base = far_gateway(&sim, LIMIT, 1_000, &url, &format!("thr{rtt}")).await;
    get(&client, &base, WARM_TOKEN).await;
    let started = Instant::now();
    let callers: Vec<_> = (0..200)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                while started.elapsed() < MEASURED {
                    let status = get(&client, &base, TOKEN).await;
                    ok += u64::from(status.is_success() && started.elapsed() < MEASURED);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for caller in callers {
        ok += caller.await.unwrap();
    }
    let owner = sim.stats().owner(1, 10).cloned().expect("owner stats");
    let one_per_trip = if rtt == 0 {
        f64::INFINITY
    } else {
        1_000.0 / rtt as f64
    };
    println!(
        "far redis {rtt} ms: one owner, limit {LIMIT}/s, 200 callers, 3 s: {:.1} calls/s = {:.1} % of the budget (one per round trip: {one_per_trip:.1}/s); 429s {}, max in window {}",
        ok as f64 / MEASURED.as_secs_f64(),
        100.0 * ok as f64 / (LIMIT as f64 * MEASURED.as_secs_f64()),
        owner.rate_limited.total(),
        owner.max_arrivals_in_window
    );
}

fn main() {
    let far_only = std::env::args().any(|a| a == "far");
    support::run_under_cargo_bench("redis", "about a minute", async move {
        let redis = Redis::start();
        let sha = load_reserve_script(&redis);
        println!("hubgate redis bench, Redis far away: burst of 110 from idle (110 per 10 s); one owner's throughput (100 per 1 s); Redis behind a proxy adding half the round trip each way");
        for rtt_ms in [0, 20, 40, 90] {
            far(&redis, &sha, Duration::from_millis(rtt_ms)).await;
        }
        if far_only {
            return;
        }
        println!("hubgate redis bench: limit {LIMIT} per {WINDOW_MS} ms, {CALLERS} closed-loop callers, {WINDOWS} windows; latency: {LATENCY_CALLS} calls from 1 and from 8 callers, unsaturated");
        // One caller shows the round trips on a call's own path; eight on one owner add
        // the wait for the owner's lane, whose reservations go to Redis one at a time.
        for callers in [1, 8] {
            for kind in ["memory", "redis"] {
                let sim = simulator(1_000_000).await;
                let prefix = format!("lat{callers}");
                let store = (kind == "redis").then_some((&redis, prefix.as_str(), 1));
                let base = gateway(&sim, 1_000_000, store).await;
                let before = redis.info_calls().unwrap_or(0);
                let lat = latencies(&base, callers).await;
                let scripts = redis.info_calls().unwrap_or(0) - before;
                println!(
                    "latency {kind:>6} store, {callers} caller(s): p50 {:.2} ms, p99 {:.2} ms; scripts per call {:.2}",
                    pct(&lat, 0.5),
                    pct(&lat, 0.99),
                    scripts as f64 / lat.len() as f64
                );
            }
        }
        for replicas in 1..=3u32 {
            let sim = simulator(LIMIT).await;
            let prefix = format!("eff{replicas}");
            let mut bases = Vec::new();
            for _ in 0..replicas {
                bases.push(gateway(&sim, LIMIT, Some((&redis, &prefix, replicas))).await);
            }
            let before = redis.info_calls().unwrap_or(0);
            let (ok, allowed, not_ok) = saturate(&bases).await;
            let scripts = redis.info_calls().unwrap_or(0) - before;
            let owner = sim.stats().owner(1, 10).cloned().expect("owner stats");
            println!(
                "saturation {replicas} replica(s): 2xx in span {ok}/{allowed} = {:.1}% efficiency; non-2xx {not_ok}; simulator: {} arrivals, {} 429s, max in window {}; scripts per forwarded call {:.2}",
                100.0 * ok as f64 / allowed as f64,
                owner.arrivals,
                owner.rate_limited.total(),
                owner.max_arrivals_in_window,
                scripts as f64 / owner.arrivals.max(1) as f64
            );
        }
    });
}
