//! Owns a window's send times in order, and finding a time in them by looking near where
//! the last search ended rather than over the whole log.
//!
//! Every call asks the log the same few questions: which sends have left the window (the
//! boundary sits `span` behind now and only creeps forward), which is the newest send
//! admitted by an answered call (a few in-flight sends from the end), where its later
//! arrival goes (at or near the end). A binary search over the whole log answers each in
//! `log₂ n` probes scattered over up to 8 MiB, most of them cache misses: the cost of a
//! call grew with the sends its window holds. Searched outward from a starting point, each
//! costs `log₂ d` probes for a distance `d` that depends on the calls in flight and the
//! time since the last call, not on the log's length, and they touch memory that the
//! last call touched too.

use std::collections::VecDeque;

use crate::time::Tick;

/// Send times, non-decreasing. Where a search starts is the caller's to keep (as a `u32`
/// beside its other small fields, which keeps a window budget's size as it was).
#[derive(Debug, Clone, Default)]
pub(super) struct SendLog {
    ticks: VecDeque<Tick>,
}

impl SendLog {
    pub(super) fn len(&self) -> usize {
        self.ticks.len()
    }

    pub(super) fn capacity(&self) -> usize {
        self.ticks.capacity()
    }

    pub(super) fn reserve_exact(&mut self, additional: usize) {
        self.ticks.reserve_exact(additional);
    }

    pub(super) fn shrink_to(&mut self, keep: usize) {
        self.ticks.shrink_to(keep);
    }

    pub(super) fn back(&self) -> Option<Tick> {
        self.ticks.back().copied()
    }

