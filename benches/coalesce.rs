//! The budget multiplier, end to end: 200 closed-loop callers read random contacts of one
//! owner (one in ten never existed) through hubgate at HubSpot's real limit (110 calls per
//! 10 s), without coalescing, coalescing only what would wait, and gathering while the
//! budget is tight; reads answered per window, latency, and every answer checked against
//! a direct single GET of the same id. `cargo bench --bench coalesce`; results go to
//! BENCHMARKS.md.

// Each bench uses part of the shared helpers; this one reads its own way.
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hubgate::config::StaticCredential;
use hubgate::Config;
use hubgate_sim::{SimConfig, Simulator};
use rand::Rng as _;
use serde_json::{json, Value};
use support::{client, HttpClient};
use tokio::net::TcpListener;
use tokio::time::Instant;

const LIMIT: u32 = 110;
const WINDOW_MS: u64 = 10_000;
const WINDOWS: u64 = 3;
const CALLERS: usize = 200;
const CONTACTS: usize = 1000;
const READER: &str = "pat-na1-bench-reader";
const SEEDER: &str = "pat-na1-bench-seeder";
const QUERY: &str = "?properties=email,firstname";

async fn simulator() -> Simulator {
    let config = SimConfig::from_toml_str(&format!(
        r#"burst_limit = {LIMIT}
burst_window_ms = {WINDOW_MS}
daily_limit = 0
[[tokens]]
token = "{READER}"
app_id = 1
portal_id = 10
[[tokens]]
token = "{SEEDER}"
app_id = 2
portal_id = 10
burst_limit = 1000000
"#
    ))
    .unwrap();
    Simulator::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap()
}

async fn gateway(sim: &Simulator, coalesce: Option<u32>) -> String {
    let mut config = Config::default();
    config.upstream.base_url = sim.base_url();
    config.budgets.burst_limit = LIMIT;
    config.budgets.burst_window_ms = WINDOW_MS;
    config.budgets.burst_margin_ms = 20;
    config.budgets.daily_limit = 0;
    config.queue.max_wait_ms = 60_000;
    if let Some(gather) = coalesce {
        config.coalesce.reads = true;
        config.coalesce.gather_below_free_percent = gather;
    }
    config.credentials = vec![StaticCredential {
        token: Some(READER.into()),
        token_sha256: None,
        app_id: 1,
        portal_id: 10,
    }];
    support::start_gateway(config).await
}

async fn call(client: &HttpClient, url: String, token: &str) -> (StatusCode, bool, Bytes) {
    let request = Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    match client.request(request).await {
        Ok(response) => {
            let status = response.status();
            let coalesced = response.headers().contains_key("x-hubgate-coalesced");
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            (status, coalesced, body.unwrap_or_default())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, false, Bytes::new()),
    }
}

async fn seed(client: &HttpClient, sim: &Simulator) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..CONTACTS / 100 {
        let inputs: Vec<Value> = (0..100)
            .map(|i| json!({ "properties": { "email": format!("r{chunk}-{i}@example.com"), "firstname": format!("R{i}") } }))
            .collect();
        let request = Request::post(format!(
            "{}/crm/v3/objects/contacts/batch/create",
            sim.base_url()
        ))
        .header("authorization", format!("Bearer {SEEDER}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({ "inputs": inputs }).to_string(),
        )))
        .unwrap();
        let body = client
            .request(request)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        for record in answer["results"].as_array().unwrap() {
            ids.push(record["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

struct Leg {
    reads: Vec<(String, StatusCode, bool, Bytes, Duration)>,
    upstream_calls: u64,
    upstream_429s: u64,
}

async fn leg(client: &HttpClient, sim: &Simulator, base: &str, ids: &Arc<Vec<String>>) -> Leg {
    let before = sim.stats();
    let span = Duration::from_millis(WINDOW_MS * WINDOWS);
    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (client, base, ids) = (client.clone(), base.to_string(), ids.clone());
        callers.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            while started.elapsed() < span {
                let id = {
                    let mut rng = rand::rng();
                    if rng.random_range(0..10) == 0 {
                        format!("{}", 900_000_000 + rng.random_range(0..1000))
                    } else {
                        ids[rng.random_range(0..ids.len())].clone()
                    }
                };
                let sent = Instant::now();
                let url = format!("{base}/crm/v3/objects/contacts/{id}{QUERY}");
                let (status, coalesced, body) = call(&client, url, READER).await;
                // Only reads answered inside the span count toward it.
                if started.elapsed() <= span {
                    reads.push((id, status, coalesced, body, sent.elapsed()));
                }
            }
            reads
        }));
    }
    let mut reads = Vec::new();
    for caller in callers {
        reads.extend(caller.await.unwrap());
    }
    let after = sim.stats();
    let of = |stats: &hubgate_sim::SimStats| {
        stats
            .owners
            .iter()
            .find(|o| o.app_id == 1)
            .map_or((0, 0), |o| (o.arrivals, o.rate_limited.total()))
    };
    let ((a0, r0), (a1, r1)) = (of(&before), of(&after));
    Leg {
        reads,
        upstream_calls: a1 - a0,
        upstream_429s: r1 - r0,
    }
}

