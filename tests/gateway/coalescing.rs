//! Budget multipliers through real sockets: single-record reads that would wait ride batch
//! reads and get exactly the answer their own GET would have had; identical GETs in flight
//! share one upstream call; nothing changes while the budget is free.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::time::Instant;

const READER: &str = "pat-na1-coalesce-reader";
/// Same portal, another app: sees the same records, spends a budget of its own, so seeding
/// and the direct reference GETs cost the readers nothing.
const SEEDER: &str = "pat-na1-coalesce-seeder";

fn world_config(burst_limit: u32, extra: &str) -> hubgate_sim::SimConfig {
    sim_config(&format!(
        r#"
burst_limit = {burst_limit}
burst_window_ms = 1000
{extra}
[[tokens]]
token = "{READER}"
app_id = 1
portal_id = 10
[[tokens]]
token = "{SEEDER}"
app_id = 2
portal_id = 10
burst_limit = 100000
"#
    ))
}

async fn call(url: &str, token: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    send(
        Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// `n` contacts created straight in the simulator; their ids.
async fn seed(sim: &Hubspot, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let inputs: Vec<Value> = chunk
            .iter()
            .map(|i| json!({ "properties": { "email": format!("c{i}@example.com"), "firstname": format!("F{i}"), "lastname": format!("L{i}") } }))
            .collect();
        let (status, _, body) = send(
            Request::post(format!(
                "{}/crm/v3/objects/contacts/batch/create",
                sim.base_url()
            ))
            .header("authorization", format!("Bearer {SEEDER}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({ "inputs": inputs }).to_string(),
            )))
            .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        for record in json(&body)["results"].as_array().unwrap() {
            ids.push(record["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

fn reader_calls(sim: &Hubspot) -> u64 {
    sim.stats()
        .owners
        .iter()
        .find(|o| o.app_id == 1)
        .map_or(0, |o| o.arrivals)
}

/// The answer a direct single GET to the simulator gives, for comparison.
async fn reference(sim: &Hubspot, target: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(&format!("{}{target}", sim.base_url()), SEEDER).await;
    (status, json(&body))
}

/// Asserts that a coalesced answer is the single GET's, field by field (a 404's
/// correlation id is each call's own).
async fn assert_same_as_single_get(sim: &Hubspot, target: &str, status: StatusCode, body: &Value) {
    let (want_status, want) = reference(sim, target).await;
    assert_eq!(status, want_status, "{target}: {body}");
    if status == StatusCode::NOT_FOUND {
        assert_eq!(body["status"], want["status"], "{target}");
        assert_eq!(body["message"], want["message"], "{target}");
        assert!(body["correlationId"].is_string(), "{target}: {body}");
    } else {
        assert_eq!(body, &want, "{target}");
    }
}

/// Reads of `ids` (and of ids that never existed, one in ten), at once, each with one of
/// three property lists and on the v3 or the dated path; returns each target with its
/// answer.
async fn read_load(
    gateway: &Gateway,
    ids: &[String],
    readers: usize,
    query: impl Fn(usize) -> String,
) -> Vec<(String, StatusCode, http::HeaderMap, Value)> {
    let mut tasks = Vec::new();
    for n in 0..readers {
        let id = if n % 10 == 9 {
            format!("{}", 990_000_000 + n % 3)
        } else {
            // Repeats on purpose: several readers of one record share a batch.
            ids[(n * 7) % ids.len().min(25)].clone()
        };
        let path = if n % 4 == 3 {
            format!("/crm/objects/2026-03/contacts/{id}")
        } else {
            format!("/crm/v3/objects/contacts/{id}")
        };
        let target = format!("{path}{}", query(n));
        let url = gateway.url(&target);
        tasks.push(tokio::spawn(async move {
            let (status, headers, body) = call(&url, READER).await;
            (target, status, headers, json(&body))
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

fn mixed_properties(n: usize) -> String {
    match n % 3 {
        0 => String::new(),
        1 => "?properties=email".into(),
        _ => "?properties=firstname,email&archived=false".into(),
    }
}

fn coalesced(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get("x-hubgate-coalesced")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn waiting_reads_ride_batch_reads_and_get_their_own_gets_answer() {
    let _turn = heavy_turn().await;
    let (sim, gateway) = sim_and_gateway(world_config(4, ""), |c| {
        c.budgets.burst_margin_ms = 50;
        c.coalesce.reads = true;
    })
    .await;
    let ids = seed(&sim, 40).await;
    let readers = 150;
    let started = Instant::now();
    let answers = read_load(&gateway, &ids, readers, mixed_properties).await;
    let took = started.elapsed();
    let upstream = reader_calls(&sim);
    let mut sizes = Vec::new();
    for (target, status, headers, body) in &answers {
        if let Some(size) = coalesced(headers) {
            sizes.push(size);
            if *status == StatusCode::OK {
                assert_eq!(headers["content-type"], "application/json", "{target}");
            }
        }
        assert_same_as_single_get(&sim, target, *status, body).await;
    }
    let found = answers.iter().filter(|a| a.1 == StatusCode::OK).count();
    let missing = answers
        .iter()
        .filter(|a| a.1 == StatusCode::NOT_FOUND)
        .count();
    println!(
        "{readers} reads ({found} found, {missing} missing) in {took:?}: {upstream} upstream calls, {} coalesced, largest batch {:?}",
        sizes.len(),
        sizes.iter().max()
    );
    assert_eq!(found + missing, readers);
    assert!(missing >= readers / 10 - 1, "missing ids were asked for");
    assert!(
        sizes.len() >= readers * 9 / 10,
        "most reads waited and were coalesced: {}",
        sizes.len()
    );
    assert!(
        upstream * 5 <= readers as u64,
        "{upstream} upstream calls for {readers} reads"
    );
    let metrics = gateway.metrics().await;
    assert!(
        sample(
            &metrics,
            "hubgate_coalesced_calls_total",
            &[("kind", "batch_read")]
        )
        .unwrap_or(0.0)
            >= sizes.len() as f64
    );
    assert!(sample(&metrics, "hubgate_upstream_calls_saved_total", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(sim.stats().owners[0].rate_limited.total(), 0, "no 429s");
}

#[tokio::test]
async fn reads_with_property_history_ride_batches_of_at_most_fifty() {
    let _turn = heavy_turn().await;
    let (sim, gateway) = sim_and_gateway(world_config(2, ""), |c| {
        c.budgets.burst_margin_ms = 50;
        c.coalesce.reads = true;
    })
    .await;
    let ids = seed(&sim, 30).await;
    let answers = read_load(&gateway, &ids, 124, |_| {
        "?properties=email&propertiesWithHistory=firstname".into()
    })
    .await;
    let sizes: Vec<usize> = answers.iter().filter_map(|a| coalesced(&a.2)).collect();
    println!("history batches: largest {:?}", sizes.iter().max());
    assert!(sizes.iter().all(|&s| s <= 50), "{sizes:?}");
    assert!(sizes.contains(&50), "{sizes:?}");
    for (target, status, _, body) in answers.iter().step_by(5) {
        assert_same_as_single_get(&sim, target, *status, body).await;
    }
}

#[tokio::test]
async fn a_batch_refused_whole_falls_back_to_single_gets() {
    let batches = Arc::new(AtomicUsize::new(0));
    let gets = Arc::new(AtomicUsize::new(0));
    let (b, g) = (batches.clone(), gets.clone());
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        let (b, g) = (b.clone(), g.clone());
        async move {
            let path = request.uri().path().to_string();
            let _ = request.into_body().collect().await;
            if path.ends_with("/batch/read") {
                b.fetch_add(1, Ordering::SeqCst);
                return Response::builder()
                    .status(400)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"status":"error","message":"Property values were not valid","category":"VALIDATION_ERROR","correlationId":"c"}"#,
                    )))
                    .unwrap();
            }
            g.fetch_add(1, Ordering::SeqCst);
            let id = path.rsplit('/').next().unwrap_or_default().to_string();
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    json!({ "id": id, "properties": {} }).to_string(),
                )))
                .unwrap()
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{addr}"), |c| {
        c.budgets.anonymous_limit = 2;
        c.budgets.anonymous_window_ms = 300;
        c.coalesce.reads = true;
    })
    .await;
    let mut tasks = Vec::new();
    for n in 0..10 {
        let url = gateway.url(&format!("/crm/v3/objects/contacts/{}", 500 + n));
        tasks.push(tokio::spawn(async move { (n, get(&url).await) }));
    }
    for task in tasks {
        let (n, (status, headers, body)) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["id"], (500 + n).to_string());
        assert!(coalesced(&headers).is_none(), "answered by its own GET");
    }
    println!(
        "batch reads {}, single GETs {}",
        batches.load(Ordering::SeqCst),
        gets.load(Ordering::SeqCst)
    );
    assert!(batches.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        gets.load(Ordering::SeqCst),
        10,
        "every read got its own GET"
    );
}

#[tokio::test]
async fn fifty_identical_gets_share_one_upstream_call() {
    let (sim, gateway) = sim_and_gateway(
        world_config(1000, "[faults]\nanswer_latency_ms = 400\n"),
        |c| c.coalesce.identical_gets = true,
    )
    .await;
    let ids = seed(&sim, 1).await;
    let target = format!("/crm/v3/objects/contacts/{}?properties=email", ids[0]);
    // Proves the credential first, so the identity lookup is not part of what is shared.
    let _ = call(&gateway.url("/crm/v3/objects/contacts/1"), READER).await;
    let before = reader_calls(&sim);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = gateway.url(&target);
        tasks.push(tokio::spawn(async move { call(&url, READER).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let upstream = reader_calls(&sim) - before;
    println!("50 identical GETs: {upstream} upstream calls");
    assert_eq!(upstream, 1);
    let (status, headers, body) = &answers[0];
    assert_eq!(*status, StatusCode::OK);
    for answer in &answers {
        assert_eq!(answer.0, *status);
        assert_eq!(answer.2, *body);
        assert_eq!(answer.1["content-type"], headers["content-type"]);
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "hubgate_coalesced_calls_total",
            &[("kind", "identical_get")]
        )
        .unwrap_or(0.0),
        49.0
    );
}

#[tokio::test]
async fn nothing_is_coalesced_while_the_budget_is_free() {
    let _turn = heavy_turn().await;
    let mut medians = HashMap::new();
    for on in [false, true] {
        let (sim, gateway) = sim_and_gateway(world_config(1000, ""), |c| {
            c.coalesce.reads = on;
            c.coalesce.identical_gets = on;
        })
        .await;
        let ids = seed(&sim, 10).await;
        let _ = call(&gateway.url("/crm/v3/objects/contacts/1"), READER).await;
        let before = reader_calls(&sim);
        let mut took = Vec::new();
        for n in 0..40 {
            let target = format!("/crm/v3/objects/contacts/{}", ids[n % ids.len()]);
            let started = Instant::now();
            let (status, headers, _) = call(&gateway.url(&target), READER).await;
            took.push(started.elapsed());
            assert_eq!(status, StatusCode::OK);
            assert!(coalesced(&headers).is_none(), "a free slot: sent alone");
        }
        assert_eq!(reader_calls(&sim) - before, 40, "every read went as itself");
        took.sort();
        medians.insert(on, took[took.len() / 2]);
    }
    println!(
        "median read: off {:?}, on {:?}",
        medians[&false], medians[&true]
    );
    assert!(
        medians[&true] <= medians[&false] * 3 + Duration::from_millis(5),
        "latency unchanged: {medians:?}"
    );
}

#[tokio::test]
async fn a_batch_that_draws_a_429_is_retried_and_readers_that_left_are_not_asked_for() {
    let batch_inputs = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let seen = batch_inputs.clone();
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = request.uri().path().to_string();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if !path.ends_with("/batch/read") {
                let id = path.rsplit('/').next().unwrap_or_default().to_string();
                return Response::new(Full::new(Bytes::from(
                    json!({ "id": id, "properties": {} }).to_string(),
                )));
            }
            let ids: Vec<String> = json(&body)["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect();
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(ids.clone());
                seen.len() == 1
            };
            if first {
                return Response::builder()
                    .status(429)
                    .body(Full::new(Bytes::from_static(
                        br#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"TEN_SECONDLY_ROLLING"}"#,
                    )))
                    .unwrap();
            }
            // HubSpot's order is not the inputs': reversed here.
            let results: Vec<Value> = ids
                .iter()
                .rev()
                .filter(|id| id.as_str() != "999")
                .map(|id| json!({ "id": id, "properties": { "email": format!("{id}@x") }, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z", "archived": false }))
                .collect();
            Response::builder()
                .status(207)
                .body(Full::new(Bytes::from(
                    json!({ "status": "COMPLETE", "results": results, "numErrors": 1, "errors": [{ "status": "error", "category": "OBJECT_NOT_FOUND", "context": { "ids": ["999"] } }] })
                        .to_string(),
                )))
                .unwrap()
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{addr}"), |c| {
        c.budgets.anonymous_limit = 1;
        c.budgets.anonymous_window_ms = 300;
        c.budgets.idle_ttl_ms = 500;
        c.retry.base_delay_ms = 10;
        c.retry.max_delay_ms = 50;
        c.coalesce.reads = true;
    })
    .await;
    // Spends the window's one slot, so the reads below wait and ride a batch.
    let (status, headers, _) = get(&gateway.url("/crm/v3/objects/contacts/1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(coalesced(&headers).is_none());
    let mut readers = Vec::new();
    for id in (600..606).chain([999]) {
        let url = gateway.url(&format!("/crm/v3/objects/contacts/{id}?properties=email"));
        readers.push((id, tokio::spawn(async move { get(&url).await })));
    }
    let hurried = {
        let request = Request::get(gateway.url("/crm/v3/objects/contacts/888?properties=email"))
            .header("x-hubgate-deadline-ms", "30")
            .body(Full::new(Bytes::new()))
            .unwrap();
        tokio::spawn(async move { send(request).await })
    };
    let gone = {
        let url = gateway.url("/crm/v3/objects/contacts/777?properties=email");
        tokio::spawn(async move { get(&url).await })
    };
    // Long enough for the caller to be queued in the batch, far shorter than its wait.
    tokio::time::sleep(Duration::from_millis(20)).await;
    gone.abort();
    let (status, _, body) = hurried.await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body:?}");
    assert_eq!(json(&body)["policyName"], "HUBGATE_DEADLINE");
    for (id, reader) in readers {
        let (status, headers, body) = reader.await.unwrap();
        let body = json(&body);
        if id == 999 {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body["message"], "resource not found");
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["id"], id.to_string());
            assert_eq!(body["properties"]["email"], format!("{id}@x"));
            assert_eq!(headers["x-hubgate-retries"], "1");
        }
        assert_eq!(coalesced(&headers), Some(7));
    }
    let sent = batch_inputs.lock().unwrap().clone();
    println!("batch reads sent: {sent:?}");
    assert_eq!(sent.len(), 2, "the 429 was retried once");
    for ids in &sent {
        assert_eq!(ids.len(), 7);
        assert!(!ids.contains(&"888".to_string()) && !ids.contains(&"777".to_string()));
    }
    gateway.assert_settles(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_reload_turns_identical_get_sharing_on_in_place() {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let addr = upstream(move |_request: Request<hyper::body::Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            // Keeps the ten identical GETs of a round in flight together.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::new(Full::new(Bytes::from_static(b"{\"results\":[]}")))
        }
    })
    .await;
    let text = |on: bool| {
        format!("[upstream]\nbase_url = \"http://{addr}\"\n\n[coalesce]\nidentical_gets = {on}\n")
    };
    let file = ConfigFile::new(&text(false));
    let gateway = Gateway::start_from_file(file.path()).await;
    let round = || async {
        let before = hits.load(Ordering::SeqCst);
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let url = gateway.url("/crm/v3/objects/contacts?limit=1");
                tokio::spawn(async move { get(&url).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().0, StatusCode::OK);
        }
        hits.load(Ordering::SeqCst) - before
    };
    let off = round().await;
    file.write(&text(true));
    let (status, _, body) = send(
        Request::post(format!("http://{}/admin/reload", gateway.admin))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        json(&body)["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "coalesce.identical_gets"),
        "{}",
        json(&body)
    );
    let on = round().await;
    println!("upstream calls for 10 identical GETs: {off} before the reload, {on} after");
    assert_eq!(off, 10);
    assert_eq!(on, 1);
}
