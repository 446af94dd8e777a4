//! HubSpot API simulator: a local stand-in for `api.hubapi.com` that enforces HubSpot's rate
//! limits exactly as `/work/shared/hubspot-api.md` describes, so the gateway can be tested
//! against hard, observable budgets.
//!
//! # Tokens
//! Tokens come from `[[tokens]]` in the config and from `generate_tokens = N`, which adds for
//! each i in 1..=N:
//! - `pat-na1-sim-<i>`: private app, app id `2000 + i`, portal `1000 + i`;
//! - `oauth-sim-<i>`: OAuth token, app id `3000 + i`, portal `1000 + i`.
//!
//! Both tokens of one i share a portal (search and daily budgets are per portal) but are
//! different apps (so separate burst budgets). Configured tokens override generated ones.
//!
//! # Routes
//! - API routes need `Authorization: Bearer <token>` (or `?hapikey=` for `[[hapikeys]]`) and
//!   are rate limited: burst per (app, portal), CRM search per portal, daily per portal for
//!   private apps; `exempt` rules (config) lift the burst and optionally the daily window.
//! - `/oauth/*` (introspection) needs no credentials and is never rate limited.
//! - `/__sim/echo/...`, `/__sim/bytes/{n}`, `/__sim/stats`, `/__sim/reset`,
//!   `/__sim/faults`, `/__sim/outside`, `/__sim/health` control and observe the simulator;
//!   they are exempt from auth, limits and faults.
//!
//! The echo route reports headers in `HeaderMap` order: names are lower-cased and repeated
//! names are grouped at the position of their first occurrence.

mod clock;
mod config;
mod crm;
mod faults;
mod http_util;
mod limits;
mod server;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{
    default_exempt, generated_tokens, ExemptRule, HapiKeyConfig, OutsideConfig, SimConfig,
    TokenConfig, TokenKind,
};
pub use faults::Faults;
pub use stats::{
    DailyStats, IntrospectionStats, OwnerStats, RateLimitedCounts, SearchStats, SimLimits,
    SimStats, Totals,
};

/// Handle to a running simulator.
pub struct Simulator {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<server::Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Serves on the given listener until shutdown; spawns onto the current tokio runtime.
    pub async fn start(config: SimConfig, listener: TcpListener) -> anyhow::Result<Simulator> {
        config.validate()?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let addr = listener.local_addr()?;
        let outside = config.outside.clone();
        let shared = Arc::new(server::Shared::new(
            config,
            tokio::runtime::Handle::current(),
        ));
        for o in outside {
            server::set_outside(&shared, o);
        }
        let (stop, stop_rx) = watch::channel(false);
        let is_tls = tls.is_some();
        let task = tokio::spawn(server::accept_loop(listener, shared.clone(), tls, stop_rx));
        Ok(Simulator {
            addr,
            tls: is_tls,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, or `https://…` when serving TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Same data as `GET /__sim/stats`.
    pub fn stats(&self) -> SimStats {
        self.shared.limiter.stats(clock::unix_ms())
    }

    /// Same as `POST /__sim/reset`: clears counters, windows and the CRM store.
    pub fn reset(&self) {
        self.shared.reset();
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Spends `per_window` arrivals of the owner's burst window, evenly spread, as traffic that
    /// never passes through the gateway would. 0 stops it.
    pub fn set_outside_consumer(&self, app_id: u64, portal_id: u64, per_window: u32) {
        server::set_outside(
            &self.shared,
            OutsideConfig {
                app_id,
                portal_id,
                per_window,
            },
        );
    }

    /// Stops accepting, gives open connections a moment to finish, then ends them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.shared.stop_outside();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // A handle dropped without `shutdown` must not leave a listener or consumers behind.
        let _ = self.stop.send(true);
        self.shared.stop_outside();
    }
}

/// Flags for `hubgate sim`; they override the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Simulator config (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Generate N private tokens `pat-na1-sim-<i>` (app 2000+i) and N OAuth tokens
    /// `oauth-sim-<i>` (app 3000+i), i = 1..=N, each pair in portal 1000+i.
    #[arg(long)]
    pub generate_tokens: Option<u32>,
    /// Calls per (app, portal) per burst window [default: 100].
    #[arg(long)]
    pub burst_limit: Option<u32>,
    /// Length of the rolling burst window in ms [default: 10000].
    #[arg(long)]
    pub burst_window_ms: Option<u64>,
    /// CRM search calls per portal per second [default: 5].
    #[arg(long)]
    pub search_limit: Option<u32>,
    /// Daily limit per portal for private apps; 0 disables it.
    #[arg(long)]
    pub daily_limit: Option<u64>,
    /// PEM certificate chain; serves HTTPS together with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl SimArgs {
    /// The config file (if any) with the flags applied on top.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let mut cfg = match &self.config {
            Some(p) => SimConfig::from_toml_file(p)?,
            None => SimConfig::default(),
        };
        if let Some(v) = self.generate_tokens {
            cfg.generate_tokens = v;
        }
        if let Some(v) = self.burst_limit {
            cfg.burst_limit = v;
        }
        if let Some(v) = self.burst_window_ms {
            cfg.burst_window_ms = v;
        }
        if let Some(v) = self.search_limit {
            cfg.search_limit = v;
        }
        if let Some(v) = self.daily_limit {
            cfg.daily_limit = v;
        }
        if let Some(v) = &self.tls_cert {
            cfg.tls_cert_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            cfg.tls_key_file = Some(v.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `hubgate sim` until Ctrl-C or SIGTERM.
pub async fn run_from_args(args: SimArgs) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let listener = TcpListener::bind(args.listen).await?;
    let generated = cfg.generate_tokens;
    let sim = Simulator::start(cfg, listener).await?;
    println!("hubgate-sim listening on {}", sim.base_url());
    if generated > 0 {
        let shown: Vec<String> = generated_tokens(generated.min(3))
            .into_iter()
            .map(|t| t.token)
            .collect();
        let more = if generated > 3 { ", ..." } else { "" };
        println!("hubgate-sim tokens: {}{more}", shown.join(", "));
    }
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("hubgate-sim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("sim.toml");
        std::fs::write(
            &file,
            "burst_limit = 7\nsearch_limit = 2\ngenerate_tokens = 1\n",
        )
        .expect("write");
        let cli = Cli::parse_from([
            "x",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--burst-limit",
            "9",
            "--daily-limit",
            "0",
            "--listen",
            "127.0.0.1:0",
        ]);
        let cfg = cli.sim.to_config().expect("config");
        assert_eq!(cfg.burst_limit, 9);
        assert_eq!(cfg.search_limit, 2);
        assert_eq!(cfg.daily_limit, 0);
        assert_eq!(cfg.generate_tokens, 1);
        assert!(Cli::try_parse_from(["x", "--tls-cert", "a.pem"]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