/// Answers that differ from a direct single GET of the same id (a 404's correlation id
/// is each call's own).
async fn mismatches(client: &HttpClient, sim: &Simulator, leg: &Leg) -> (usize, usize) {
    let mut reference: HashMap<String, (StatusCode, Value)> = HashMap::new();
    let mut wrong = 0;
    let mut checked = 0;
    for (id, status, _, body, _) in &leg.reads {
        if !matches!(status.as_u16(), 200 | 404) {
            continue;
        }
        if !reference.contains_key(id) {
            let url = format!("{}/crm/v3/objects/contacts/{id}{QUERY}", sim.base_url());
            let (s, _, b) = call(client, url, SEEDER).await;
            reference.insert(
                id.clone(),
                (s, serde_json::from_slice(&b).unwrap_or(Value::Null)),
            );
        }
        let (want_status, want) = &reference[id];
        let got: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let same = *status == *want_status
            && if *status == StatusCode::NOT_FOUND {
                got["message"] == want["message"] && got["status"] == want["status"]
            } else {
                got == *want
            };
        checked += 1;
        if !same {
            wrong += 1;
        }
    }
    (checked, wrong)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    support::run_under_cargo_bench("coalesce", "about two minutes", async {
        println!(
            "hubgate coalescing bench: limit {LIMIT} per {WINDOW_MS} ms, {CALLERS} closed-loop callers reading random contacts of one owner ({CONTACTS} contacts, 1 in 10 ids missing), {WINDOWS} windows per leg"
        );
        println!("\n| coalescing | reads answered per 10 s | × call limit | upstream calls | HubSpot 429s | coalesced answers | p50 ms | p99 ms | answers checked | differing from a single GET |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let client = client();
        for (label, coalesce) in [
            ("off", None),
            (
                "reads, only what would wait (`gather_below_free_percent = 0`)",
                Some(0),
            ),
            ("reads, gathering below half free (default `50`)", Some(50)),
        ] {
            let sim = simulator().await;
            let ids = Arc::new(seed(&client, &sim).await);
            let base = gateway(&sim, coalesce).await;
            let leg = leg(&client, &sim, &base, &ids).await;
            let answered = leg
                .reads
                .iter()
                .filter(|r| matches!(r.1.as_u16(), 200 | 404))
                .count();
            let per_window = answered as f64 / WINDOWS as f64;
            let coalesced = leg.reads.iter().filter(|r| r.2).count();
            let mut latencies: Vec<Duration> = leg.reads.iter().map(|r| r.4).collect();
            latencies.sort();
            let (checked, wrong) = mismatches(&client, &sim, &leg).await;
            println!(
                "| {label} | {per_window:.0} | {:.1} | {} | {} | {coalesced} | {:.0} | {:.0} | {checked} | {wrong} |",
                per_window / f64::from(LIMIT),
                leg.upstream_calls,
                leg.upstream_429s,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
            );
            sim.shutdown().await;
        }
    });
}