    /// The send `index` places from the oldest.
    pub(super) fn get(&self, index: usize) -> Tick {
        self.ticks[index]
    }

    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = Tick> + '_ {
        self.ticks.iter().copied()
    }

    /// Inserts a send in its place by time: at the end, or a few places before it when
    /// sends stamped a little later (on another thread, or moved to their answers) are
    /// already there.
    pub(super) fn insert_sorted(&mut self, tick: Tick) {
        let at = self.partition_near(self.ticks.len(), |t| t <= tick);
        self.ticks.insert(at, tick);
    }

    pub(super) fn pop_front(&mut self) {
        self.ticks.pop_front();
    }

    /// Drops all but the newest `keep` sends.
    pub(super) fn keep_newest(&mut self, keep: usize) {
        let drop = self.ticks.len().saturating_sub(keep);
        self.ticks.drain(..drop);
    }

    /// Sends at or before `at`, counted from the newest end: the answered sends of a
    /// gateway are the last few.
    pub(super) fn at_or_before(&self, at: Tick) -> usize {
        self.partition_near(self.ticks.len(), |t| t <= at)
    }

    /// Moves the send at `index` to `to`, no earlier than it, keeping the order: the sends
    /// between its place and its new one each step one place towards the oldest.
    pub(super) fn move_later(&mut self, index: usize, to: Tick) {
        debug_assert!(self.ticks[index] <= to);
        let end = self.partition_near(self.ticks.len(), |t| t <= to);
        let (front, back) = self.ticks.as_mut_slices();
        let split = front.len();
        if end <= split {
            front[index..end].copy_within(1.., 0);
        } else if index >= split {
            back[index - split..end - split].copy_within(1.., 0);
        } else {
            // The sends to shift straddle the ring's wrap.
            front[index..].copy_within(1.., 0);
            front[split - 1] = back[0];
            back[..end - split].copy_within(1.., 0);
        }
        self.ticks[end - 1] = to;
    }

    /// The first index at which `pred` fails (it holds for a prefix, then never), found by
    /// doubling steps outward from `from` and then halving between the last two probes:
    /// `2·log₂ d` probes for an answer `d` places away, whatever `from` is.
    pub(super) fn partition_near(&self, from: usize, pred: impl Fn(Tick) -> bool) -> usize {
        let len = self.ticks.len();
        let from = from.min(len);
        // `pred` holds before `lo` and fails from `hi` on.
        let (mut lo, mut hi);
        if from < len && pred(self.ticks[from]) {
            lo = from + 1;
            hi = len;
            let mut step = 1;
            while let Some(probe) = from.checked_add(step).filter(|&p| p < len) {
                if pred(self.ticks[probe]) {
                    lo = probe + 1;
                    step *= 2;
                } else {
                    hi = probe;
                    break;
                }
            }
        } else {
            lo = 0;
            hi = from;
            let mut step = 1;
            while let Some(probe) = from.checked_sub(step) {
                if pred(self.ticks[probe]) {
                    lo = probe + 1;
                    break;
                }
                hi = probe;
                step *= 2;
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.ticks[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log whose ring holds exactly `n`: pushes after pops wrap around its end.
    fn ring(n: usize) -> SendLog {
        SendLog {
            ticks: VecDeque::with_capacity(n),
        }
    }

    #[test]
    fn searches_from_anywhere_agree_with_a_search_over_the_whole_log() {
        let ticks: Vec<u64> = vec![0, 0, 1, 3, 3, 3, 7, 8, 8, 12, 20, 20, 21];
        for rotate in 0..ticks.len() {
            // Rotated starts put the ring's wrap at every place in the log.
            let mut log = ring(ticks.len());
            for _ in 0..rotate {
                log.ticks.push_back(Tick(0));
                log.pop_front();
            }
            for &t in &ticks {
                log.ticks.push_back(Tick(t));
            }
            for at in 0..=22u64 {
                let whole = ticks.partition_point(|&t| t <= at);
                for from in 0..=ticks.len() + 2 {
                    assert_eq!(log.partition_near(from, |t| t.0 <= at), whole);
                }
                assert_eq!(log.at_or_before(Tick(at)), whole);
            }
        }
    }

    #[test]
    fn a_search_costs_probes_for_its_distance_not_for_the_log_length() {
        for len in [100u64, 1_000_000] {
            let mut log = SendLog::default();
            for t in 0..len {
                log.ticks.push_back(Tick(t));
            }
            let probes = std::cell::Cell::new(0u32);
            let probes = &probes;
            let counted = |at: u64| {
                move |t: Tick| {
                    probes.set(probes.get() + 1);
                    t.0 <= at
                }
            };
            // The boundary 16 places from where the search starts, on either side, and an
            // answered send 16 from the newest end.
            let from = (len / 2) as usize;
            assert_eq!(log.partition_near(from, counted(len / 2 + 15)), from + 16);
            assert_eq!(log.partition_near(from, counted(len / 2 - 17)), from - 16);
            let newest = len as usize;
            assert_eq!(log.partition_near(newest, counted(len - 17)), newest - 16);
            // A search over the whole log would take 20 probes each at 1,000,000 sends.
            assert!(
                probes.get() <= 3 * 11,
                "{len} sends: {} probes",
                probes.get()
            );
        }
    }

    #[test]
    fn a_send_moved_later_lands_after_every_send_at_or_before_its_new_time() {
        let ticks: Vec<u64> = vec![1, 2, 2, 5, 6, 9, 9, 12];
        for rotate in 0..ticks.len() {
            for index in 0..ticks.len() {
                for to in ticks[index]..=14 {
                    let mut log = ring(ticks.len());
                    for _ in 0..rotate {
                        log.ticks.push_back(Tick(0));
                        log.pop_front();
                    }
                    for &t in &ticks {
                        log.ticks.push_back(Tick(t));
                    }
                    let wrapped = !log.ticks.as_slices().1.is_empty();
                    assert_eq!(wrapped, rotate > 0 && log.ticks.capacity() == ticks.len());
                    log.move_later(index, Tick(to));
                    let mut expected = ticks.clone();
                    expected.remove(index);
                    let at = expected.partition_point(|&t| t <= to);
                    expected.insert(at, to);
                    let got: Vec<u64> = log.iter().map(|t| t.0).collect();
                    assert_eq!(got, expected, "rotate {rotate}, index {index}, to {to}");
                }
            }
        }
    }
}
