//! `hubgate demo`: the simulator, hubgate in front of it and a load, all in this process on
//! loopback; then the same load straight to the simulator, and both summaries side by side.
//! With `--coalesce`, a read-heavy load through hubgate without coalescing and then with
//! it, side by side: the budget multiplier.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::mix::Mix;
use super::report::{self, Summary};
use super::{Pace, Plan};
use crate::config::Config;
use crate::gateway::Listeners;
use hubgate_sim::{SimConfig, Simulator};

/// HubSpot's real burst window and a Professional-tier limit, so the demo shows what a
/// production portal sees.
const BURST_LIMIT: u32 = 100;
const BURST_WINDOW_MS: u64 = 10_000;

/// Flags of `hubgate demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds of load through hubgate, and again straight to the simulator.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Closed-loop callers, spread over the tokens.
    #[arg(long, default_value_t = 60)]
    pub callers: u64,
    /// Owners (private apps, each in its own portal) the callers share.
    #[arg(long, default_value_t = 3)]
    pub tokens: u32,
    /// Print both summaries and the 429s saved as one JSON object on stdout; the
    /// introduction and progress go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Show the budget multiplier: a read-heavy load (mix get=95,create=5) through hubgate
    /// without coalescing, then with `[coalesce] reads` and `identical_gets` on.
    #[arg(long)]
    pub coalesce: bool,
}

/// The read-heavy mix of `--coalesce`: reads of the contacts the callers created.
const READ_HEAVY: &str = "get=95,create=5";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tokens > 0, "--tokens must be at least 1");
    anyhow::ensure!(args.callers > 0, "--callers must be at least 1");
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0 && args.duration <= 1e7,
        "--duration must be a number of seconds above 0, got {}",
        args.duration
    );
    let mut sim_config = SimConfig {
        burst_limit: BURST_LIMIT,
        burst_window_ms: BURST_WINDOW_MS,
        generate_tokens: args.tokens,
        ..SimConfig::default()
    };
    sim_config.daily_limit = 0;
    let sim = Simulator::start(sim_config, TcpListener::bind("127.0.0.1:0").await?).await?;

    let plain = start_gateway(&sim, false).await?;
    let coalescing = if args.coalesce {
        Some(start_gateway(&sim, true).await?)
    } else {
        None
    };
    let (gateway_url, admin_url) = (plain.url.clone(), plain.admin_url.clone());
    let mix = if args.coalesce {
        READ_HEAVY
            .parse::<Mix>()
            .map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        Mix::default()
    };

    let plan = |target: &str, admin: Option<&str>, label: &str| Plan {
        target: target.to_string(),
        pace: Pace::Closed {
            callers: args.callers,
        },
        duration: Duration::from_secs_f64(args.duration),
        tokens: (1..=args.tokens)
            .map(|i| format!("pat-na1-sim-{i}"))
            .collect(),
        mix: mix.clone(),
        timeout: Duration::from_secs(60),
        max_in_flight: 10_000,
        sim: Some(sim.base_url()),
        admin: admin.map(str::to_string),
        progress: Some(label.to_string()),
    };
    let second = if args.coalesce {
        "then the same through hubgate with [coalesce] reads and identical_gets on"
    } else {
        "then the same straight to the simulator"
    };
    let introduction = format!(
        "hubgate demo: a HubSpot simulator at {} allows {BURST_LIMIT} calls per {} s per app and 5 searches per second per portal;\n\
         hubgate at {gateway_url} (admin {admin_url}) paces calls to it. {} callers over {} tokens (mix {}) for {} s through hubgate, {second}.\n",
        sim.base_url(),
        BURST_WINDOW_MS / 1000,
        args.callers,
        args.tokens,
        mix,
        args.duration
    );
    // stdout carries only the JSON object when one is asked for.
    if args.json {
        eprintln!("{introduction}");
    } else {
        println!("{introduction}");
    }
    let legs = async {
        let through = super::run(&plan(&gateway_url, Some(&admin_url), "through hubgate")).await?;
        let second = match &coalescing {
            Some(gateway) => {
                // A fresh window, so the second leg starts where the first did.
                sim.reset();
                let label = "through hubgate, coalescing";
                super::run(&plan(&gateway.url, Some(&gateway.admin_url), label)).await?
            }
            None => super::run(&plan(&sim.base_url(), None, "straight to HubSpot")).await?,
        };
        anyhow::Ok((through, second))
    }
    .await;
    plain.stop().await;
    if let Some(gateway) = coalescing {
        gateway.stop().await;
    }
    sim.shutdown().await;
    let (through, direct) = legs?;
    if args.coalesce {
        return coalesce_report(&through, &direct, args.json);
    }

    if args.json {
        let answer = serde_json::json!({
            "through_hubgate": through,
            "straight_to_hubspot": direct,
            "hubspot_429s_saved": saved(&through, &direct),
        });
        println!("{answer}");
        return Ok(());
    }
    println!();
    print!(
        "{}",
        report::table(&[
            ("through hubgate", &through),
            ("straight to HubSpot", &direct)
        ])
    );
    println!("\n{}", saved_line(&through, &direct));
    Ok(())
}

