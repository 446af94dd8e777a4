//! `hubgate load` and `hubgate demo` as an operator runs them: the real binary against a
//! simulator and a gateway on 127.0.0.1 ephemeral ports, read back through `--json`. Each
//! test saturates a core or two for seconds (hammering the simulator is the point of some),
//! so each takes its `heavy_turn`.

use std::process::Output;

use crate::support::{heavy_turn, sim_config, ClosedPort, Gateway, Hubspot, BIN};
use hubgate::load::report::Summary;
use hubgate_sim::Faults;
use tokio::process::Command;
use tokio::time::Instant;

/// 20 calls per second per owner and 5 searches per second per portal: small windows, so a
/// few seconds of load cross several of them.
async fn simulator(extra: &str) -> Hubspot {
    Hubspot::start(sim_config(&format!(
        "burst_limit = 20\nburst_window_ms = 1000\nsearch_limit = 5\nsearch_window_ms = 1000\ndaily_limit = 0\ngenerate_tokens = 20\n{extra}"
    )))
    .await
}

/// A gateway with the simulator's budgets. Margins of 10 % of a window cover how late a
/// send may reach the simulator on a busy 2-core machine, cold connections included: the
/// first burst opens a connection per call.
/// Default margins: each slot is held until a window after its answer, however late a
/// loaded machine delivers the call.
async fn gateway(sim: &Hubspot) -> Gateway {
    sim.gateway(|_| {}).await
}

async fn hubgate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().await.unwrap()
}

