//! The cheapest HTTP/1.1 forwarder hyper 1.x makes: the floor under hubgate's per-call
//! cost in `bench/owners_overhead.sh`.
//!
//! Each caller connection gets one upstream connection of its own, driven by hyper's
//! `client::conn::http1`, and every request is sent on it unchanged (no pool, no parsing of
//! credentials, no pacing, no metrics, no logging). Whatever this costs per call is what the
//! hyper stack itself costs; hubgate's cost above it is its own work.
//!
//! Usage: `cargo run --release --example bare_proxy -- LISTEN UPSTREAM [THREADS]`, e.g.
//! `127.0.0.1:8080 127.0.0.1:9090 1`. THREADS 1 (the default) runs a current-thread
//! runtime, as one nginx worker is one thread; more runs tokio's multi-thread runtime.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy LISTEN UPSTREAM [THREADS]";
    let listen: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let upstream: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let threads: usize = args.next().map(|t| t.parse()).transpose()?.unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (caller, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = relay(caller, upstream).await {
                eprintln!("connection ended: {error}");
            }
        });
    }
}

async fn relay(caller: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    caller.set_nodelay(true)?;
    let upstream = TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(connection);
    // One caller connection sends one request at a time (HTTP/1.1 without pipelining), so
    // its upstream connection is free whenever the service is called.
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let service = service_fn(move |request: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            let answer: Response<Incoming> = sender.send_request(request).await?;
            Ok::<_, hyper::Error>(answer)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(caller), service)
        .await?;
    Ok(())
}
