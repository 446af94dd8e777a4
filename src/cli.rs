//! The `hubgate` command line: run the gateway, check a config file, probe a running
//! gateway's health, hash a caller key, start the simulator, send load, run the demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::gateway::{self, Listeners};
use crate::load;
use crate::ops::{admin, telemetry};
use hubgate_sim as sim;

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
    /// Exit 0 when the gateway's admin /healthz answers 200, else 1 (for container
    /// HEALTHCHECKs: needs no curl or shell). The address comes from the config's
    /// [server] admin_listen unless --url names one.
    Healthcheck(HealthcheckArgs),
    /// Print the SHA-256 of a caller key, for [[callers]] key_sha256. Reads the key from
    /// standard input when it is not given (keeps it out of shell history).
    HashKey {
        /// The caller's key.
        key: Option<String>,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Path of the config file; when the default file is missing, built-in defaults apply.
    #[arg(long, value_name = "PATH", env = "HUBGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct HealthcheckArgs {
    /// URL to probe, e.g. http://127.0.0.1:9090/healthz.
    #[arg(long)]
    url: Option<String>,
    /// Config whose [server] admin_listen is probed (an unspecified address such as
    /// 0.0.0.0 means this host's loopback).
    #[arg(long, value_name = "PATH", env = "HUBGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
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
        Some(Command::Healthcheck(args)) => healthcheck(&args),
        Some(Command::HashKey { key }) => hash_key(key),
    }
}

fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => match load_config(args.config.as_deref()) {
            Ok(config) => match admin::health_url(&config.server.admin_listen) {
                Ok(url) => url,
                Err(e) => {
                    eprintln!("hubgate healthcheck: [server] admin_listen: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        },
    };
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    with_runtime(async move {
        admin::probe_health(&url, timeout).await?;
        println!("{url}: ok");
        Ok(())
    })
}

fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(key) => key,
        None => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("hubgate hash-key: cannot read the key from standard input: {e}");
                return ExitCode::FAILURE;
            }
            line
        }
    };
    // Callers' key headers are compared trimmed, so the hash is of the trimmed key too.
    let key = key.trim();
    if key.is_empty() {
        eprintln!(
            "hubgate hash-key: the key is empty; give it as an argument or on standard input"
        );
        return ExitCode::from(2);
    }
    println!("{}", config::key_sha256(key));
    ExitCode::SUCCESS
}

/// The file `run` reads: the given one, else ./config.toml when present.
fn config_path(path: Option<&Path>) -> Option<PathBuf> {
    match path {
        Some(path) => Some(path.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(PathBuf::from(DEFAULT_CONFIG)),
        None => None,
    }
}

/// The config as `run` would use it: the given file, else ./config.toml when present, else
/// the built-in defaults.
fn load_config(path: Option<&Path>) -> Result<Config, config::ConfigErrors> {
    match config_path(path) {
        Some(path) => Config::load(&path),
        None => Ok(Config::default()),
    }
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let warnings = config::ConfigErrors {
                file: path.to_path_buf(),
                problems: Config::locate(&text, config.warnings()),
            };
            for line in warnings.lines() {
                eprintln!("warning: {line}");
            }
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
    let path = config_path(args.config.as_deref());
    let config = match load_config(path.as_deref()) {
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
    for warning in config.warnings() {
        tracing::warn!(key = %warning.key, "{}", warning.message);
    }
    with_runtime(async move {
        let listeners = Listeners::bind(&config).await?;
        match path {
            Some(path) => {
                gateway::run_from_file(path, config, listeners, gateway::shutdown_signal()).await
            }
            None => gateway::run(config, listeners, gateway::shutdown_signal()).await,
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
