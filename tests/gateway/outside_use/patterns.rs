//! Another client spends part of the owner's window, steadily, in blocks or ramping up and
//! down, while twenty callers saturate hubgate: hubgate's 429 share stays under 2 % and it
//! uses what the other client leaves, on one instance and across replicas on Redis.

use super::*;
use hubgate::Config;
use hubgate_sim::{OutsideConfig, OutsidePattern};

const LIMIT: u64 = 40;
const WINDOW: Duration = Duration::from_millis(500);
/// 30 % of the limit.
const OUTSIDE: u32 = 12;

/// Runs the other client's `pattern` for a window first, then twenty callers through
/// gateways built by `tune` for `run_for`; returns the samples and when the callers began.
async fn run(
    pattern: OutsidePattern,
    per_window: u32,
    run_for: Duration,
    replicas: &[Arc<Gateway>],
    sim: &Arc<Hubspot>,
) -> (Vec<Sample>, Instant) {
    sim.set_outside(OutsideConfig {
        app_id: 1,
        portal_id: 101,
        per_window,
        pattern,
    });
    let sampler = Sampler::start(sim.clone(), 1, 101);
    tokio::time::sleep(WINDOW).await;
    let start = Instant::now();
    let until = start + run_for;
    let mut callers = Vec::new();
    for gateway in replicas {
        callers.extend(saturate(gateway, TOKENS[0], 20 / replicas.len(), until));
    }
    join(callers).await;
    sim.set_outside_consumer(1, 101, 0);
    (sampler.samples(), start)
}

async fn one_gateway() -> (Arc<Hubspot>, Vec<Arc<Gateway>>) {
    let sim = Arc::new(Hubspot::start(sim_config(&world(LIMIT, WINDOW, 1))).await);
    let gateway = Arc::new(sim.gateway(|_| {}).await);
    (sim, vec![gateway])
}

fn report(name: &str, judged: &Judged) {
    println!(
        "{name}: hubgate sent {} calls, {} drew 429 ({:.2} %); used {:.1} % of what the other client left; mean window fill {:.3}",
        judged.sent,
        judged.rejected,
        100.0 * judged.share_429,
        100.0 * judged.use_of_left,
        judged.fill
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_steady_stream_hubgate_draws_almost_no_429s_and_uses_what_is_left() {
    let _turn = heavy_turn().await;
    let (sim, gateways) = one_gateway().await;
    let run_for = 12 * WINDOW;
    let (samples, start) = run(OutsidePattern::Steady, OUTSIDE, run_for, &gateways, &sim).await;
    let judged = judge(&samples, start, 2 * WINDOW, run_for, WINDOW, LIMIT);
    report("steady 30 %", &judged);
    assert!(judged.share_429 < 0.02, "{judged:?}");
    // 95 % on HubSpot's 10 s window in release (BENCHMARKS.md); less on half-second windows
    // in a debug build, where each answer's delay is a larger part of the window.
    assert!(judged.use_of_left >= 0.85, "{judged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_blocks_of_calls_hubgate_draws_almost_no_429s() {
    let _turn = heavy_turn().await;
    let (sim, gateways) = one_gateway().await;
    let run_for = 14 * WINDOW;
    // A block of 30 % of the limit every 0.7 windows: some windows hold two blocks.
    let bursty = OutsidePattern::Bursty { every_ms: 350 };
    let (samples, start) = run(bursty, OUTSIDE, run_for, &gateways, &sim).await;
    let judged = judge(&samples, start, 2 * WINDOW, run_for, WINDOW, LIMIT);
    report("bursty 30 % every 0.7 windows", &judged);
    assert!(judged.share_429 < 0.02, "{judged:?}");
    // Room for the largest use seen in a window (two blocks) is about half of what the
    // other client leaves on average (see BENCHMARKS.md): not the 90 % of the other
    // patterns, which would need predicting when its next block lands.
    assert!(judged.use_of_left >= 0.45, "{judged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_ramp_hubgate_follows_it_up_and_down_and_takes_the_window_back() {
    let _turn = heavy_turn().await;
    let (sim, gateways) = one_gateway().await;
    // 0 → 50 % of the limit over 6 windows and back over 6 (as a minute each way is to
    // HubSpot's 10 s window), then nothing for 4.
    let ramp = OutsidePattern::Ramp { ramp_ms: 3_000 };
    let run_for = 15 * WINDOW;
    let (samples, start) = run(ramp, 20, run_for, &gateways, &sim).await;
    let ramping = judge(&samples, start, WINDOW, 11 * WINDOW, WINDOW, LIMIT);
    report("ramp 0 → 50 % → 0", &ramping);
    assert!(ramping.share_429 < 0.02, "{ramping:?}");
    // 91.6 % of what was left on HubSpot's 10 s window in release (BENCHMARKS.md); less
    // here on half-second windows in a debug build, where each answer's delay and the
    // probes are a larger part of the window.
    assert!(ramping.use_of_left >= 0.75, "{ramping:?}");
    // The ramp ended 11 windows in (it started a window before the callers): two windows
    // later, hubgate has the whole window back.
    let after = judge(&samples, start, 14 * WINDOW, run_for, WINDOW, LIMIT);
    report("after the ramp", &after);
    assert!(after.fill >= 0.9, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_redis_share_what_one_learns_about_the_other_client() {
    let _turn = heavy_turn().await;
    let redis = RedisServer::start();
    let sim = Arc::new(Hubspot::start(sim_config(&world(LIMIT, WINDOW, 1))).await);
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let url = redis.url();
        let gateway = sim
            .gateway(move |c: &mut Config| {
                c.store.kind = "redis".into();
                c.store.redis_url = url;
                c.store.key_prefix = "outside".into();
                c.store.replicas = 2;
            })
            .await;
        gateways.push(Arc::new(gateway));
    }
    let run_for = 12 * WINDOW;
    let (samples, start) = run(OutsidePattern::Steady, OUTSIDE, run_for, &gateways, &sim).await;
    let judged = judge(&samples, start, 2 * WINDOW, run_for, WINDOW, LIMIT);
    report("steady 30 %, two replicas on Redis", &judged);
    assert!(judged.share_429 < 0.02, "{judged:?}");
    // As on one instance, less what the replicas' shares and Redis round trips cost.
    assert!(judged.use_of_left >= 0.8, "{judged:?}");
}
