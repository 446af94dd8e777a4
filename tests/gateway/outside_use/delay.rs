//! Calls reach HubSpot later than hubgate sends them: the upstream's latency jumps from
//! 1 ms to 300 ms and back mid-run, many owners bursting at once queue at HubSpot before
//! they are counted, and calls are on their way for longer than a window. With default
//! margins, no window is ever over the limit.

use super::*;
use hubgate_sim::Faults;

/// The largest answer delay the gateway reports holding the burst window of owner `app`.
async fn answer_delay_ms(gateway: &Gateway, app: u64) -> f64 {
    let (status, _, body) = get(&gateway.admin_url("/admin/budgets")).await;
    assert_eq!(status, StatusCode::OK);
    let budgets = json(&body);
    let owner = budgets["owners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["app_id"] == app)
        .unwrap_or_else(|| panic!("owner {app}: {budgets}"));
    owner["budgets"]["burst"]["answer_delay_ms"]
        .as_f64()
        .unwrap()
}

fn transit(latency_ms: u64) -> Faults {
    Faults {
        latency_ms,
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_that_jumps_to_300_ms_and_back_draws_no_429_and_the_margin_follows() {
    const LIMIT: u64 = 40;
    const WINDOW: Duration = Duration::from_secs(2);
    let _turn = heavy_turn().await;
    let sim = Arc::new(Hubspot::start(sim_config(&world(LIMIT, WINDOW, 1))).await);
    sim.set_faults(transit(1));
    let gateway = Arc::new(sim.gateway(|_| {}).await);
    let sampler = Sampler::start(sim.clone(), 1, 101);
    let start = Instant::now();
    let callers = saturate(&gateway, TOKENS[0], 20, start + Duration::from_secs(14));
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    // Calls already sent at 1 ms arrive before those sent now; every call from now on
    // arrives 300 ms after it left.
    sim.set_faults(transit(300));
    tokio::time::sleep_until(start + Duration::from_secs(8)).await;
    let high = answer_delay_ms(&gateway, 1).await;
    tokio::time::sleep_until(start + Duration::from_secs(9)).await;
    // The dangerous way round: calls sent now arrive before those sent 300 ms ago.
    sim.set_faults(transit(1));
    tokio::time::sleep_until(start + Duration::from_secs(13_500) / 1_000).await;
    let low = answer_delay_ms(&gateway, 1).await;
    join(callers).await;
    let samples = sampler.samples();
    let whole = judge(
        &samples,
        start,
        WINDOW,
        Duration::from_secs(14),
        WINDOW,
        LIMIT,
    );
    let slow = judge(
        &samples,
        start,
        Duration::from_secs(6),
        Duration::from_secs(9),
        WINDOW,
        LIMIT,
    );
    println!(
        "latency 1 → 300 → 1 ms: {} calls, {} × 429; margin in use {high:.0} ms at 300 ms, {low:.1} ms two windows after the drop; fill {:.3} overall, {:.3} at 300 ms",
        whole.sent, whole.rejected, whole.fill, slow.fill
    );
    assert_eq!(whole.rejected, 0, "{whole:?}");
    assert!(
        high >= 290.0,
        "the margin follows the latency up: {high} ms"
    );
    assert!(low < 100.0, "and back down within two windows: {low} ms");
    // Each slot is held its own delay longer: about 2 / 2.3 of the window at 300 ms.
    assert!(slow.fill >= 0.8, "{slow:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_owners_bursting_at_once_into_a_queue_at_hubspot_draw_no_429() {
    six_owners_burst_into_a_queue_at_hubspot(0).await;
}

/// Two worker threads reserve for their calls at the same moment: a call's answer must
/// move its own stamp, though a call on the other thread read the clock after it and was
/// stamped before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_owners_bursting_at_once_through_two_worker_threads_draw_no_429() {
    six_owners_burst_into_a_queue_at_hubspot(2).await;
}

/// Six owners × ten callers saturating their budgets through a gateway with `workers`
/// worker threads, into a simulator that counts arrivals one at a time.
async fn six_owners_burst_into_a_queue_at_hubspot(workers: usize) {
    const LIMIT: u64 = 40;
    const WINDOW: Duration = Duration::from_secs(2);
    let _turn = heavy_turn().await;
    let sim = Arc::new(Hubspot::start(sim_config(&world(LIMIT, WINDOW, 6))).await);
    // HubSpot counts calls one at a time, 0.5 ms each: a burst of 240 is counted over
    // 120 ms, so its last calls arrive 120 ms after they left.
    sim.set_faults(Faults {
        arrival_service_us: 500,
        ..Faults::default()
    });
    let gateway = Arc::new(
        sim.gateway(|config| config.server.workers = hubgate::config::Workers::Count(workers))
            .await,
    );
    let samplers: Vec<Sampler> = (1..=6)
        .map(|i| Sampler::start(sim.clone(), i, 100 + i))
        .collect();
    let start = Instant::now();
    let run_for = Duration::from_secs(9);
    let mut callers = Vec::new();
    for token in TOKENS {
        callers.extend(saturate(&gateway, token, 10, start + run_for));
    }
    join(callers).await;
    let (mut rejected, mut fill) = (0, 0.0);
    for sampler in &samplers {
        let judged = judge(&sampler.samples(), start, WINDOW, run_for, WINDOW, LIMIT);
        rejected += judged.rejected;
        fill += judged.fill / samplers.len() as f64;
    }
    println!("six owners × ten callers into an arrival queue, {workers} worker threads: {rejected} × 429, mean window fill {fill:.3}");
    assert_eq!(rejected, 0);
    assert!(fill >= 0.9, "mean window fill {fill}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_reach_hubspot_more_than_a_window_after_they_left_hold_their_slots_until_answered(
) {
    const LIMIT: u64 = 20;
    const WINDOW: Duration = Duration::from_secs(1);
    let _turn = heavy_turn().await;
    let sim = Arc::new(Hubspot::start(sim_config(&world(LIMIT, WINDOW, 1))).await);
    // Each call is on its way to HubSpot for anything up to two and a half windows: one
    // sent now may be counted after calls sent a window later.
    sim.set_faults(Faults {
        latency_ms: 1,
        latency_jitter_ms: 2_500,
        ..Faults::default()
    });
    let gateway = Arc::new(sim.gateway(|_| {}).await);
    let sampler = Sampler::start(sim.clone(), 1, 101);
    let start = Instant::now();
    let run_for = Duration::from_secs(8);
    let callers = saturate(&gateway, TOKENS[0], 30, start + run_for);
    let answered = join(callers).await;
    let judged = judge(&sampler.samples(), start, WINDOW, run_for, WINDOW, LIMIT);
    println!("transit 1 ms to 2.5 s: {answered} answered, {judged:?}");
    assert_eq!(judged.rejected, 0, "{judged:?}");
    // Each slot is held from its admission until a window after its answer, 1.25 s later
    // on average: about 1 / 2.25 of the window is what can be used.
    assert!(judged.fill >= 0.3, "{judged:?}");
}