/// The 429s HubSpot (the simulator) sent in the direct run that hubgate's run avoided.
fn saved(through: &Summary, direct: &Summary) -> u64 {
    upstream_429s(direct).saturating_sub(upstream_429s(through))
}

fn upstream_429s(summary: &Summary) -> u64 {
    summary.simulator.as_ref().map_or(0, |v| v.upstream_429s)
}

/// The demo's last line: [`saved`] in words.
pub fn saved_line(through: &Summary, direct: &Summary) -> String {
    format!(
        "hubgate saved {} 429s: HubSpot answered {} 429s to the callers sent straight to it, {} to the same callers through hubgate.",
        saved(through, direct),
        upstream_429s(direct),
        upstream_429s(through)
    )
}

/// A gateway in front of `sim` with the demo's budgets, in this process.
struct DemoGateway {
    url: String,
    admin_url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl DemoGateway {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn start_gateway(sim: &Simulator, coalesce: bool) -> anyhow::Result<DemoGateway> {
    let mut config = Config::default();
    config.upstream.base_url = sim.base_url();
    config.budgets.burst_limit = BURST_LIMIT;
    config.budgets.burst_window_ms = BURST_WINDOW_MS;
    config.coalesce.reads = coalesce;
    config.coalesce.identical_gets = coalesce;
    let listeners = Listeners {
        proxy: TcpListener::bind("127.0.0.1:0").await?,
        admin: TcpListener::bind("127.0.0.1:0").await?,
    };
    let url = format!("http://{}", listeners.proxy.local_addr()?);
    let admin_url = format!("http://{}", listeners.admin.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::gateway::run(config, listeners, async move {
        let _ = stopped.await;
    }));
    Ok(DemoGateway {
        url,
        admin_url,
        stop,
        task,
    })
}

/// `--coalesce`'s ending: both runs through hubgate, and the calls each answered per
/// upstream call.
fn coalesce_report(plain: &Summary, coalescing: &Summary, json: bool) -> anyhow::Result<()> {
    let per_call = |summary: &Summary| {
        let upstream = summary.simulator.as_ref().map_or(0, |v| v.arrivals);
        summary.outcomes.ok_2xx as f64 / upstream.max(1) as f64
    };
    if json {
        let answer = serde_json::json!({
            "through_hubgate": plain,
            "through_hubgate_coalescing": coalescing,
            "answers_per_upstream_call": [per_call(plain), per_call(coalescing)],
        });
        println!("{answer}");
        return Ok(());
    }
    println!();
    print!(
        "{}",
        report::table(&[
            ("through hubgate", plain),
            ("through hubgate, coalescing", coalescing)
        ])
    );
    println!(
        "\nWithout coalescing hubgate answered {:.1} calls per upstream call; with it, {:.1}: the same budget served {:.1}x the calls.",
        per_call(plain),
        per_call(coalescing),
        per_call(coalescing) / per_call(plain).max(f64::MIN_POSITIVE)
    );
    Ok(())
}
