//! Shared budgets on Redis, measured in one run: Redis round trips per forwarded call,
//! latency added by the Redis store against the memory store at the same load, and pacing
//! efficiency with 1, 2 and 3 replicas sharing one Redis. Starts its own `redis-server`
//! on a free loopback port. `cargo bench --bench redis`; results go to BENCHMARKS.md.

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
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", proxy.local_addr().unwrap());
    tokio::spawn(hubgate::run(
        config,
        hubgate::Listeners { proxy, admin },
        std::future::pending(),
    ));
    base
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

fn main() {
    support::run_under_cargo_bench("redis", "about a minute", async {
        let redis = Redis::start();
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
