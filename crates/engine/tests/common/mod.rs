//! What the engine's property tests judge by, written apart from the engine on purpose.

use hubgate_engine::Tick;

/// Most sends in any half-open interval of `len` µs, by a two-pointer scan over sorted
/// send times; independent of the engine on purpose.
pub(crate) fn max_in_any_window(times: &[Tick], len: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi].as_micros() - times[lo].as_micros() >= len {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}
