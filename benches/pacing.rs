//! End-to-end pacing numbers, measured in one run on this machine: callers -> hubgate ->
//! simulator, all in one process on 127.0.0.1, against callers sending straight to the
//! simulator; a burst from idle; and how evenly equal callers of one owner are served
//! (Jain's index). `cargo bench --bench pacing`; results go to BENCHMARKS.md.

mod support;

use support::{client, get, get_as};

use std::time::Duration;

use tokio::time::Instant;

use http::StatusCode;
use hubgate::config::StaticCredential;
use hubgate::Config;
use hubgate_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

const LIMIT: u64 = 110;
const WINDOW_MS: u64 = 2_000;
const WINDOWS: u64 = 5;
const CALLERS: usize = 200;
const BURST_TRIALS: u64 = 20;
/// Callers of one owner in the fairness runs, each named by `X-Hubgate-Caller`.
const FAIR_CALLERS: usize = 10;

async fn simulator() -> Simulator {
    let config = SimConfig::from_toml_str(&format!(
        "burst_limit = {LIMIT}\nburst_window_ms = {WINDOW_MS}\ndaily_limit = 0\ngenerate_tokens = {BURST_TRIALS}"
    ))
    .unwrap();
    Simulator::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap()
}

async fn gateway(sim: &Simulator) -> String {
    let mut config = Config::default();
    config.upstream.base_url = sim.base_url();
    config.budgets.burst_limit = LIMIT as u32;
    config.budgets.burst_window_ms = WINDOW_MS;
    config.budgets.burst_margin_ms = 20;
    config.queue.max_wait_ms = 60_000;
    config.credentials = (1..=BURST_TRIALS)
        .map(|i| StaticCredential {
            token: Some(format!("pat-na1-sim-{i}")),
            token_sha256: None,
            app_id: 2000 + i,
            portal_id: 1000 + i,
        })
        .collect();
    support::start_gateway(config).await
}

/// What closed-loop callers of one owner got over `WINDOWS` windows.
struct Saturation {
    /// Every answer, by status.
    by_status: Vec<(StatusCode, usize)>,
    /// 2xx answered within the measured span, per caller (in the order given).
    ok_in_span: Vec<u64>,
    /// What the rolling window allows in that span.
    allowed: u64,
}

/// Closed-loop callers on one owner for `WINDOWS` windows: `tasks[i]` calls in flight at
/// once for caller `i`, named `caller-i` when `named`, else all from one address.
async fn saturate(base: &str, tasks: &[usize], named: bool) -> Saturation {
    let measured = Duration::from_millis(WINDOW_MS * WINDOWS - WINDOW_MS / 2);
    let started = Instant::now();
    let client = client();
    let mut running = Vec::new();
    for (caller, &in_flight) in tasks.iter().enumerate() {
        for _ in 0..in_flight {
            let (client, base) = (client.clone(), base.to_string());
            let name = named.then(|| format!("caller-{caller}"));
            running.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while started.elapsed() < measured {
                    let status = get_as(&client, &base, "pat-na1-sim-1", name.as_deref()).await;
                    seen.push((caller, status, started.elapsed()));
                }
                seen
            }));
        }
    }
    let mut all = Vec::new();
    for t in running {
        all.extend(t.await.unwrap());
    }
    let first_ok = all
        .iter()
        .filter(|(_, s, _)| s.is_success())
        .map(|(_, _, t)| *t)
        .min()
        .unwrap_or_default();
    let mut ok_in_span = vec![0u64; tasks.len()];
    for (caller, status, at) in &all {
        if status.is_success() && *at < first_ok + measured {
            ok_in_span[*caller] += 1;
        }
    }
    let allowed = LIMIT * (measured.as_millis() as u64).div_ceil(WINDOW_MS);
    let mut by_status: Vec<(StatusCode, usize)> = Vec::new();
    for (_, status, _) in &all {
        match by_status.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += 1,
            None => by_status.push((*status, 1)),
        }
    }
    Saturation {
        by_status,
        ok_in_span,
        allowed,
    }
}

/// Jain's fairness index: 1 when every caller got the same, 1/n when one got everything.
fn jain(served: &[u64]) -> f64 {
    let sum: f64 = served.iter().map(|&x| x as f64).sum();
    let squares: f64 = served.iter().map(|&x| (x as f64).powi(2)).sum();
    sum * sum / (served.len() as f64 * squares).max(f64::MIN_POSITIVE)
}

fn main() {
    support::run_under_cargo_bench("pacing", "minutes", async {
        println!("hubgate pacing bench: limit {LIMIT} per {WINDOW_MS} ms, {CALLERS} closed-loop callers, {WINDOWS} windows");
        for target in ["direct to simulator", "through hubgate"] {
            let sim = simulator().await;
            let base = if target == "through hubgate" {
                gateway(&sim).await
            } else {
                sim.base_url()
            };
            let Saturation {
                by_status,
                ok_in_span,
                allowed,
            } = saturate(&base, &[CALLERS], false).await;
            let ok = ok_in_span[0];
            let owner = sim.stats().owner(2001, 1001).cloned().expect("owner stats");
            println!(
                "saturation {target:>20}: answers {by_status:?}; 2xx in span {ok}/{allowed} allowed = {:.1}% efficiency; simulator saw {} arrivals, {} accepted, {} 429s ({:.1}% of arrivals), max arrivals in a window {}",
                100.0 * ok as f64 / allowed as f64,
                owner.arrivals,
                owner.accepted,
                owner.rate_limited.ten_secondly_rolling,
                100.0 * owner.rate_limited.ten_secondly_rolling as f64 / owner.arrivals.max(1) as f64,
                owner.max_arrivals_in_window,
            );
            sim.shutdown().await;
        }

        for (shape, tasks) in [
            ("10 in flight each", [10; FAIR_CALLERS]),
            ("1 to 10 in flight", std::array::from_fn(|i| i + 1)),
        ] {
            let sim = simulator().await;
            let base = gateway(&sim).await;
            let run = saturate(&base, &tasks, true).await;
            let owner = sim.stats().owner(2001, 1001).cloned().expect("owner stats");
            let served: u64 = run.ok_in_span.iter().sum();
            println!(
                "fairness, {FAIR_CALLERS} equal callers of one owner ({shape}) through hubgate: 2xx in span per caller {:?} (min {}, max {}), {served}/{} allowed; Jain's index {:.4}; simulator 429s {}",
                run.ok_in_span,
                run.ok_in_span.iter().min().unwrap_or(&0),
                run.ok_in_span.iter().max().unwrap_or(&0),
                run.allowed,
                jain(&run.ok_in_span),
                owner.rate_limited.ten_secondly_rolling,
            );
            sim.shutdown().await;
        }

        let sim = simulator().await;
        let base = gateway(&sim).await;
        let client = client();
        // Warm the connection pools both ways, on an owner the trials do not use.
        for _ in 0..4 {
            get(&client, &base, "pat-na1-sim-20").await;
        }
        let mut times = Vec::new();
        for trial in 1..BURST_TRIALS {
            let token = format!("pat-na1-sim-{trial}");
            let started = Instant::now();
            let calls: Vec<_> = (0..LIMIT / 2)
                .map(|_| {
                    let (client, base, token) = (client.clone(), base.clone(), token.clone());
                    tokio::spawn(async move { get(&client, &base, &token).await })
                })
                .collect();
            for c in calls {
                assert!(c.await.unwrap().is_success());
            }
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "burst of {} from idle through hubgate, {} trials: p50 {:?}, max {:?}",
            LIMIT / 2,
            times.len(),
            times[times.len() / 2],
            times[times.len() - 1]
        );
    });
}
