//! Reservations through one Redis against a 3-master Redis Cluster, measured in one run:
//! one owner's reservations one at a time (as its lane sends them), many owners at once
//! spread over the masters, and Redis's own CPU per reservation script (`INFO
//! commandstats`). Starts its own `redis-server`s on free loopback ports.
//! `cargo bench --bench redis_cluster`; results go to BENCHMARKS.md.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hubgate::pace::clock::Clock;
use hubgate::store::{BudgetStore, OnFailure, RedisSettings, RedisStore};
use hubgate_engine::{BudgetKey, Limits, Reservation, WindowSpec};
use tokio::time::Instant;

const SOLO: Duration = Duration::from_secs(3);
const SPREAD: Duration = Duration::from_secs(4);
const OWNERS: u64 = 48;

/// A free loopback port (bound, read, released: the bench runs alone).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Servers {
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Servers {
    fn start(count: usize, cluster: bool) -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().to_string_lossy().into_owned();
        let mut servers = Servers {
            ports: Vec::new(),
            children: Vec::new(),
            _dir: dir,
        };
        for _ in 0..count {
            let port = free_port();
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", &dir_path]);
            if cluster {
                command
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-port", &free_port().to_string()])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
            }
            let child = command
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server installed (scripts/test.sh installs it)");
            servers.ports.push(port);
            servers.children.push(child);
            while cli(port, &["PING"]).as_deref() != Some("PONG") {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if cluster {
            let mut create = Command::new("redis-cli");
            create.args(["--cluster", "create"]);
            for port in &servers.ports {
                create.arg(format!("127.0.0.1:{port}"));
            }
            let created = create
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdout(Stdio::null())
                .status()
                .expect("redis-cli installed (apt-get install -y redis-tools)");
            assert!(created.success(), "redis-cli --cluster create failed");
            for port in &servers.ports {
                while !cli(*port, &["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        servers
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Reservation scripts run and Redis's CPU µs per script, summed over the nodes.
    fn script_stats(&self) -> (u64, f64) {
        let (mut calls, mut usec) = (0u64, 0u64);
        for port in &self.ports {
            let text = cli(*port, &["INFO", "commandstats"]).unwrap_or_default();
            for line in text.lines() {
                if line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:") {
                    let field = |name: &str| {
                        line.split(name)
                            .nth(1)
                            .and_then(|v| v.split(',').next())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    calls += field("calls=");
                    usec += field("usec=");
                }
            }
        }
        (calls, usec as f64 / calls.max(1) as f64)
    }

    fn reset_stats(&self) {
        for port in &self.ports {
            cli(*port, &["CONFIG", "RESETSTAT"]);
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn store(servers: &Servers, cluster: bool) -> RedisStore {
    let urls = servers.urls();
    let settings = RedisSettings {
        url: if cluster {
            String::new()
        } else {
            urls[0].clone()
        },
        cluster_seeds: if cluster { urls } else { Vec::new() },
        key_prefix: "bench".into(),
        on_failure: OnFailure::FailClosed,
        replicas: 1,
        command_timeout: Duration::from_secs(2),
        degrade_after: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        reconnect_interval: Duration::from_millis(500),
        ca_file: None,
    };
    // A window no owner fills at a round trip per reservation (100 per millisecond), with a
    // short log: every reservation is the whole script, granted.
    let limits = Limits {
        burst: WindowSpec::new(100, Duration::from_millis(1)),
        ..Limits::default()
    };
    RedisStore::new(
        settings,
        limits,
        prometheus::IntGauge::new("g", "g").unwrap(),
    )
    .unwrap()
}

fn owner(portal: u64) -> [BudgetKey; 2] {
    [
        BudgetKey::Burst {
            app_id: 1,
            portal_id: portal,
        },
        BudgetKey::Daily { portal_id: portal },
    ]
}

/// Reservations of `owners` owners, each one at a time, for `run`: how many were answered.
async fn reserve_for(store: &RedisStore, owners: u64, run: Duration) -> u64 {
    let clock = Arc::new(Clock::new());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for portal in 1..=owners {
        let (store, clock) = (store.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let keys = owner(portal);
            let mut granted = 0u64;
            while started.elapsed() < run {
                match store.reserve(&keys, clock.now(), clock.unix_ms()).await {
                    // A refusal is the same script and round trip.
                    Reservation::Granted | Reservation::NotBefore(_) => granted += 1,
                    other => panic!("portal {portal}: {other:?}"),
                }
            }
            granted
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

struct Row {
    name: &'static str,
    solo_per_s: f64,
    solo_mean_ms: f64,
    spread_per_s: f64,
    script_us: f64,
}

async fn measure(name: &'static str, masters: usize, cluster: bool) -> Row {
    let servers = Servers::start(masters, cluster);
    let store = store(&servers, cluster);
    // Warm: the scripts are loaded on every master and the slot map is known.
    reserve_for(&store, OWNERS, Duration::from_millis(500)).await;
    servers.reset_stats();
    let solo = reserve_for(&store, 1, SOLO).await;
    let spread = reserve_for(&store, OWNERS, SPREAD).await;
    let (_, script_us) = servers.script_stats();
    Row {
        name,
        solo_per_s: solo as f64 / SOLO.as_secs_f64(),
        solo_mean_ms: SOLO.as_secs_f64() * 1_000.0 / solo as f64,
        spread_per_s: spread as f64 / SPREAD.as_secs_f64(),
        script_us,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Alternated, twice: the machine's load drifts during a run.
    let mut rows = Vec::new();
    for _ in 0..2 {
        rows.push(measure("one node", 1, false).await);
        rows.push(measure("cluster, 3 masters", 3, true).await);
    }
    println!(
        "| store | one owner, reservations/s | one owner, mean round trip | {OWNERS} owners at once, reservations/s | Redis CPU per script |"
    );
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.0} | {:.1} µs |",
            row.name, row.solo_per_s, row.solo_mean_ms, row.spread_per_s, row.script_us
        );
    }
}
