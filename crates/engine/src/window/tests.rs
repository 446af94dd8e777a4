//! The sliding log against its contract: exact rolling windows, margins, HubSpot's counts
//! and another client's use, blocks and late sends.

use super::*;

const MS: u64 = 1_000;

fn spec(limit: u32, window_ms: u64) -> WindowSpec {
    WindowSpec::new(limit, Duration::from_millis(window_ms))
}

#[test]
fn burst_of_limit_from_idle_leaves_at_once_then_waits_for_the_oldest() {
    let margin = Duration::from_millis(50);
    let mut log = SlidingLog::new(spec(10, 1_000).with_margins(margin, 0));
    let t0 = Tick::from_millis(5_000);
    for _ in 0..10 {
        assert_eq!(log.try_reserve(t0), Ok(()));
    }
    let expected = Tick::from_millis(5_000 + 1_000 + 50);
    assert_eq!(log.try_reserve(t0), Err(expected));
    assert_eq!(log.try_reserve(Tick(expected.0 - 1)), Err(expected));
    // The whole burst leaves the window together, so the next burst is whole too.
    for _ in 0..10 {
        assert_eq!(log.try_reserve(expected), Ok(()));
    }
    assert_eq!(
        log.try_reserve(expected),
        Err(Tick::from_millis(5_000 + 2 * 1_050))
    );
}

#[test]
fn a_send_holds_its_slot_from_the_latest_moment_it_can_have_arrived() {
    let mut log = SlidingLog::new(spec(3, 1_000));
    let t0 = Tick::from_millis(1_000);
    for _ in 0..3 {
        assert_eq!(log.try_reserve(t0), Ok(()));
    }
    // Two of the burst were answered only 300 ms later: HubSpot may have counted them then.
    let opened = Tick::from_millis(1_300);
    log.observe_arrival_bound(t0, t0, opened);
    log.observe_arrival_bound(t0, t0, opened);
    assert_eq!(
        log.sends().collect::<Vec<_>>(),
        vec![t0, opened, opened],
        "sorted, one send left where it was"
    );
    // The slot of the send that was on time frees first, the others 300 ms later.
    assert_eq!(log.try_reserve(Tick::from_millis(2_000)), Ok(()));
    assert_eq!(
        log.try_reserve(Tick::from_millis(2_000)),
        Err(Tick::from_millis(2_300))
    );
    // Nothing moves earlier, and nothing admitted after `admitted` moves.
    log.observe_arrival_bound(
        Tick::from_millis(2_000),
        Tick::from_millis(2_000),
        Tick::from_millis(1_500),
    );
    log.observe_arrival_bound(
        Tick::from_millis(999),
        Tick::from_millis(999),
        Tick::from_millis(5_000),
    );
    assert_eq!(
        log.sends().collect::<Vec<_>>(),
        vec![opened, opened, Tick::from_millis(2_000)]
    );
}

#[test]
fn a_send_still_on_its_way_keeps_its_slot_through_bounds_taken_less_than_a_span_apart() {
    let mut log = SlidingLog::new(spec(2, 1_000));
    let t0 = Tick::from_millis(1_000);
    assert_eq!(log.try_reserve(t0), Ok(()));
    let other = Tick::from_millis(1_100);
    assert_eq!(log.try_reserve(other), Ok(()));
    // The first send is still unanswered at 1.6 s and 2.2 s: each bound moves it on from
    // where the last one left it, not the other send (admitted after it) nor a third.
    let (first, second) = (Tick::from_millis(1_600), Tick::from_millis(2_200));
    log.observe_arrival_bound(t0, t0, first);
    log.observe_arrival_bound(t0, first, second);
    assert_eq!(log.sends().collect::<Vec<_>>(), vec![other, second]);
    // Its answer at 2.5 s holds it a span from then; the delay measured is from admission.
    let answered = Tick::from_millis(2_500);
    log.observe_arrival_bound(t0, second, answered);
    assert_eq!(log.sends().collect::<Vec<_>>(), vec![other, answered]);
    assert_eq!(log.answer_delay(answered), Duration::from_millis(1_500));
    // Unmoved, it would have freed its slot at 2 s, while HubSpot may have counted it as
    // late as 2.5 s: the slots free when the other send leaves, and a window after the
    // answer.
    assert_eq!(log.try_reserve(Tick::from_millis(2_100)), Ok(()));
    assert_eq!(
        log.try_reserve(Tick::from_millis(2_100)),
        Err(Tick::from_millis(3_100))
    );
    assert_eq!(log.try_reserve(Tick::from_millis(3_100)), Ok(()));
    assert_eq!(
        log.try_reserve(Tick::from_millis(3_100)),
        Err(Tick::from_millis(3_500))
    );
}

