//! The one harness of the integration tests, included by each test binary
//! (tests/gateway, tests/binary) as `mod support`:
//!
//! - [`Gateway`]: a gateway in this process, on listeners bound to 127.0.0.1:0 and handed
//!   to it; [`HubgateProcess`]: the built binary as a child process, on ports it picks and
//!   reports in its start-up line, stopped with SIGTERM once and for all.
//! - [`Hubspot`] and [`sim_and_gateway`]: the simulator, and a gateway in front of it with
//!   the same limits, in one call; [`RedisServer`], [`RedisCluster`], and [`DelayProxy`] to
//!   put Redis far away; upstreams that answer as told or
//!   misbehave at the socket level; [`pki`] for TLS.
//! - Ports handed over, never released and bound again ([`ClosedPort`], [`candidate_port`]).
//! - [`wait_until`] / [`wait_for`]: a condition with a deadline, instead of a sleep.
//! - Clients over real sockets, metrics scraping, HubSpot-shaped error checks.
//!
//! Each binary uses part of it, hence `dead_code` is allowed (and unused re-exports).
#![allow(dead_code)]

mod client;
mod delay_proxy;
pub(crate) mod echo;
mod files;
mod gateway;
mod metrics;
pub(crate) mod pki;
mod ports;
mod process;
mod redis_cluster;
mod redis_server;
mod sim;
mod upstream;
mod wait;

// Each binary uses part of what is re-exported here.
#[allow(unused_imports)]
pub(crate) use client::*;
#[allow(unused_imports)]
pub(crate) use delay_proxy::*;
#[allow(unused_imports)]
pub(crate) use files::*;
#[allow(unused_imports)]
pub(crate) use gateway::*;
#[allow(unused_imports)]
pub(crate) use metrics::*;
#[allow(unused_imports)]
pub(crate) use ports::*;
#[allow(unused_imports)]
pub(crate) use process::*;
#[allow(unused_imports)]
pub(crate) use redis_cluster::*;
#[allow(unused_imports)]
pub(crate) use redis_server::*;
#[allow(unused_imports)]
pub(crate) use sim::*;
#[allow(unused_imports)]
pub(crate) use upstream::*;
#[allow(unused_imports)]
pub(crate) use wait::*;

/// Timing-sensitive tests that load the machine (dozens of saturating callers, hundreds of
/// calls a second, several gateways) take turns, across every module of a test binary: on
/// a 2-core machine two of them at once delay each other's sends past the margins they
/// measure. (When each file was a binary of its own, binaries ran one after another and
/// each file had a lock of its own.) Light tests still run beside them.
pub(crate) async fn heavy_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
