//! Thousands of connections that never send a request: closed after the header timeout,
//! bounded by `[server] max_connections`, and no slower for the callers beside them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::hubgate_with;

const SILENT: usize = 3_000;
/// These send `P`, the first byte of the HTTP/2 preface, so the version is never decided.
const ONE_BYTE: usize = 500;
const HEADER_TIMEOUT: Duration = Duration::from_secs(4);
const HOLD: Duration = Duration::from_secs(15);

/// Opens a connection, sends `first`, and waits (until `until`) for hubgate to close it:
/// when it did, from `started`, or `None` if it was still open.
async fn hostile(
    addr: SocketAddr,
    first: &'static [u8],
    started: Instant,
    until: Instant,
) -> Result<Option<Duration>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(first)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Some(started.elapsed())),
            // An answer (a 408 or the like) before the close is fine; keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_one_byte_connections_are_closed_after_the_header_timeout_without_slowing_callers(
) {
    let _turn = heavy_turn().await;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let soft: usize = open_files
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap_or(usize::MAX);
    assert!(
        soft > SILENT + ONE_BYTE + 500,
        "this test holds {} sockets: raise the open-file limit (ulimit -n) above {}: {open_files}",
        SILENT + ONE_BYTE,
        SILENT + ONE_BYTE + 500
    );
    let upstream = echo::start().await;
    let (gateway, _config) = hubgate_with(
        &format!("http://{upstream}"),
        &format!("header_read_timeout_ms = {}", HEADER_TIMEOUT.as_millis()),
        // A budget far above what the callers send: their latency is the connections'.
        "[budgets]\nburst_limit = 100000\n[[credentials]]\ntoken = \"pat-na1-normal\"\napp_id = 1\nportal_id = 10\n",
    );
    let proxy = gateway.proxy;
    let started = Instant::now();
    let until = started + HOLD;
    let mut hostiles = Vec::with_capacity(SILENT + ONE_BYTE);
    for n in 0..SILENT + ONE_BYTE {
        let first: &'static [u8] = if n < SILENT { b"" } else { b"P" };
        hostiles.push(tokio::spawn(hostile(proxy, first, started, until)));
    }

    // Normal callers beside them, each call on a new connection (as a client without a
    // pool, or one whose pool was just emptied, would).
    let url = gateway.url("/crm/v3/objects/contacts");
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() + Duration::from_secs(1) < until {
                    let sent = Instant::now();
                    let request = Request::get(&url)
                        .header("authorization", "Bearer pat-na1-normal")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let (status, _, _) = send(request).await;
                    assert_eq!(status, StatusCode::OK);
                    latencies.push(sent.elapsed());
                    // A caller's pace, not a flood of its own.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                latencies
            })
        })
        .collect();

    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.unwrap());
    }
    latencies.sort_unstable();
    let mut closed = Vec::new();
    let (mut open, mut failed) = (0, Vec::new());
    for hostile in hostiles {
        match hostile.await.unwrap() {
            Ok(Some(at)) => closed.push(at),
            Ok(None) => open += 1,
            Err(e) => failed.push(e),
        }
    }
    closed.sort_unstable();
    let p99 = percentile(&latencies, 0.99);
    eprintln!(
        "normal calls: {} p50 {:?} p99 {:?} max {:?}; hostile connections closed by hubgate: {} (first {:?}, last {:?}), still open after {HOLD:?}: {open}, failed: {}",
        latencies.len(),
        percentile(&latencies, 0.5),
        p99,
        latencies.last().unwrap(),
        closed.len(),
        closed.first(),
        closed.last(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} hostile connections failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        open, 0,
        "every silent or one-byte connection is closed after the header timeout"
    );
    assert!(
        closed[0] >= HEADER_TIMEOUT.mul_f64(0.9),
        "not before the header timeout: {:?}",
        closed[0]
    );
    assert!(
        p99 < Duration::from_secs(1),
        "normal callers' p99 is {p99:?}"
    );
    assert!(gateway.logs().contains("hubgate listening"));
}

#[tokio::test]
async fn a_connection_beyond_max_connections_is_answered_503_and_closed() {
    let upstream = echo::start().await;
    let (gateway, _config) = hubgate_with(&format!("http://{upstream}"), "max_connections = 8", "");
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(gateway.proxy).await.unwrap());
    }
    let (answer, closed) = raw_until_closed(
        gateway.proxy,
        b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: hubgate\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    eprintln!("the 9th connection got: {answer:?} (closed: {closed})");
    assert!(closed, "the connection over the limit is closed");
    let (status, headers, body) = parse_response(&answer);
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("max_connections"),
        "{error}"
    );
    assert!(headers.contains_key("retry-after"));

    drop(held);
    wait_until(
        "a connection is served again once others closed",
        Duration::from_secs(10),
        || async {
            let (answer, _) = raw_until_closed(
            gateway.proxy,
            b"GET /crm/v3/objects/contacts HTTP/1.1\r\nhost: hubgate\r\nconnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
            answer.starts_with("HTTP/1.1 200")
        },
    )
    .await;
}