#[test]
fn margin_slots_reduce_capacity() {
    let mut log = SlidingLog::new(spec(5, 100).with_margins(Duration::ZERO, 2));
    for _ in 0..3 {
        assert!(log.try_reserve(Tick(0)).is_ok());
    }
    assert_eq!(log.try_reserve(Tick(0)), Err(Tick(100 * MS)));
    assert_eq!(log.remaining(Tick(0)), 0);
    assert_eq!(log.remaining(Tick(100 * MS)), 3);
}

#[test]
fn limit_zero_never_admits() {
    let mut log = SlidingLog::new(spec(0, 1_000));
    assert_eq!(log.next_free(Tick(0)), Tick::MAX);
    assert_eq!(log.try_reserve(Tick(7)), Err(Tick::MAX));
    assert_eq!(log.estimate_wait(Tick(0), 0), Duration::MAX);
    assert_eq!(log.remaining(Tick(0)), 0);
    let mut slots_over_limit = SlidingLog::new(spec(3, 1_000).with_margins(Duration::ZERO, 9));
    assert_eq!(slots_over_limit.try_reserve(Tick(0)), Err(Tick::MAX));
    slots_over_limit.observe_remaining(Tick(0), 0);
    assert_eq!(slots_over_limit.sends().len(), 0);
}

#[test]
fn zero_window_limits_sends_per_microsecond() {
    let mut log = SlidingLog::new(spec(2, 0));
    assert!(log.try_reserve(Tick(10)).is_ok());
    assert!(log.try_reserve(Tick(10)).is_ok());
    assert_eq!(log.try_reserve(Tick(10)), Err(Tick(11)));
    assert!(log.try_reserve(Tick(11)).is_ok());
}

#[test]
fn huge_values_saturate_to_never() {
    let mut log = SlidingLog::new(WindowSpec::new(u32::MAX, Duration::MAX));
    assert_eq!(log.capacity(), WindowSpec::MAX_LIMIT);
    assert!(log.try_reserve(Tick(1)).is_ok());
    assert_eq!(log.estimate_wait(Tick(1), usize::MAX), Duration::MAX);
    log.observe_remaining(Tick(1), 0);
    assert_eq!(log.used(Tick(1)), WindowSpec::MAX_LIMIT);
    assert_eq!(log.next_free(Tick(1)), Tick::MAX);
    assert_eq!(log.try_reserve(Tick::MAX), Err(Tick::MAX));

    let mut tiny = SlidingLog::new(spec(1, 1));
    assert_eq!(tiny.try_reserve(Tick::MAX), Err(Tick::MAX));
    assert!(tiny.try_reserve(Tick(u64::MAX - 10)).is_ok());
    assert_eq!(tiny.try_reserve(Tick::MAX), Err(Tick::MAX));
}

#[test]
fn limits_above_65536_are_honoured_up_to_max_limit() {
    // A budget set far above what is sent, so that it never binds at 10 s windows and
    // tens of thousands of calls per second, holds as configured.
    let limit = 200_000;
    let mut log = SlidingLog::new(spec(limit, 10_000));
    assert_eq!(log.capacity(), limit);
    let t0 = Tick::from_millis(1_000);
    for _ in 0..limit {
        assert_eq!(log.try_reserve(t0), Ok(()));
    }
    assert_eq!(log.try_reserve(t0), Err(Tick::from_millis(11_000)));
    assert_eq!(log.used(t0), limit);
    let over = SlidingLog::new(WindowSpec::new(WindowSpec::MAX_LIMIT + 1, Duration::ZERO));
    assert_eq!(over.capacity(), 1 << 20);
}

