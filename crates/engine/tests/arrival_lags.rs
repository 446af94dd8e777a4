//! Property tests of a window whose sends HubSpot counts late: anywhere between their
//! admission and their answer, answers later than a window, and calls stamped before
//! others admitted after them. No window of HubSpot's arrivals may hold more than the limit.

use std::time::Duration;

use hubgate_engine::{SlidingLog, Tick, WindowSpec};
use proptest::prelude::*;

mod common;
use common::max_in_any_window;

/// One send in `arrival_lag_run`: its admission, the delay until HubSpot counted it, and
/// the delay until its answer came back (never shorter than the first).
#[derive(Debug, Clone, Copy)]
struct LaggedSend {
    admitted: u64,
    answered: u64,
    arrived: u64,
}

/// Calls wanting to go at `wants` (µs, sorted) through one log with no time margin, each
/// counted by HubSpot `lag_pct` of the way to its answer, which takes `answer_us`; every
/// answer is applied as `observe_arrival_bound` at its own instant, in time order, before
/// any later admission. With `still_out_every`, a call not answered yet is bounded that
/// often too (from where its last bound left it), as the gateway does while it waits.
/// With `skews`, each call reads the clock that long before it reaches the log (another
/// thread's call, admitted later, may be stamped before it): it is judged and stamped at
/// that earlier tick, and its bounds start from there.
fn arrival_lag_run(
    spec: WindowSpec,
    wants: &[u64],
    answer_us: &[u64],
    lag_pct: &[u8],
    still_out_every: Option<u64>,
    skews: &[u64],
) -> Vec<LaggedSend> {
    /// A call on its way: when it was admitted, where the log holds it, when it is answered.
    struct OnItsWay {
        admitted: u64,
        held_at: u64,
        answered: u64,
    }
    let mut log = SlidingLog::new(spec);
    let mut pending: std::collections::BTreeMap<(u64, usize), OnItsWay> = Default::default();
    let mut done = Vec::new();
    let mut now = 0u64;
    for (i, &want) in wants.iter().enumerate() {
        now = now.max(want);
        loop {
            while let Some((&(at, id), _)) = pending.iter().next() {
                if at > now {
                    break;
                }
                let call = pending.remove(&(at, id)).expect("just seen");
                log.observe_arrival_bound(Tick(call.admitted), Tick(call.held_at), Tick(at));
                if at < call.answered {
                    let next = still_out_every.map_or(call.answered, |every| at + every);
                    let call = OnItsWay {
                        held_at: at,
                        ..call
                    };
                    pending.insert((next.min(call.answered), id), call);
                }
            }
            let skew = if skews.is_empty() {
                0
            } else {
                skews[i % skews.len()]
            };
            match log.try_reserve(Tick(now.saturating_sub(skew))) {
                Ok(()) => break,
                // An answer due before the slot frees may move it later: apply it first.
                Err(t) => match pending.keys().next() {
                    Some(&(at, _)) if at < t.as_micros() + skew => now = now.max(at),
                    _ => now = now.max(t.as_micros() + skew),
                },
            }
        }
        let stamped = now.saturating_sub(if skews.is_empty() {
            0
        } else {
            skews[i % skews.len()]
        });
        let answer = answer_us[i % answer_us.len()];
        let lag = answer * u64::from(lag_pct[i % lag_pct.len()]) / 100;
        let first = still_out_every.map_or(answer, |every| every.min(answer));
        pending.insert(
            (now + first, i),
            OnItsWay {
                admitted: stamped,
                held_at: stamped,
                answered: now + answer,
            },
        );
        done.push(LaggedSend {
            admitted: stamped,
            answered: now + answer,
            arrived: now + lag,
        });
    }
    done
}

/// Calls arriving `gaps` apart through a window of `limit` per `window_us`, each answered
/// `answer_pct` % of a window after its admission and counted `lag_pct` % of the way
/// there (see `arrival_lag_run`): the most HubSpot counted in any window, and the sends.
fn worst_window(
    limit: u32,
    window_us: u64,
    gaps: &[u64],
    answer_pct: &[u64],
    lag_pct: &[u8],
    still_out_every: Option<u64>,
    skews: &[u64],
) -> (usize, Vec<LaggedSend>) {
    let spec = WindowSpec::new(limit, Duration::from_micros(window_us));
    let wants: Vec<u64> = gaps
        .iter()
        .scan(0, |at, gap| {
            *at += gap;
            Some(*at)
        })
        .collect();
    let answer_us: Vec<u64> = answer_pct.iter().map(|p| window_us * p / 100).collect();
    let sends = arrival_lag_run(spec, &wants, &answer_us, lag_pct, still_out_every, skews);
    let mut arrivals: Vec<Tick> = sends.iter().map(|s| Tick(s.arrived)).collect();
    arrivals.sort();
    (max_in_any_window(&arrivals, window_us), sends)
}

proptest! {
    /// HubSpot counts a call when it arrives, anywhere between its send and its answer:
    /// however those lags vary from call to call (a latency that jumps up or falls back),
    /// no window of HubSpot's arrivals holds more than the limit, with no time margin at all,
    /// as long as every answer comes back within the window (up to 99 % of it).
    #[test]
    fn given_arrival_lags_up_to_the_answer_no_window_is_over_the_limit(
        limit in 1u32..=12,
        window_us in 1_000u64..=50_000,
        gaps in prop::collection::vec(prop_oneof![Just(0u64), 0u64..3_000], 1..150),
        answer_pct in prop::collection::vec(0u64..100, 1..20),
        lag_pct in prop::collection::vec(0u8..=100, 1..20),
    ) {
        let (most, sends) = worst_window(limit, window_us, &gaps, &answer_pct, &lag_pct, None, &[]);
        prop_assert!(most <= limit as usize, "{} arrivals in one window of {} µs, limit {}", most, window_us, limit);
        prop_assert!(sends.iter().all(|s| s.admitted <= s.arrived && s.arrived <= s.answered));
    }
}

proptest! {
    /// Answers that take up to four windows: a call still on its way a window after its
    /// admission is bounded every half window until it is answered, and no window of
    /// HubSpot's arrivals holds more than the limit, wherever on its way it was counted,
    /// also when calls read the clock a moment before others admitted after them.
    #[test]
    fn given_answers_later_than_a_window_bounds_while_on_the_way_keep_every_window_within_the_limit(
        limit in 1u32..=12,
        window_us in 1_000u64..=50_000,
        gaps in prop::collection::vec(prop_oneof![Just(0u64), 0u64..3_000], 1..150),
        answer_pct in prop::collection::vec(0u64..400, 1..20),
        lag_pct in prop::collection::vec(0u8..=100, 1..20),
        skews in prop::collection::vec(prop_oneof![Just(0u64), 0u64..500], 0..8),
    ) {
        let every = Some(window_us / 2);
        let (most, _) = worst_window(limit, window_us, &gaps, &answer_pct, &lag_pct, every, &skews);
        prop_assert!(most <= limit as usize, "{} arrivals in one window of {} µs, limit {}", most, window_us, limit);
    }
}
