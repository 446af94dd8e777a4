//! `hubgate load`: a load generator of HubSpot CRM calls, closed loop (N callers) or open
//! loop (sends scheduled by the clock, latency measured from the intended send time), with a
//! progress line, and a summary that adds the simulator's view when one is behind the target.

pub mod demo;
pub mod mix;
pub mod report;
pub mod sim_link;
pub mod tally;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use http_body_util::BodyExt as _;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::UpstreamConfig;
use crate::proxy::upstream::{self, UpstreamClient};
use mix::{CallKind, Mix};
use report::{Offered, RunShape, SimView, Summary};
use tally::{Outcome, Tally};

/// Flags of `hubgate load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL to send to: hubgate (http://127.0.0.1:8080), the simulator, or HubSpot.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Closed loop: this many callers, each sending its next call once the last is answered
    /// [default: 10].
    #[arg(long, conflicts_with = "rate")]
    pub callers: Option<u64>,
    /// Open loop: calls per second, sent by the clock whether or not earlier ones were answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to send for (fractions allowed); calls unanswered then are cancelled.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Use the simulator's tokens pat-na1-sim-1 … pat-na1-sim-N.
    #[arg(long, value_name = "N")]
    pub sim_tokens: Option<u32>,
    /// A token to send (repeat the flag or separate with commas); calls rotate over all tokens.
    #[arg(long = "token", value_name = "TOKEN", value_delimiter = ',')]
    pub tokens: Vec<String>,
    /// Weights of the calls: get (a contact), create (a contact), batch (batch read),
    /// search (CRM search).
    #[arg(long, default_value = "get=60,create=20,batch=10,search=10")]
    pub mix: Mix,
    /// The simulator behind the target: its counters are reset at the start and the summary
    /// adds its view (efficiency, 429s it sent, most calls in one window).
    #[arg(long, value_name = "URL")]
    pub sim: Option<String>,
    /// hubgate's admin listener (http://127.0.0.1:9090): the progress line adds its burst
    /// budget use and queue depth.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// A call unanswered after this long counts as a timeout.
    #[arg(long, default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// Open loop: at most this many calls out at once; sends beyond it count as not sent.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Print the summary as one JSON object on stdout (fields in the README).
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// How calls are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    Closed { callers: u64 },
    Open { rate: f64 },
}

/// Everything one run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: String,
    pub pace: Pace,
    pub duration: Duration,
    pub tokens: Vec<String>,
    pub mix: Mix,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub sim: Option<String>,
    pub admin: Option<String>,
    /// Prefix of the progress lines on stderr; `None` prints none.
    pub progress: Option<String>,
}

/// `http://host:port` without a trailing slash, or what is wrong with `url`.
pub fn base_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|_| {
        anyhow::anyhow!("{flag} '{url}' is not a URL; write e.g. http://127.0.0.1:8080")
    })?;
    anyhow::ensure!(
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some(),
        "{flag} '{url}' must be an http:// or https:// base URL, e.g. http://127.0.0.1:8080"
    );
    Ok(trimmed.to_string())
}

impl Plan {
    pub fn from_args(args: &LoadArgs) -> anyhow::Result<Plan> {
        let pace = match (args.rate, args.callers) {
            (Some(rate), _) => {
                anyhow::ensure!(
                    rate.is_finite() && rate > 0.0,
                    "--rate must be a number of calls per second above 0, got {rate}"
                );
                Pace::Open { rate }
            }
            (None, callers) => {
                let callers = callers.unwrap_or(10);
                anyhow::ensure!(callers > 0, "--callers must be at least 1");
                Pace::Closed { callers }
            }
        };
        anyhow::ensure!(
            args.duration.is_finite() && args.duration > 0.0 && args.duration <= 1e7,
            "--duration must be a number of seconds above 0, got {}",
            args.duration
        );
        let mut tokens = args.tokens.clone();
        tokens.extend((1..=args.sim_tokens.unwrap_or(0)).map(|i| format!("pat-na1-sim-{i}")));
        anyhow::ensure!(
            !tokens.is_empty(),
            "no tokens to send with: pass --sim-tokens N for the simulator's, or --token TOKEN"
        );
        for token in &tokens {
            anyhow::ensure!(
                !token.is_empty() && HeaderValue::from_str(&format!("Bearer {token}")).is_ok(),
                "token '{token}' cannot be sent in an Authorization header"
            );
        }
        anyhow::ensure!(args.max_in_flight > 0, "--max-in-flight must be at least 1");
        anyhow::ensure!(args.timeout_ms > 0, "--timeout-ms must be at least 1");
        Ok(Plan {
            target: base_url("--target", &args.target)?,
            pace,
            duration: Duration::from_secs_f64(args.duration),
            tokens,
            mix: args.mix.clone(),
            timeout: Duration::from_millis(args.timeout_ms),
            max_in_flight: args.max_in_flight,
            sim: args
                .sim
                .as_deref()
                .map(|u| base_url("--sim", u))
                .transpose()?,
            admin: args
                .admin
                .as_deref()
                .map(|u| base_url("--admin", u))
                .transpose()?,
            progress: (!args.quiet).then(String::new),
        })
    }
}