fn summary(output: &Output) -> Summary {
    assert!(
        output.status.success(),
        "hubgate load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("summary JSON ({e}): {stdout}"))
}

/// 30 callers on 2 owners for 3 s: far more than 20 per second each.
const SATURATING: [&str; 8] = [
    "--sim-tokens",
    "2",
    "--callers",
    "30",
    "--duration",
    "3",
    "--json",
    "--mix=get=5,create=2,batch=1,search=2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_hubgate_the_simulator_sends_no_429_and_the_windows_are_used_fully() {
    let _turn = heavy_turn().await;
    let sim = simulator("").await;
    let gateway = gateway(&sim).await;
    let target = format!("http://{}", gateway.proxy);
    let admin = format!("http://{}", gateway.admin);
    let sim_url = sim.base_url();
    // Owners 3 and 4 warm hubgate's pool of connections to the simulator first: a cold
    // first burst opens a connection per call, and on a loaded machine some of those calls
    // reach the simulator later than any margin, overlapping the next window.
    let warm_up = hubgate(&[
        "load",
        "--target",
        &target,
        "--token",
        "pat-na1-sim-3,pat-na1-sim-4",
        "--callers",
        "30",
        "--duration",
        "0.5",
        "--mix",
        "get=1",
        "--quiet",
    ])
    .await;
    assert!(warm_up.status.success());
    let mut args = vec![
        "load", "--target", &target, "--sim", &sim_url, "--admin", &admin,
    ];
    args.extend(SATURATING);
    let output = hubgate(&args).await;
    let summary = summary(&output);
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    let view = summary.simulator.as_ref().expect("the simulator's view");
    assert_eq!(summary.outcomes.rate_limited_upstream, 0);
    assert_eq!(view.upstream_429s, 0, "{view:?}");
    assert_eq!(
        summary.outcomes.ok_2xx + summary.outcomes.rate_limited_gateway,
        summary.answered
    );
    assert!(view.max_accepted_in_window <= 20, "{view:?}");
    let efficiency = view.efficiency.expect("tokens matched to owners");
    assert!(efficiency >= 0.9, "efficiency {efficiency}: {view:?}");
    assert!(summary.latency_ms.p99.is_some() && summary.sent > view.allowed);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("s] sent ") && stderr.contains("hubgate budget "),
        "a progress line a second with hubgate's budget: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_load_straight_to_the_simulator_gets_429s() {
    let _turn = heavy_turn().await;
    let sim = simulator("").await;
    let sim_url = sim.base_url();
    let mut args = vec!["load", "--target", &sim_url, "--sim", &sim_url, "--quiet"];
    args.extend(SATURATING);
    let output = hubgate(&args).await;
    let summary = summary(&output);
    let view = summary.simulator.as_ref().expect("the simulator's view");
    assert!(summary.outcomes.rate_limited_upstream > 0, "{summary:?}");
    assert_eq!(summary.outcomes.rate_limited_gateway, 0);
    assert!(view.upstream_429s >= summary.outcomes.rate_limited_upstream);
    assert!(output.stderr.is_empty(), "--quiet prints no progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_by_the_clock_however_slow_the_answers() {
    let _turn = heavy_turn().await;
    let sim = simulator("").await;
    // Every answer takes 300 ms: a closed loop would wait, an open loop must not.
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let sim_url = sim.base_url();
    let started = Instant::now();
    let output = hubgate(&[
        "load",
        "--target",
        &sim_url,
        "--sim-tokens",
        "20",
        "--rate",
        "200",
        "--duration",
        "2",
        "--mix",
        "get=1",
        "--json",
        "--quiet",
    ])
    .await;
    let summary = summary(&output);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stops at the end"
    );
    assert_eq!(summary.mode, "open");
    assert_eq!(summary.sent + summary.skipped, 400, "rate × duration");
    // A late timer may leave the last call or two due after the end; waiting for answers
    // before sending would leave nearly all of them.
    assert!(summary.skipped <= 20, "{summary:?}");
    // Calls sent in the last 300 ms (and more on a busy machine) are still out at the end.
    assert!(summary.answered >= 200, "{summary:?}");
    assert_eq!(summary.answered + summary.unfinished, summary.sent);
    let p50 = summary.latency_ms.p50.expect("answers");
    assert!(p50 >= 299.0, "latency counts from the intended send: {p50}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_both_legs_and_says_how_many_429s_hubgate_saved() {
    let _turn = heavy_turn().await;
    let output = hubgate(&["demo", "--duration", "3", "--callers", "30"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for words in [
        "through hubgate",
        "straight to HubSpot",
        "simulator: efficiency",
        "latency p99 (ms)",
    ] {
        assert!(stdout.contains(words), "{words}: {stdout}");
    }
    let saved: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hubgate saved "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a 'hubgate saved N 429s' line: {stdout}"));
    assert!(saved > 0, "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hubgate budget"), "live progress: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_json_is_one_object_with_both_legs_and_the_429s_saved() {
    let _turn = heavy_turn().await;
    let output = hubgate(&["demo", "--duration", "2", "--callers", "20", "--json"]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "demo failed: {stdout}{stderr}");
    let answer: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let upstream_429s = |leg: &str| {
        answer[leg]["simulator"]["upstream_429s"]
            .as_u64()
            .unwrap_or_else(|| panic!("{leg}.simulator.upstream_429s: {answer}"))
    };
    let saved = answer["hubspot_429s_saved"].as_u64().unwrap();
    assert_eq!(
        saved,
        upstream_429s("straight_to_hubspot") - upstream_429s("through_hubgate"),
        "{answer}"
    );
    assert!(saved > 0, "{answer}");
    assert!(
        stderr.contains("hubgate demo:"),
        "introduction on stderr: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_coalesce_shows_more_answers_per_upstream_call() {
    let _turn = heavy_turn().await;
    let output = hubgate(&[
        "demo",
        "--coalesce",
        "--duration",
        "3",
        "--callers",
        "60",
        "--json",
    ])
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "demo failed: {stdout}{stderr}");
    let answer: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let per_call = |i: usize| answer["answers_per_upstream_call"][i].as_f64().unwrap();
    println!(
        "answers per upstream call: {} without, {} with",
        per_call(0),
        per_call(1)
    );
    assert!(per_call(1) > 2.0 * per_call(0), "{answer}");
    assert!(answer["through_hubgate_coalescing"]["outcomes"]["ok_2xx"].as_u64() > Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_dead_targets_are_explained_not_crashed_on() {
    let _turn = heavy_turn().await;
    for (args, code, says) in [
        (vec!["load", "--mix", "fetch=1"], 2, "unknown call 'fetch'"),
        (
            vec!["load", "--rate", "5", "--callers", "2"],
            2,
            "cannot be used with",
        ),
        (vec!["load", "--duration", "1"], 1, "no tokens to send with"),
        (
            vec!["load", "--sim-tokens", "1", "--target", "ftp://x"],
            1,
            "--target 'ftp://x' must be an http:// or https:// base URL",
        ),
        (
            vec!["load", "--sim-tokens", "1", "--rate", "0"],
            1,
            "--rate must be",
        ),
    ] {
        let output = hubgate(&args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    // Nothing listens on a port held closed: every call is a transport error, counted.
    let closed = ClosedPort::new();
    let dead = closed.url();
    let output = hubgate(&[
        "load",
        "--target",
        &dead,
        "--sim-tokens",
        "1",
        "--callers",
        "2",
        "--duration",
        "0.5",
        "--json",
        "--quiet",
    ])
    .await;
    let summary = summary(&output);
    assert!(summary.outcomes.transport_error > 0, "{summary:?}");
    assert_eq!(summary.outcomes.ok_2xx, 0);

    let output = hubgate(&[
        "load",
        "--target",
        &dead,
        "--sim",
        &dead,
        "--sim-tokens",
        "1",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(--sim)"), "{stderr}");
}
