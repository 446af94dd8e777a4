//! Latency hubgate adds at a fixed, light load, measured in one run: an open-loop sender
//! at 1,000 calls/s straight to the simulator and through hubgate (budgets far from
//! binding), each call timed from when it was due, so a stall that delays the calls behind
//! it shows in their times too (no coordinated omission). The two take turns, twice.
//! `cargo bench --bench overhead`; results go to BENCHMARKS.md.

mod support;

use support::{client, get, HttpClient};

use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;
use hubgate::config::StaticCredential;
use hubgate::Config;
use hubgate_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

const RATE_PER_SECOND: u64 = 1_000;
const SECONDS_PER_TURN: u64 = 10;
const TURNS: usize = 2;
const TOKEN: &str = "pat-na1-bench";
/// The engine's largest limit, per 1 s window: never binding at 1,000 calls/s.
const UNBOUND_LIMIT: u32 = 65_536;

async fn simulator() -> Simulator {
    let config = SimConfig::from_toml_str(&format!(
        "burst_limit = {UNBOUND_LIMIT}\nburst_window_ms = 1000\ndaily_limit = 0\n\
         [[tokens]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 1\n"
    ))
    .unwrap();
    Simulator::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap()
}

async fn gateway(sim: &Simulator) -> String {
    let mut config = Config::default();
    config.upstream.base_url = sim.base_url();
    config.budgets.burst_limit = UNBOUND_LIMIT;
    config.budgets.burst_window_ms = 1_000;
    config.credentials = vec![StaticCredential {
        token: Some(TOKEN.into()),
        token_sha256: None,
        app_id: 1,
        portal_id: 1,
    }];
    support::start_gateway(config).await
}

/// Sends `calls` calls at `RATE_PER_SECOND`, each on its own task so a slow answer never
/// holds back the next send, and records each call's time from when it was due, in µs.
/// The schedule is kept by a thread of its own: the runtime's timer ticks in whole ms.
async fn open_loop(client: &HttpClient, base: &str, calls: u64, latencies: &mut Histogram<u64>) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Handle::current();
    let target = base.to_string();
    let (client, base) = (client.clone(), base.to_string());
    let period = Duration::from_nanos(1_000_000_000 / RATE_PER_SECOND);
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..calls {
            let due = start + period * u32::try_from(i).expect("calls fit u32");
            if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(ahead);
            }
            let (client, base, done) = (client.clone(), base.clone(), done_tx.clone());
            runtime.spawn(async move {
                let status = get(&client, &base, TOKEN).await;
                let _ = done.send((status, due.elapsed()));
            });
        }
    });
    let mut failed = Vec::new();
    while let Some((status, latency)) = done_rx.recv().await {
        if !status.is_success() {
            failed.push(status);
        }
        latencies
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))
            .expect("latency within the histogram's range");
    }
    sender.join().expect("the sender thread");
    assert!(
        failed.is_empty(),
        "every call must be answered 2xx; {target} answered {failed:?}"
    );
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn main() {
    support::run_under_cargo_bench("overhead", "about a minute", async {
        let sim = simulator().await;
        let direct = sim.base_url();
        let through = gateway(&sim).await;
        eprintln!("straight to the simulator: {direct}; through hubgate: {through}");
        let client = client();
        let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let (mut direct_us, mut through_us) = (new_histogram(), new_histogram());
        // Warm both paths (connection pools, the owner's lane) before anything counts.
        open_loop(&client, &direct, 500, &mut new_histogram()).await;
        open_loop(&client, &through, 500, &mut new_histogram()).await;
        let calls = RATE_PER_SECOND * SECONDS_PER_TURN;
        for _ in 0..TURNS {
            open_loop(&client, &direct, calls, &mut direct_us).await;
            open_loop(&client, &through, calls, &mut through_us).await;
        }
        println!(
            "open loop at {RATE_PER_SECOND} calls/s, {TURNS} turns of {SECONDS_PER_TURN} s each, \
             {} calls per path, one process (simulator, hubgate, sender) on one runtime; \
             latency from when each call was due:\n",
            direct_us.len()
        );
        println!("| path | p50 | p90 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|---|");
        for (name, h) in [
            ("straight to the simulator", &direct_us),
            ("through hubgate", &through_us),
        ] {
            println!(
                "| {name} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            );
        }
        let added =
            |q: f64| ms(through_us.value_at_quantile(q)) - ms(direct_us.value_at_quantile(q));
        let p99 = added(0.99);
        println!(
            "\nadded by hubgate: p50 {:.3} ms, p99 {p99:.3} ms (target p99 < 1 ms: {})",
            added(0.5),
            if p99 < 1.0 { "met" } else { "missed" }
        );
        sim.shutdown().await;
    });
}