#[test]
fn a_send_admitted_at_an_earlier_tick_than_the_newest_is_stamped_in_its_place() {
    let mut log = SlidingLog::new(spec(2, 100));
    assert!(log.try_reserve(Tick(50 * MS)).is_ok());
    // Another thread read the clock first, and took the lock second.
    assert!(log.try_reserve(Tick(10 * MS)).is_ok());
    assert_eq!(
        log.sends().collect::<Vec<_>>(),
        [Tick(10 * MS), Tick(50 * MS)]
    );
    assert_eq!(log.try_reserve(Tick(0)), Err(Tick(110 * MS)));
    // Its answer finds its own stamp, not the later send's.
    log.observe_arrival_bound(Tick(10 * MS), Tick(10 * MS), Tick(80 * MS));
    assert_eq!(
        log.sends().collect::<Vec<_>>(),
        [Tick(50 * MS), Tick(80 * MS)]
    );
    assert_eq!(log.try_reserve(Tick(120 * MS)), Err(Tick(150 * MS)));
}

#[test]
fn observe_remaining_lowers_but_never_raises() {
    let mut log = SlidingLog::new(spec(10, 1_000).with_margins(Duration::ZERO, 1));
    for _ in 0..2 {
        log.try_reserve(Tick(0)).unwrap();
    }
    assert_eq!(log.remaining(Tick(0)), 7);
    // HubSpot thinks more is left than we do: no change.
    log.observe_remaining(Tick(MS), 10);
    assert_eq!(log.remaining(Tick(MS)), 7);
    log.observe_remaining(Tick(MS), 8);
    assert_eq!(log.remaining(Tick(MS)), 7);
    // Someone else spent 4: HubSpot has 4 left, we keep the slot margin: 3.
    log.observe_remaining(Tick(MS), 4);
    assert_eq!(log.remaining(Tick(MS)), 3);
    assert_eq!(log.used(Tick(MS)), 6);
    // The phantoms leave a full window after they were observed.
    assert_eq!(log.remaining(Tick(1_000 * MS)), 5);
    assert_eq!(log.remaining(Tick(1_001 * MS)), 9);
    // Zero left means full until the oldest leaves.
    log.observe_remaining(Tick(2 * MS), 0);
    assert_eq!(log.remaining(Tick(2 * MS)), 0);
    assert_eq!(log.next_free(Tick(2 * MS)), Tick(1_000 * MS));
}

#[test]
fn block_until_holds_until_t_then_the_log_rules_again() {
    let mut log = SlidingLog::new(spec(3, 100));
    log.try_reserve(Tick(0)).unwrap();
    log.block_until(Tick(500 * MS));
    log.block_until(Tick(200 * MS));
    assert_eq!(log.blocked_until(), Tick(500 * MS));
    assert_eq!(log.used(Tick(300 * MS)), 3);
    assert_eq!(log.try_reserve(Tick(499 * MS)), Err(Tick(500 * MS)));
    assert_eq!(log.estimate_wait(Tick(0), 0), Duration::from_millis(500));
    assert!(!log.is_idle(Tick(499 * MS)));
    assert!(log.is_idle(Tick(500 * MS)));
    for _ in 0..3 {
        assert!(log.try_reserve(Tick(500 * MS)).is_ok());
    }
    assert_eq!(log.try_reserve(Tick(500 * MS)), Err(Tick(600 * MS)));
}