/// Runs `hubgate load` and prints its summary.
pub async fn run_from_args(args: LoadArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let summary = run(&plan).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", report::table(&[("result", &summary)]));
    }
    Ok(())
}

/// What every sender shares.
struct Run {
    client: UpstreamClient,
    target: String,
    tokens: Vec<String>,
    mix: Mix,
    timeout: Duration,
    tally: Tally,
    serial: AtomicU64,
}

/// One client for the run (the gateway's own upstream client: pooled, rustls for https),
/// keeping an idle connection for every call that may be out at once.
fn client(plan: &Plan) -> anyhow::Result<UpstreamClient> {
    let concurrency = match plan.pace {
        Pace::Closed { callers } => usize::try_from(callers).unwrap_or(usize::MAX),
        Pace::Open { .. } => plan.max_in_flight,
    };
    upstream::build_client(&UpstreamConfig {
        pool_max_idle_per_host: concurrency.max(64),
        ..UpstreamConfig::default()
    })
}

/// Sends the plan's load and summarises it.
pub async fn run(plan: &Plan) -> anyhow::Result<Summary> {
    let client = client(plan)?;
    // Tokens are matched to owners before the reset, so the lookups leave no trace in the
    // simulator's introspection counters for the run.
    let owners = match &plan.sim {
        Some(sim) => {
            let owners = sim_link::owners_of(&client, sim, &plan.tokens)
                .await
                .with_context(|| format!("asking the simulator at {sim} (--sim)"))?;
            sim_link::reset(&client, sim).await?;
            Some(owners)
        }
        None => None,
    };
    let run = Arc::new(Run {
        client: client.clone(),
        target: plan.target.clone(),
        tokens: plan.tokens.clone(),
        mix: plan.mix.clone(),
        timeout: plan.timeout,
        tally: Tally::new(plan.tokens.len()),
        serial: AtomicU64::new(0),
    });
    let start = Instant::now();
    let end = start + plan.duration;
    let progress = plan.progress.clone().map(|label| {
        let admin = plan.admin.clone().map(|admin| (client.clone(), admin));
        tokio::spawn(progress(label, run.clone(), start, admin))
    });
    match plan.pace {
        Pace::Closed { callers } => closed_loop(&run, callers, end).await,
        Pace::Open { rate } => open_loop(&run, rate, start, end, plan.max_in_flight).await,
    }
    let span = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    let simulator = match (&plan.sim, owners) {
        (Some(sim), Some(owners)) => {
            let stats = sim_link::stats(&client, sim).await?;
            // The windows are counted over the intended span: the few milliseconds it takes
            // to cancel the last calls are no window the load could use.
            Some(SimView::new(
                &stats,
                &offered(&run.tally, &owners),
                plan.duration,
            ))
        }
        _ => None,
    };
    let shape = RunShape {
        target: plan.target.clone(),
        callers: match plan.pace {
            Pace::Closed { callers } => Some(callers),
            Pace::Open { .. } => None,
        },
        rate_per_second: match plan.pace {
            Pace::Open { rate } => Some(rate),
            Pace::Closed { .. } => None,
        },
        tokens: plan.tokens.len() as u64,
        mix: plan.mix.to_string(),
    };
    Ok(Summary::new(shape, &run.tally, span, simulator))
}

