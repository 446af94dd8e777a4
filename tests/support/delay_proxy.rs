//! A TCP proxy on 127.0.0.1:0 that holds every chunk a fixed time each way, keeping order:
//! a server far away (Redis at a 40 ms round trip) on loopback. It keeps what clients sent,
//! so a test can count the commands that crossed it. Self-contained, so the benches
//! include it too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The proxy; it stops accepting when dropped (connections open then live on until either
/// side closes).
#[derive(Debug)]
pub(crate) struct DelayProxy {
    pub(crate) addr: SocketAddr,
    /// Every byte clients sent, in arrival order over all connections.
    sent: Arc<Mutex<Vec<u8>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    /// Forwards to `target`, each chunk `one_way` late in each direction.
    pub(crate) async fn start(target: SocketAddr, one_way: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let kept = sent.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(relay(
                    client_read,
                    server_write,
                    one_way,
                    Some(kept.clone()),
                ));
                tokio::spawn(relay(server_read, client_write, one_way, None));
            }
        });
        DelayProxy {
            addr,
            sent,
            accepting,
        }
    }

    /// `redis://` to the proxy.
    pub(crate) fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// How many times `pattern` occurs in what clients have sent so far.
    pub(crate) fn count_sent(&self, pattern: &[u8]) -> usize {
        let sent = self.sent.lock().unwrap();
        if pattern.is_empty() || sent.len() < pattern.len() {
            return 0;
        }
        sent.windows(pattern.len())
            .filter(|w| *w == pattern)
            .count()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// One direction: chunks are read as they come and each written `one_way` after it was
/// read, in order (a writer task behind a queue, so reading never waits for the delay).
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    one_way: Duration,
    keep: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let (queue, mut chunks) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = chunks.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(keep) = &keep {
                    keep.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                if queue
                    .send((Instant::now() + one_way, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(queue);
    let _ = writer.await;
}