#[test]
fn estimate_wait_follows_the_recursion() {
    let mut log = SlidingLog::new(spec(3, 100));
    log.try_reserve(Tick(10 * MS)).unwrap();
    log.try_reserve(Tick(20 * MS)).unwrap();
    let now = Tick(30 * MS);
    let wait = |ahead| log.estimate_wait(now, ahead);
    assert_eq!(wait(0), Duration::ZERO);
    assert_eq!(wait(1), Duration::from_millis(80));
    assert_eq!(wait(2), Duration::from_millis(90));
    assert_eq!(wait(3), Duration::from_millis(100));
    assert_eq!(wait(4), Duration::from_millis(180));
    assert_eq!(wait(7), Duration::from_millis(280));
    assert_eq!(spec(3, 100).idle_wait(3), Duration::from_millis(100));
}

#[test]
fn another_clients_use_seen_in_headers_is_left_to_it_then_forgotten() {
    let mut log = SlidingLog::new(spec(20, 1_000));
    let t0 = Tick::from_millis(10_000);
    for _ in 0..5 {
        log.try_reserve(t0).unwrap();
    }
    // HubSpot counted 11 when our fifth call arrived: 6 are someone else's, and one slot
    // more is headroom for its next call.
    let answered = Tick::from_millis(10_001);
    log.observe_arrival_bound(t0, t0, answered);
    log.observe_usage(answered, 11, 20, t0);
    assert_eq!(log.held_for_outside(answered), 7);
    assert_eq!(log.remaining(answered), 20 - 7 - 5);
    for _ in 0..8 {
        log.try_reserve(answered).unwrap();
    }
    assert_eq!(log.try_reserve(answered), Err(Tick::from_millis(11_000)));
    // A span after it was seen it still holds; unseen for a span and a quarter, it is
    // forgotten.
    assert_eq!(log.held_for_outside(Tick::from_millis(11_000)), 7);
    assert_eq!(log.held_for_outside(Tick::from_millis(11_300)), 0);
    let t3 = Tick::from_millis(12_500);
    assert_eq!(log.remaining(t3), 20);
    // A smaller estimate replaces a larger one once the larger is a window old.
    log.observe_usage(t3, 2, 20, t3);
    assert_eq!(log.remaining(t3), 17);
    // It only fell since, so it is followed down within half a window.
    log.observe_usage(Tick::from_millis(13_400), 0, 20, Tick::from_millis(13_400));
    assert_eq!(log.remaining(Tick::from_millis(13_400)), 20);
}

#[test]
fn a_burst_whose_calls_overtake_each_other_invents_no_other_client() {
    let mut log = SlidingLog::new(spec(20, 1_000));
    let t0 = Tick::from_millis(1_000);
    for i in 0..20 {
        log.try_reserve(Tick(t0.as_micros() + i)).unwrap();
    }
    // The fifth admitted arrived twelfth: seven sends admitted after it overtook it on
    // other connections. They are ours too, not someone else's.
    let answered = Tick::from_millis(1_020);
    log.observe_arrival_bound(Tick(t0.as_micros() + 4), Tick(t0.as_micros() + 4), answered);
    log.observe_usage(answered, 12, 20, Tick(t0.as_micros() + 4));
    assert_eq!(log.held_for_outside(answered), 0);
    // Beside a stream of 16 calls, a call that had the window to itself reads it exactly:
    // 16 slots and 1 + 16/16 of headroom.
    log.observe_usage(answered, 36, 40, Tick(t0.as_micros() + 19));
    assert_eq!(log.held_for_outside(answered), 18);
}

#[test]
fn each_429_in_an_epoch_leaves_one_more_slot_to_someone_else() {
    let mut log = SlidingLog::new(spec(20, 1_000));
    let t0 = Tick::from_millis(1_000);
    for _ in 0..20 {
        log.try_reserve(t0).unwrap();
    }
    // The window was already partly spent elsewhere: 6 of our 20 were refused, and the
    // headers (capped at the limit) could not tell.
    for _ in 0..20 {
        log.observe_usage(t0, 20, 20, t0);
    }
    for _ in 0..6 {
        log.observe_rejection(t0);
    }
    let next = Tick::from_millis(2_000);
    assert_eq!(log.remaining(next), 20 - 6 - 1);
}

