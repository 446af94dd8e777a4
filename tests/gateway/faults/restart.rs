//! A simulator process killed and restarted under load: every caller gets one clear answer
//! meanwhile, and shared pacing resumes by itself.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::*;

/// `hubgate sim` as a child process on a fixed port, so that it can be killed and started
/// again where the gateway expects it; killed (SIGKILL) when dropped.
struct SimProcess {
    child: tokio::process::Child,
    /// Where its stderr goes: read when it fails to start.
    _stderr: tempfile::NamedTempFile,
}

/// `hubgate sim` could not bind its port.
struct PortTaken;

impl SimProcess {
    /// On a `candidate_port`, another if that one is taken; with its port.
    async fn start_on_a_free_port() -> (SimProcess, u16) {
        for _ in 0..20 {
            let port = candidate_port();
            if let Ok(sim) = SimProcess::start(port).await {
                return (sim, port);
            }
        }
        panic!("hubgate sim found no free port in 20 tries");
    }

    /// On `port` again, once the killed process's socket is gone from it.
    async fn restart(port: u16) -> SimProcess {
        wait_for(
            &format!("hubgate sim starts again on port {port}"),
            Duration::from_secs(10),
            || async {
                SimProcess::start(port)
                    .await
                    .map_err(|PortTaken| "the port is taken".to_string())
            },
        )
        .await
    }

    /// Starts and waits for its `hubgate-sim listening on` line.
    async fn start(port: u16) -> Result<SimProcess, PortTaken> {
        use tokio::io::AsyncBufReadExt;
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = tokio::process::Command::new(BIN)
            .args([
                "sim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--generate-tokens",
                "1",
                "--burst-limit",
                "100000",
                "--daily-limit",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("hubgate sim starts");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        let read = tokio::time::timeout(Duration::from_secs(15), stdout.read_line(&mut first))
            .await
            .expect("hubgate sim starts within 15 s");
        if read.is_ok_and(|n| n > 0) {
            assert!(first.starts_with("hubgate-sim listening on"), "{first}");
            // Read the rest as it comes: a write to a closed pipe would end the process.
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
            });
            return Ok(SimProcess {
                child,
                _stderr: stderr,
            });
        }
        let exit = child.wait().await.unwrap();
        let said = std::fs::read_to_string(stderr.path()).unwrap_or_default();
        if said.contains("in use") {
            return Err(PortTaken);
        }
        panic!("hubgate sim exited ({exit}): {said}");
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What callers saw during the outage test.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    outage_errors: AtomicUsize,
    /// Anything else: no response, a hang, a non-JSON error, an unexpected status.
    wrong: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_killed_and_restarted_under_load_costs_every_caller_one_clear_answer() {
    let _turn = heavy_turn().await;
    let (sim, port) = SimProcess::start_on_a_free_port().await;
    let gateway = Arc::new(
        Gateway::start(&format!("http://127.0.0.1:{port}"), |c| {
            quick(c);
            c.budgets.burst_limit = 100_000;
            c.retry.max_retries = 3;
            c.retry.base_delay_ms = 50;
            c.retry.max_delay_ms = 150;
            c.upstream.connect_timeout_ms = 1_000;
            c.upstream.response_timeout_ms = 5_000;
            c.credentials = vec![hubgate::config::StaticCredential {
                token: Some("pat-na1-sim-1".into()),
                token_sha256: None,
                app_id: 2001,
                portal_id: 1001,
            }];
        })
        .await,
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (gateway, tally, stop, sent) =
                (gateway.clone(), tally.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                // One pooled client per worker: keep-alive connections, like a real SDK.
                let client = client();
                while !stop.load(Ordering::SeqCst) {
                    let request = Request::get(gateway.url(LIST))
                        .header("authorization", "Bearer pat-na1-sim-1")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                    let answer = tokio::time::timeout(Duration::from_secs(15), async {
                        let response = client.request(request).await?;
                        let (parts, body) = response.into_parts();
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                            parts.status,
                            body.collect().await?.to_bytes(),
                        ))
                    })
                    .await;
                    match answer {
                        Ok(Ok((status, _))) if status == StatusCode::OK => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok((status, body)))
                            if [502, 503, 504].contains(&status.as_u16())
                                && serde_json::from_slice::<serde_json::Value>(&body)
                                    .is_ok_and(|v| v["status"] == "error") =>
                        {
                            tally.outage_errors.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok((status, body))) => tally
                            .wrong
                            .lock()
                            .unwrap()
                            .push(format!("{status}: {}", String::from_utf8_lossy(&body))),
                        Ok(Err(e)) => tally.wrong.lock().unwrap().push(format!("no answer: {e}")),
                        Err(_) => tally.wrong.lock().unwrap().push("hung for 15 s".into()),
                    }
                }
            })
        })
        .collect();

    // Traffic flows, every worker's connections warm, before the kill.
    wait_until("calls before the kill", Duration::from_secs(10), || async {
        tally.ok.load(Ordering::SeqCst) >= 16
    })
    .await;
    let before_kill = tally.ok.load(Ordering::SeqCst);
    sim.kill().await;
    // Down for longer than a call's retries (3 x at most 150 ms): until some calls saw it.
    wait_until(
        "calls answered during the outage",
        Duration::from_secs(10),
        || async { tally.outage_errors.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    let sim = SimProcess::restart(port).await;
    let ok_at_restart = tally.ok.load(Ordering::SeqCst);
    wait_until(
        "calls after the restart",
        Duration::from_secs(10),
        || async { tally.ok.load(Ordering::SeqCst) >= ok_at_restart + 16 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let wrong = tally.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "calls without one clear answer: {wrong:?}"
    );
    let (ok, outage) = (
        tally.ok.load(Ordering::SeqCst),
        tally.outage_errors.load(Ordering::SeqCst),
    );
    let sent = sent.load(Ordering::SeqCst);
    println!("sim restart: {sent} calls, {ok} ok, {outage} answered 502/503/504 during the outage");
    assert_eq!(ok + outage, sent, "every call got exactly one answer");
    assert!(before_kill > 0, "traffic flowed before the kill");
    assert!(outage > 0, "the outage was seen");
    assert!(ok > ok_at_restart, "traffic recovered after the restart");
    assert_eq!(
        gateway.answered().await,
        sent as f64,
        "the gateway counted each once"
    );
    for _ in 0..5 {
        let request = Request::get(gateway.url(LIST))
            .header("authorization", "Bearer pat-na1-sim-1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = send(request).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "recovered: {}",
            String::from_utf8_lossy(&body)
        );
    }
    gateway.assert_settles(Duration::from_secs(5)).await;
    drop(sim);
}
