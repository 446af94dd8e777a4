//! A body trickled one byte at a time, and a caller that never reads its answer: neither
//! holds a connection (or the upstream stream behind it) past hubgate's limits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::hubgate_with;

#[tokio::test]
async fn a_body_trickled_under_the_idle_timeout_is_cut_at_the_body_read_deadline() {
    let upstream = echo::start().await;
    let (gateway, _config) = hubgate_with(
        &format!("http://{upstream}"),
        "body_idle_timeout_ms = 2000\nbody_read_timeout_ms = 3000",
        "",
    );
    let mut stream = TcpStream::connect(gateway.proxy).await.unwrap();
    stream
        .write_all(b"POST /crm/v3/objects/contacts HTTP/1.1\r\nhost: hubgate\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 250 ms: well inside the idle timeout, never a whole body.
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(12), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        // The JSON body follows its head in the same write or the next.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), reader.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let took = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    eprintln!("trickled body answered after {took:?}: {answer:?}");
    assert!(
        read.is_ok(),
        "no answer within 12 s of a body trickled one byte per 250 ms"
    );
    let (status, headers, body) = parse_response(&answer);
    let error = assert_hubspot_error(status, &headers, &body, StatusCode::REQUEST_TIMEOUT);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("body_read_timeout_ms"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(8),
        "cut near the 3 s deadline, not after {took:?}"
    );
}

#[tokio::test]
async fn a_caller_that_never_reads_its_answer_releases_the_upstream_stream() {
    let stopped: Arc<Mutex<Option<(Instant, u64)>>> = Arc::default();
    let seen = stopped.clone();
    // An upstream streaming an endless answer: it can only stop when hubgate lets go.
    let upstream = raw_upstream(move |mut stream| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = [b'x'; 65536];
            let mut sent = 0u64;
            loop {
                let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if stream.write_all(&framed).await.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
            *seen.lock().unwrap() = Some((Instant::now(), sent));
            head
        }
    })
    .await;
    let (gateway, _config) = hubgate_with(
        &format!("http://{}", upstream.addr),
        "response_write_timeout_ms = 2000",
        "",
    );
    let mut caller = TcpStream::connect(gateway.proxy).await.unwrap();
    caller
        .write_all(b"GET /files/v3/files/1/signed-url HTTP/1.1\r\nhost: hubgate\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    wait_until(
        "the upstream is streaming",
        Duration::from_secs(10),
        || async { upstream.connections() == 1 },
    )
    .await;
    let released = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(stop) = *stopped.lock().unwrap() {
                return stop;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!(
        "a caller that reads nothing: upstream stream released {:?}",
        released.as_ref().map(|(at, sent)| (*at - started, *sent))
    );
    let (at, _) = released.expect("the upstream stream is released within 15 s");
    assert!(
        at - started >= Duration::from_millis(1500),
        "not before the write timeout"
    );
    drop(caller);
}