#[test]
fn a_lower_max_than_configured_is_believed_a_higher_one_is_not() {
    let mut log = SlidingLog::new(spec(110, 10_000));
    let t0 = Tick::from_millis(1_000);
    log.try_reserve(t0).unwrap();
    log.observe_usage(t0, 1, 100, t0);
    assert_eq!(log.remaining(t0), 100 - 1, "HubSpot's tier is 100, not 110");
    let mut higher = SlidingLog::new(spec(110, 10_000));
    higher.observe_usage(t0, 0, 190, t0);
    assert_eq!(higher.remaining(t0), 110, "a higher -Max is not learned");
}

#[test]
fn observed_use_never_takes_the_last_slot_or_raises_the_limit() {
    let mut log = SlidingLog::new(spec(10, 1_000));
    let t0 = Tick::from_millis(1_000);
    log.observe_usage(t0, 500, 10, t0);
    assert_eq!(log.remaining(t0), 1, "one slot stays, to keep learning");
    let mut fresh = SlidingLog::new(spec(10, 1_000));
    fresh.observe_usage(t0, 0, 10, t0);
    assert_eq!(fresh.remaining(t0), 10);
}

#[test]
fn after_a_quiet_spell_one_send_goes_first_and_the_rest_wait_for_its_count() {
    let mut log = SlidingLog::new(spec(10, 1_000).learning_first());
    let t0 = Tick::from_millis(1_000);
    // Nothing learned yet: the first send goes alone, for at most a twentieth of a span.
    assert_eq!(log.try_reserve(t0), Ok(()));
    assert_eq!(log.try_reserve(t0), Err(Tick::from_millis(1_050)));
    // Its answer, 2 ms later, brings HubSpot's count: nobody else is here, so the rest go.
    let answered = Tick::from_millis(1_002);
    log.observe_arrival_bound(t0, t0, answered);
    log.observe_usage(answered, 1, 10, t0);
    for _ in 0..4 {
        assert_eq!(log.try_reserve(answered), Ok(()));
    }
    // With another client seen (2 calls of its own), a count older than a tenth of a span
    // is stale: the next send probes again, the rest wait for its answer (twice the delay
    // measured, plus a millisecond), and go spaced a span over the 7 slots left apart.
    log.observe_usage(answered, 7, 10, answered);
    let later = Tick::from_millis(1_200);
    assert_eq!(log.try_reserve(later), Ok(()));
    assert_eq!(log.probe_out_until(later), Some(Tick::from_millis(1_205)));
    assert_eq!(
        log.try_reserve(later),
        Err(Tick(later.as_micros() + 1_000_000 / 7))
    );
    log.observe_usage(Tick::from_millis(1_203), 8, 10, later);
    assert_eq!(log.probe_out_until(Tick::from_millis(1_203)), None);
    // A spec without it never waits.
    let mut plain = SlidingLog::new(spec(10, 1_000));
    assert_eq!(plain.try_reserve(t0), Ok(()));
    assert_eq!(plain.try_reserve(t0), Ok(()));
}

#[test]
fn a_block_of_calls_is_held_for_a_whole_window_a_smooth_stream_followed_down_in_half() {
    let at = |ms: u64| Tick::from_millis(ms);
    let mut stream = SlidingLog::new(spec(40, 1_000));
    // A stream read every 50 ms at 10 or 11 calls per window, for two windows: the rise
    // from nothing to 10 is a window behind by then.
    for i in 0..40 {
        let t = at(1_000 + 50 * i);
        stream.observe_usage(t, 10 + (i % 2) as u32, 40, t);
    }
    assert_eq!(
        stream.held_for_outside(at(2_990)),
        12,
        "11 and one of headroom"
    );
    // It stops: within half a window nothing is held any more.
    for i in 0..10 {
        let t = at(3_000 + 50 * i);
        stream.observe_usage(t, 0, 40, t);
    }
    assert_eq!(stream.held_for_outside(at(3_500)), 0);

    // A block of 12 at once, then readings of nothing: it may land again, so it is held
    // for the whole window.
    let mut block = SlidingLog::new(spec(40, 1_000));
    block.observe_usage(at(1_000), 12, 40, at(1_000));
    for i in 1..18 {
        let t = at(1_000 + 50 * i);
        block.observe_usage(t, 0, 40, t);
    }
    assert_eq!(block.held_for_outside(at(1_900)), 13);
    assert_eq!(
        block.held_for_outside(at(2_300)),
        0,
        "gone a window and a quarter on"
    );
}

