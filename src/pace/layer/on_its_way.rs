//! An attempt on its way to HubSpot: its sends' slots are held for as long as HubSpot may
//! still count it, while it waits for the answer and when its caller gives up on it.

use std::time::Duration;

use http::Response;
use hubgate_engine::Tick;

use super::{PaceShared, ResponseFuture};
use crate::hubspot::Keys;
use crate::pace::learn;
use crate::proxy::body::{Body, BoxError};

impl PaceShared {
    /// Awaits one attempt's answer. While it is on its way its sends are bounded every
    /// `still_out_every` (less than any window's span), and once more if its caller gives
    /// up on it: HubSpot may count a call at any moment until it is answered, so its slot
    /// must be held until then, not only until a span after its admission. Returns the
    /// answer and where the attempt's sends stand for the answer's own lessons.
    pub(super) async fn on_its_way(
        &self,
        sending: ResponseFuture,
        keys: &Keys,
        admitted: Tick,
        still_out_every: Duration,
    ) -> (Result<Response<Body>, BoxError>, learn::OnItsWay) {
        let mut guard = StillOut {
            shared: self,
            keys,
            sent: learn::OnItsWay::admitted(admitted),
            answered: false,
        };
        if keys.is_empty() {
            guard.answered = true;
            return (sending.await, guard.sent);
        }
        let mut sending = sending;
        let attempt = loop {
            tokio::select! {
                biased;
                attempt = &mut sending => break attempt,
                () = tokio::time::sleep(still_out_every) => {
                    let now = self.clock.now();
                    let lessons = learn::arrived_by(keys, guard.sent, now);
                    learn::apply(self.pacer.store().clone(), lessons, now, self.clock.unix_ms()).await;
                    guard.sent.held_at = guard.sent.held_at.max(now);
                }
            }
        };
        guard.answered = true;
        (attempt, guard.sent)
    }
}

/// An attempt on its way: if it is dropped unanswered (its caller went away), its sends
/// are bounded at that moment, since HubSpot may have counted the call until then.
struct StillOut<'a> {
    shared: &'a PaceShared,
    keys: &'a Keys,
    sent: learn::OnItsWay,
    answered: bool,
}

impl Drop for StillOut<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (clock, store) = (&self.shared.clock, self.shared.pacer.store());
        let now = clock.now();
        let lessons = learn::arrived_by(self.keys, self.sent, now);
        if lessons.is_empty() {
            return;
        }
        let learning = learn::apply(store.clone(), lessons, now, clock.unix_ms());
        if store.learns_locally() {
            // A store in memory learns without awaiting anything.
            let _ = futures_util::FutureExt::now_or_never(learning);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(learning);
        }
    }
}
