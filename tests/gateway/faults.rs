//! Faults at the socket level, against the real gateway: upstreams that reset, stall, fail
//! TLS or answer garbage, a simulator killed and restarted under load, callers that leave
//! mid-upload or while queued. Every accepted call gets exactly one answer (counted on both
//! sides), nothing hangs past its timeout, and nothing is left behind: no call in flight or
//! queued, no owner lane, no extra task.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const LIST: &str = "/crm/v3/objects/contacts";

/// Short sweeps and pools, so that leaks show within a test's time.
fn quick(c: &mut hubgate::Config) {
    c.budgets.idle_ttl_ms = 1_000;
    c.upstream.pool_idle_timeout_ms = 300;
    c.retry.base_delay_ms = 10;
    c.retry.max_delay_ms = 50;
}

/// One call through a fresh client: the response head and the whole body, or the error
/// the body ended with.
async fn call(
    request: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Result<Bytes, hyper::Error>) {
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("an answer within 20 s")
        .expect("a response head");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the body ends within 20 s")
        .map(|collected| collected.to_bytes());
    (parts.status, parts.headers, body)
}

fn post(gateway: &Gateway, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(gateway.url(LIST))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn get_request(gateway: &Gateway) -> Request<Full<Bytes>> {
    Request::get(gateway.url(LIST))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// After a fault: a new call on a new connection is answered (however the upstream
/// misbehaves this time), and the gateway has settled.
async fn recovers(gateway: &Gateway, answered_before: f64) {
    let request = Request::get(gateway.url("/after-the-fault"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = call(request).await;
    assert!(status.as_u16() >= 200, "the gateway answers new calls");
    assert_eq!(gateway.answered().await, answered_before + 1.0);
    gateway.assert_settles(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_upstream_reset_mid_body_cuts_the_callers_response_and_is_not_sent_again() {
    // Headers and part of the body, then a TCP reset: once for a chunked answer, once for
    // one with a Content-Length. The reset waits until the caller has the head, so the cut
    // is mid-body and never before the answer.
    let head_arrived = Arc::new(tokio::sync::Notify::new());
    let reset_after = head_arrived.clone();
    let upstream = raw_upstream(move |mut stream| {
        let head_arrived = reset_after.clone();
        async move {
            let head = read_head(&mut stream).await;
            let text = String::from_utf8_lossy(&head).into_owned();
            let partial: &[u8] = if text.contains("chunked-answer") {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n10\r\n{\"results\":[1,2,\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"results\":[1,2,"
            };
            let _ = stream.write_all(partial).await;
            if text.contains("-answer") {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), head_arrived.notified()).await;
            }
            reset(stream);
            head
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), quick).await;
    let tasks_before = alive_tasks();

    for (n, marker) in ["chunked-answer", "sized-answer"].into_iter().enumerate() {
        let request = Request::post(gateway.url(&format!("{LIST}?{marker}")))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
            .await
            .expect("an answer within 20 s")
            .expect("a response head");
        head_arrived.notify_one();
        let status = response.status();
        let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
            .await
            .expect("the body ends within 20 s")
            .map(|collected| collected.to_bytes());
        assert_eq!(status, StatusCode::OK, "the head came before the reset");
        assert!(
            body.is_err(),
            "{marker}: the cut body must end with an error, got {body:?}"
        );
        assert_eq!(
            upstream.connections(),
            n + 1,
            "{marker}: a POST is sent once"
        );
    }
    assert_eq!(gateway.answered().await, 2.0);
    recovers(&gateway, 2.0).await;
    assert_tasks_return_to(tasks_before, 2, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_upstream_reset_before_answering_is_a_502_and_only_idempotent_calls_go_again() {
    let upstream = raw_upstream(|mut stream| async move {
        let head = read_head(&mut stream).await;
        reset(stream);
        head
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        quick(c);
        c.retry.max_retries = 2;
    })
    .await;

    let (status, headers, body) = call(post(&gateway, "{}")).await;
    let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("may or may not"),
        "{error}"
    );
    assert_eq!(
        upstream.connections(),
        1,
        "a POST that may have arrived goes once"
    );

    let (status, headers, body) = call(get_request(&gateway)).await;
    assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.connections(), 1 + 3, "a GET goes again, twice");
    assert_eq!(gateway.answered().await, 2.0);
    recovers(&gateway, 2.0).await;
}

#[tokio::test]
async fn an_upstream_stalling_after_its_headers_is_cut_at_the_body_idle_timeout() {
    let upstream = raw_upstream(|mut stream| async move {
        let head = read_head(&mut stream).await;
        let chunked = String::from_utf8_lossy(&head).contains("chunked-answer");
        let partial: &[u8] = if chunked {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello"
        };
        let _ = stream.write_all(partial).await;
        // Then nothing (the stall under test), with the connection open, for longer than
        // any test.
        tokio::time::sleep(Duration::from_secs(120)).await;
        head
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), |c| {
        quick(c);
        c.upstream.body_idle_timeout_ms = 500;
    })
    .await;

    for marker in ["chunked-answer", "sized-answer"] {
        let started = Instant::now();
        let request = Request::get(gateway.url(&format!("{LIST}?{marker}")))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = call(request).await;
        let waited = started.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.is_err(),
            "{marker}: a stalled body is cut off: {body:?}"
        );
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_millis(500 + 1_500),
            "{marker}: cut after {waited:?}, the idle timeout is 500 ms"
        );
    }
    // The stalled upstream connections are dropped with the cut responses, not pooled.
    assert_eq!(gateway.answered().await, 2.0);
    gateway.assert_settles(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_peer_closing_or_stalling_the_tls_handshake_is_a_502_naming_tls() {
    // Reads the ClientHello and hangs up.
    let closes = raw_upstream(|mut stream| async move {
        let mut hello = vec![0u8; 512];
        let n = stream.read(&mut hello).await.unwrap_or(0);
        hello.truncate(n);
        hello
    })
    .await;
    let gateway = Gateway::start(&format!("https://{}", closes.addr), |c| {
        quick(c);
        c.retry.max_retries = 1;
    })
    .await;
    let (status, headers, body) = call(post(&gateway, "{}")).await;
    let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("TLS handshake"), "{message}");
    assert!(message.contains("nothing was sent"), "{message}");
    // Nothing was sent, so even a POST is tried again.
    assert_eq!(closes.connections(), 2);
    let hello = closes.received.lock().unwrap()[0].clone();
    assert_eq!(
        hello.first(),
        Some(&0x16),
        "a TLS handshake record was sent"
    );

    // Reads the ClientHello and never answers: a connect failure within
    // connect_timeout_ms, not a response timeout.
    let stalls = raw_upstream(|mut stream| async move {
        let mut hello = vec![0u8; 512];
        let _ = stream.read(&mut hello).await;
        // The stall under test: silence, the connection open, for longer than any test.
        tokio::time::sleep(Duration::from_secs(120)).await;
        hello
    })
    .await;
    let gateway = Gateway::start(&format!("https://{}", stalls.addr), |c| {
        quick(c);
        c.retry.max_retries = 0;
        c.upstream.connect_timeout_ms = 300;
        c.upstream.response_timeout_ms = 10_000;
    })
    .await;
    let started = Instant::now();
    let (status, headers, body) = call(post(&gateway, "{}")).await;
    let waited = started.elapsed();
    let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("connect_timeout_ms"),
        "{error}"
    );
    assert!(waited < Duration::from_millis(300 + 1_500), "{waited:?}");
    gateway.assert_settles(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn garbage_from_the_upstream_is_a_502_and_a_post_is_not_sent_again() {
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("not-http", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        (
            "bad-status",
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        (
            "two-lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
        ),
        ("huge-header", {
            let mut huge = b"HTTP/1.1 200 OK\r\nx-huge: ".to_vec();
            huge.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
            huge.extend_from_slice(b"\r\n\r\n");
            huge
        }),
    ];
    let answers = Arc::new(garbage.clone());
    let upstream = raw_upstream(move |mut stream| {
        let answers = answers.clone();
        async move {
            let head = read_head(&mut stream).await;
            let text = String::from_utf8_lossy(&head).into_owned();
            if let Some((_, answer)) = answers.iter().find(|(name, _)| text.contains(name)) {
                let _ = stream.write_all(answer).await;
            }
            let _ = stream.shutdown().await;
            head
        }
    })
    .await;
    let gateway = Gateway::start(&format!("http://{}", upstream.addr), quick).await;
    for (n, (name, _)) in garbage.iter().enumerate() {
        let request = Request::post(gateway.url(&format!("{LIST}?{name}")))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (status, headers, body) = call(request).await;
        let error = assert_hubspot_error(status, &headers, &body.unwrap(), StatusCode::BAD_GATEWAY);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("failed before answering"),
            "{name}: {error}"
        );
        assert_eq!(upstream.connections(), n + 1, "{name}: sent once");
    }
    assert_eq!(gateway.answered().await, garbage.len() as f64);
    recovers(&gateway, garbage.len() as f64).await;
}

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
            c.credentials = vec![hubgate::identity::StaticCredential {
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

/// What a call's body came to at the upstream: the bytes, and whether it ended properly.
type Seen = Arc<Mutex<Vec<(u64, bool)>>>;

/// An upstream that counts the calls reaching it and records, for each once its body ended,
/// how many body bytes came and whether the body ended properly.
async fn recording_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Seen) {
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (start, record) = (started.clone(), seen.clone());
    let addr = upstream(move |request: Request<hyper::body::Incoming>| {
        start.fetch_add(1, Ordering::SeqCst);
        let record = record.clone();
        async move {
            let mut body = request.into_body();
            let mut len = 0u64;
            let complete = loop {
                match body.frame().await {
                    None => break true,
                    Some(Err(_)) => break false,
                    Some(Ok(frame)) => {
                        len += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                }
            };
            record.lock().unwrap().push((len, complete));
            Response::new(Full::new(Bytes::from_static(b"{}")))
        }
    })
    .await;
    (addr, started, seen)
}

#[tokio::test]
async fn a_caller_leaving_mid_upload_never_has_half_a_body_passed_on_as_whole() {
    let (upstream, started, seen) = recording_upstream().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        quick(c);
        // Bodies over 1 KiB stream to the upstream as they arrive instead of being read
        // whole first.
        c.retry.max_body_bytes = 1024;
    })
    .await;
    let tasks_before = alive_tasks();
    let uploads: [(&str, Vec<u8>); 3] = [
        (
            "read whole for replay",
            [
                &b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 900\r\n\r\n"[..],
                &[b'a'; 300],
            ]
            .concat(),
        ),
        (
            "streamed with a length",
            [
                &b"POST /files/v3/files HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"[..],
                &[b'b'; 20_000],
            ]
            .concat(),
        ),
        (
            "streamed in chunks",
            [
                &b"POST /files/v3/files HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                b"1000\r\n",
                &[b'c'; 4096],
                b"\r\n1000\r\n",
                &[b'c'; 4096],
                b"\r\n",
            ]
            .concat(),
        ),
    ];
    for (n, (name, bytes)) in uploads.iter().enumerate() {
        let mut stream = TcpStream::connect(gateway.proxy).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        // The first is read whole before it is sent; the others go as they arrive.
        let upstream_calls = n;
        // Once the gateway is on the body (and has opened the upstream call), leave.
        wait_until(
            &format!("{name}: the call under way"),
            Duration::from_secs(5),
            || async {
                gateway.in_flight().await == 1.0 && started.load(Ordering::SeqCst) == upstream_calls
            },
        )
        .await;
        drop(stream);
        // The gateway is done with the call, and the upstream with what it was sent.
        wait_until(
            &format!("{name}: the call ends"),
            Duration::from_secs(5),
            || async {
                gateway.in_flight().await == 0.0 && seen.lock().unwrap().len() == upstream_calls
            },
        )
        .await;
        let complete: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c)
            .copied()
            .collect();
        assert!(
            complete.is_empty(),
            "{name}: the upstream got a cut body as whole: {complete:?}"
        );
    }
    gateway.assert_settles(Duration::from_secs(5)).await;
    let metrics = gateway.metrics().await;
    // A broken upload is the caller's doing: never counted against the upstream.
    assert_eq!(
        metric_value(
            &metrics,
            r#"hubgate_requests_total{outcome="upstream_error"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(gateway.answered().await, uploads.len() as f64);
    assert_tasks_return_to(tasks_before, 2, Duration::from_secs(5)).await;
    // A whole upload still goes through.
    let request = Request::post(gateway.url("/files/v3/files"))
        .body(Full::new(Bytes::from(vec![b'd'; 5000])))
        .unwrap();
    assert_eq!(send(request).await.0, StatusCode::OK);
    assert!(seen.lock().unwrap().contains(&(5000, true)));
}

#[tokio::test]
async fn a_caller_stalling_mid_upload_gets_408_at_the_body_idle_timeout() {
    let (upstream, _, seen) = recording_upstream().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        quick(c);
        c.server.body_idle_timeout_ms = 400;
    })
    .await;
    let started = Instant::now();
    let response = raw(
        gateway.proxy,
        b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"half\":",
        Duration::from_secs(10),
    )
    .await;
    let waited = started.elapsed();
    let (status, headers, body) = parse_response(&response);
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::REQUEST_TIMEOUT);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("body_idle_timeout_ms"),
        "{error}"
    );
    assert!(waited < Duration::from_millis(400 + 1_500), "{waited:?}");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent upstream");
    recovers(&gateway, 1.0).await;
}

#[tokio::test]
async fn a_caller_leaving_while_queued_frees_its_place_and_is_never_sent() {
    let (upstream, _, seen) = recording_upstream().await;
    let gateway = Gateway::start(&format!("http://{upstream}"), |c| {
        quick(c);
        c.budgets.anonymous_limit = 1;
        c.budgets.anonymous_window_ms = 1_500;
    })
    .await;
    let tasks_before = alive_tasks();
    // The window's one slot goes to the first call; the second must wait for it.
    assert_eq!(get(&gateway.url(LIST)).await.0, StatusCode::OK);
    let mut queued = TcpStream::connect(gateway.proxy).await.unwrap();
    queued
        .write_all(b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    gateway
        .wait_for_queue_depth(1.0, Duration::from_secs(1))
        .await;
    drop(queued);
    // Its place is freed at once, long before its slot would come.
    wait_for("left the queue", Duration::from_millis(800), || async {
        let metrics = gateway.metrics().await;
        if metric_sum(&metrics, "hubgate_queue_depth{") == 0.0
            && metric_value(&metrics, "hubgate_requests_in_flight") == Some(0.0)
        {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"hubgate_requests_total{outcome="caller_gone"}"#),
        Some(1.0)
    );
    // Past the window, its slot would have come: still only the first call arrived. (A
    // wait for nothing to happen: the window is the only thing to wait for.)
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the abandoned call was never sent"
    );
    assert_eq!(gateway.answered().await, 2.0);
    gateway.assert_settles(Duration::from_secs(5)).await;
    assert_tasks_return_to(tasks_before, 2, Duration::from_secs(5)).await;
    assert_eq!(get(&gateway.url(LIST)).await.0, StatusCode::OK);
}
