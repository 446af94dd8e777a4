//! `hubgate sim`: the command-line flags, their merge over the config file, and running a
//! simulator until the process is told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::config::{generated_tokens, SimConfig};
use crate::simulator::Simulator;

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
    /// Seconds an access token issued by the token endpoint lives [default: 1800].
    #[arg(long)]
    pub access_token_lifetime: Option<u64>,
    /// Each refresh issues a new refresh token and invalidates the redeemed one.
    #[arg(long)]
    pub rotate_refresh_tokens: bool,
    /// Switch off the `/oauth/v1/...` routes, as HubSpot does on 2027-02-16.
    #[arg(long)]
    pub no_v1_oauth: bool,
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
        if let Some(v) = self.access_token_lifetime {
            cfg.oauth.access_token_lifetime_s = v;
        }
        if self.rotate_refresh_tokens {
            cfg.oauth.rotate_refresh_tokens = true;
        }
        if self.no_v1_oauth {
            cfg.oauth.v1_oauth = false;
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
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("sim.toml");
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
            "--no-v1-oauth",
            "--access-token-lifetime",
            "5",
        ]);
        let cfg = cli.sim.to_config().expect("config");
        assert_eq!(cfg.burst_limit, 9);
        assert_eq!(cfg.search_limit, 2);
        assert_eq!(cfg.daily_limit, 0);
        assert_eq!(cfg.generate_tokens, 1);
        assert!(!cfg.oauth.v1_oauth);
        assert_eq!(cfg.oauth.access_token_lifetime_s, 5);
        assert!(!cfg.oauth.rotate_refresh_tokens);
        assert!(Cli::try_parse_from(["x", "--tls-cert", "a.pem"]).is_err());
    }
}
