//! A replica's turn at a window shared with other replicas: how much of it one lane's batch
//! may take, and how long the lane then leaves the rest to the others.
//!
//! Replicas race for a window's free slots, and the first script to reach Redis takes
//! what it asks for. Unbounded, one batch takes every free slot, and the replica that asks
//! first is the one woken by its own answer (its probe answered, a slot freed by its own
//! send's lesson) while the others sleep until the "not before" Redis gave them, since
//! nothing they sent is on its way back: they would find the window spent each time they
//! wake. So a batch takes at most a replica's share of each window it spends
//! (`capacity / replicas`, rounded up), and a lane whose batch took that much and was
//! granted whole asks again only after a twentieth of the window (at most 250 ms: the
//! time a probe's followers wait for its answer, and so the latest the others wake to a
//! slot it freed). A replica alone still fills the window, a share per turn (with up to
//! 20 replicas: 20 turns a window).

use std::time::Duration;

use hubgate_engine::{BudgetKey, BudgetSpec, Limits};

/// Longest a lane that took its share leaves the window to the other replicas.
const MAX_TURN_GAP: Duration = Duration::from_millis(250);

/// The turn of a lane whose calls spend `key` and others: at most `share` calls per
/// batch, then `gap` before the next once a full share was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Turn {
    pub(super) key: BudgetKey,
    pub(super) share: usize,
    pub(super) gap: Duration,
}

/// The turn for calls spending `keys` when `replicas` share them: the window with the
/// smallest share decides. `None` for a replica alone, or calls spending no window.
pub(super) fn turn_of(keys: &[BudgetKey], limits: &Limits, replicas: u32) -> Option<Turn> {
    if replicas <= 1 {
        return None;
    }
    keys.iter()
        .filter_map(|key| match limits.spec_for(key) {
            BudgetSpec::Window(spec) if spec.capacity() > 0 => Some(Turn {
                key: *key,
                share: spec.capacity().div_ceil(replicas).max(1) as usize,
                gap: (Duration::from_micros(spec.span_micros()) / 20).min(MAX_TURN_GAP),
            }),
            _ => None,
        })
        .min_by_key(|turn| turn.share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubgate_engine::WindowSpec;

    #[test]
    fn a_share_of_the_tightest_window_then_a_twentieth_of_it() {
        let limits = Limits {
            burst: WindowSpec::new(30, Duration::from_secs(1)),
            search: WindowSpec::new(5, Duration::from_secs(1)),
            ..Limits::default()
        };
        let burst = BudgetKey::Burst {
            app_id: 1,
            portal_id: 10,
        };
        let search = BudgetKey::Search { portal_id: 10 };
        assert_eq!(turn_of(&[burst], &limits, 1), None);
        let turn = turn_of(&[burst], &limits, 3).unwrap();
        assert_eq!((turn.share, turn.gap), (10, Duration::from_millis(50)));
        let turn = turn_of(&[burst, search], &limits, 2).unwrap();
        assert_eq!((turn.key, turn.share), (search, 3));
        let slow = Limits {
            burst: WindowSpec::new(190, Duration::from_secs(10)),
            ..Limits::default()
        };
        let turn = turn_of(&[burst], &slow, 3).unwrap();
        assert_eq!((turn.share, turn.gap), (64, MAX_TURN_GAP));
    }
}