/// What the log was before it searched near its last answer: a sorted `Vec` searched whole,
/// a send moved by removing and re-inserting it.
#[derive(Default)]
struct WholeSearchModel {
    sends: Vec<Tick>,
}

impl WholeSearchModel {
    fn commit(&mut self, now: Tick, capacity: usize) {
        if self.sends.len() >= capacity {
            self.sends.remove(0);
        }
        if capacity > 0 {
            let at = self.sends.partition_point(|&t| t <= now);
            self.sends.insert(at, now);
        }
    }

    fn observe_arrival_bound(&mut self, admitted: Tick, by: Tick) {
        let at = self.sends.partition_point(|&t| t <= admitted);
        let Some(newest) = at.checked_sub(1) else {
            return;
        };
        if by <= self.sends[newest] {
            return;
        }
        self.sends.remove(newest);
        let to = self.sends.partition_point(|&t| t <= by);
        self.sends.insert(to, by);
    }

    fn gone_by(&self, at: Tick, span: u64) -> usize {
        self.sends.partition_point(|&t| leaves(t, span) <= at)
    }
}

/// One step of a gateway's traffic on a window, as the property test draws it.
#[derive(Debug, Clone)]
enum Step {
    /// A send `gap` µs after the latest, or earlier when `gap` is negative.
    Send { gap: i64 },
    /// An answer for the send `back` sends ago, `delay` µs after it was admitted.
    Answer { back: usize, delay: u64 },
    /// HubSpot's count in an answer for the send `back` sends ago.
    Usage { back: usize, hub_used: u32 },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (-50i64..400).prop_map(|gap| Step::Send { gap }),
        3 => (0usize..40, 0u64..3_000).prop_map(|(back, delay)| Step::Answer { back, delay }),
        2 => (0usize..40, 0u32..40).prop_map(|(back, hub_used)| Step::Usage { back, hub_used }),
    ]
}

proptest::proptest! {
    /// The log answers as a search over all of it would, and holds the very same sends,
    /// whatever the order of sends, answers and counts, across the ring's wrap.
    #[test]
    fn searching_near_the_last_answer_matches_searching_the_whole_log(
        limit in 1u32..=64,
        window_us in 1u64..5_000,
        steps in proptest::collection::vec(step(), 1..400),
        probes in proptest::collection::vec(0u64..12_000, 4),
    ) {
        let mut log = SlidingLog::new(WindowSpec::new(limit, Duration::from_micros(window_us)));
        let mut model = WholeSearchModel::default();
        let span = log.span;
        let mut now = Tick(10_000);
        let mut admitted: Vec<Tick> = Vec::new();
        for step in steps {
            match step {
                Step::Send { gap } => {
                    now = Tick(now.0.saturating_add_signed(gap));
                    log.commit(now);
                    model.commit(now, limit as usize);
                    admitted.push(now);
                }
                Step::Answer { back, delay } => {
                    let Some(&at) = admitted.iter().rev().nth(back) else { continue };
                    let by = at.saturating_add_micros(delay);
                    log.observe_arrival_bound(at, at, by);
                    model.observe_arrival_bound(at, by);
                }
                Step::Usage { back, hub_used } => {
                    let Some(&at) = admitted.iter().rev().nth(back) else { continue };
                    log.observe_usage(now, hub_used, limit, at);
                }
            }
            proptest::prop_assert_eq!(log.sends().collect::<Vec<_>>(), model.sends.clone());
            for &probe in &probes {
                let at = Tick(now.0.saturating_sub(6_000) + probe);
                proptest::prop_assert_eq!(log.gone_by(at), model.gone_by(at, span));
            }
        }
    }
}
