//! Upstreams on 127.0.0.1:0 for a gateway to forward to: programmable HTTP ones, and ones
//! that misbehave at the socket level.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A programmable upstream on 127.0.0.1:0 (HTTP/1.1 and h2c), serving until the test ends.
pub(crate) async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, handler);
    addr
}

/// Serves `handler` on `listener` (HTTP/1.1 and h2c) until the test ends.
pub(crate) fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// An upstream that misbehaves at the socket level: each accepted connection is handed to
/// `misbehave` as is, and the connections are counted.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: Arc<AtomicUsize>,
    /// Everything each connection sent before `misbehave` finished, in arrival order.
    pub(crate) received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Starts a [`RawUpstream`]; `misbehave` returns what it read, which is kept in `received`.
pub(crate) async fn raw_upstream<F, Fut>(misbehave: F) -> RawUpstream
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let misbehave = Arc::new(misbehave);
    let (count, keep) = (connections.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let (misbehave, keep) = (misbehave.clone(), keep.clone());
            tokio::spawn(async move {
                let bytes = misbehave(stream).await;
                keep.lock().unwrap().push(bytes);
            });
        }
    });
    RawUpstream {
        addr,
        connections,
        received,
    }
}

/// Reads one request head (through the blank line) and returns everything read so far.
pub(crate) async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen
}

/// Closes with a TCP reset (RST) instead of an orderly FIN.
pub(crate) fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