/// Each caller keeps one token (callers are spread over the tokens) and sends its next call
/// when the last is answered; at `end` calls still out are cancelled.
async fn closed_loop(run: &Arc<Run>, callers: u64, end: Instant) {
    let mut set = JoinSet::new();
    for caller in 0..callers {
        let run = run.clone();
        let token = (caller % run.tokens.len() as u64) as usize;
        set.spawn(async move {
            let _ = tokio::time::timeout_at(end, async {
                loop {
                    let kind = run.mix.pick();
                    let outcome = call(&run, token, kind, Instant::now()).await;
                    if matches!(outcome, Outcome::Transport) {
                        // A dead target answers at once; pausing keeps the generator from
                        // turning into a busy loop of connection errors.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
            .await;
        });
    }
    while set.join_next().await.is_some() {}
}

/// Sends call i at `start + i / rate`, whatever happened to earlier calls, rotating over
/// the tokens; a call's latency counts from that intended time, so a slow answer cannot
/// hide the calls that should have gone meanwhile.
async fn open_loop(run: &Arc<Run>, rate: f64, start: Instant, end: Instant, max_in_flight: usize) {
    let mut set = JoinSet::new();
    let tokens = run.tokens.len() as u64;
    for i in 0u64.. {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= end {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        while set.try_join_next().is_some() {}
        // A generator that fell behind the clock never sends past `end`; what it owed
        // counts as not sent, like calls over `max_in_flight`.
        let behind = Instant::now() >= end;
        if behind || run.tally.in_flight.load(Ordering::Relaxed) >= max_in_flight as u64 {
            run.tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let run = run.clone();
        let token = (i % tokens) as usize;
        let kind = run.mix.pick();
        set.spawn(async move { call(&run, token, kind, intended).await });
    }
    tokio::time::sleep_until(end).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
}

/// Sends one call and counts how it ended.
async fn call(run: &Run, token: usize, kind: CallKind, intended: Instant) -> Outcome {
    let tally = &run.tally;
    let _in_flight = tally.start(token, kind);
    let serial = run.serial.fetch_add(1, Ordering::Relaxed);
    let last_created = &tally.tokens[token].last_created;
    let Ok(request) = mix::request(&run.target, &run.tokens[token], kind, last_created, serial)
    else {
        // Unreachable: tokens and the target were checked when the plan was made.
        tally.finish(Outcome::Transport, None);
        return Outcome::Transport;
    };
    let answer = tokio::time::timeout(run.timeout, async {
        let response = run.client.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((parts, body))
    })
    .await;
    let outcome = match answer {
        Err(_) => Outcome::Timeout,
        Ok(Err(_)) => Outcome::Transport,
        Ok(Ok((parts, body))) => {
            let outcome = Outcome::of(parts.status, &parts.headers);
            if outcome == Outcome::Ok {
                last_created.learn(kind, &body);
            }
            tally.finish(outcome, Some(intended.elapsed()));
            return outcome;
        }
    };
    tally.finish(outcome, None);
    outcome
}

/// Sends per owner and searches per portal, for the tokens the simulator knows.
fn offered(tally: &Tally, owners: &[Option<(u64, u64)>]) -> Offered {
    let mut offered = Offered::default();
    for (per_token, owner) in tally.tokens.iter().zip(owners) {
        let Some((app_id, portal_id)) = *owner else {
            continue;
        };
        *offered.burst.entry((app_id, portal_id)).or_default() +=
            per_token.burst_sent.load(Ordering::Relaxed);
        *offered.search.entry(portal_id).or_default() +=
            per_token.search_sent.load(Ordering::Relaxed);
    }
    offered
}

/// One line on stderr a second: elapsed, sent, 2xx, 429s, in flight, answers in the last
/// second, and with `admin`, hubgate's burst budget use and queue depth.
async fn progress(
    label: String,
    run: Arc<Run>,
    start: Instant,
    admin: Option<(UpstreamClient, String)>,
) {
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(start + second, second);
    let mut last_answered = 0;
    loop {
        let now = tick.tick().await;
        let tally = &run.tally;
        let answered = tally.answered();
        let gateway = match &admin {
            Some((client, admin)) => match sim_link::gateway_load(client, admin).await {
                Ok(g) => format!(
                    " | hubgate budget {}/{} used, {} queued",
                    g.burst_used, g.burst_limit, g.queued
                ),
                Err(_) => " | hubgate admin unreachable".into(),
            },
            None => String::new(),
        };
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("{label} ")
        };
        eprintln!(
            "[{label}{:>3.0}s] sent {} 2xx {} 429s {} from HubSpot, {} from the gateway; in flight {}; {}/s{gateway}",
            (now - start).as_secs_f64(),
            tally.sent.load(Ordering::Relaxed),
            tally.count(Outcome::Ok),
            tally.count(Outcome::RateLimitedUpstream),
            tally.count(Outcome::RateLimitedGateway),
            tally.in_flight.load(Ordering::Relaxed),
            answered - last_answered,
        );
        last_answered = answered;
    }
}
