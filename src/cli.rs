//! The `hubgate` command line: run the gateway, check a config file, start the simulator,
//! send load, run the demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::server::{self, Listeners};
use crate::{load, sim, telemetry};

const DEFAULT_CONFIG: &str = "config.toml";

#[derive(Parser)]
#[command(
    name = "hubgate",
    version,
    about = "A HubSpot API rate-limit gateway: point your HubSpot clients at it and it paces every call within HubSpot's limits.",
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (the default when no command is given).
    Run(RunArgs),
    /// Validate a config file: exit 0 when valid, or 2 listing every problem
    /// (file, line, key, what is wrong).
    CheckConfig {
        /// The config file to check.
        path: PathBuf,
    },
    /// Start the HubSpot API simulator, for tests and load tests without a HubSpot account.
    Sim(sim::SimArgs),
    /// Send HubSpot CRM calls (get, create, batch, search) for a while, closed loop
    /// (--callers) or open loop (--rate), and summarise outcomes, latency and throughput.
    Load(load::LoadArgs),
    /// Try hubgate in one command, no HubSpot account needed: a simulator, hubgate in front
    /// of it and a load through it, then the same load straight to the simulator.
    Demo(load::demo::DemoArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Path of the config file; when the default file is missing, built-in defaults apply.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_gateway(cli.run),
        Some(Command::Run(args)) => run_gateway(RunArgs {
            config: args.config.or(cli.run.config),
        }),
        Some(Command::CheckConfig { path }) => check_config(&path),
        Some(Command::Sim(args)) => with_runtime(async move {
            telemetry::init(&Default::default());
            sim::run_from_args(args).await
        }),
        Some(Command::Load(args)) => with_runtime(load::run_from_args(args)),
        Some(Command::Demo(args)) => with_runtime(load::demo::run(args)),
    }
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

fn run_gateway(args: RunArgs) -> ExitCode {
    // The file reloads read again; none when running on built-in defaults.
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(PathBuf::from(DEFAULT_CONFIG)),
        None => None,
    };
    let config = match &path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    if path.is_none() {
        tracing::warn!("no ./config.toml found: running with built-in defaults");
    }
    with_runtime(async move {
        let listeners = Listeners::bind(&config).await?;
        match path {
            Some(path) => {
                server::run_from_file(path, config, listeners, server::shutdown_signal()).await
            }
            None => server::run(config, listeners, server::shutdown_signal()).await,
        }
    })
}

fn with_runtime(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hubgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
