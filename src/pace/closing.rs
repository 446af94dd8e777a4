//! The last moment a call may be sent on shutdown: after it, an answer could no longer
//! come back before the grace ends, so calls are answered 503 with nothing sent rather
//! than cut off with HubSpot having acted on them.

use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Shared by the gateway, which sets it once on shutdown, and every paced call.
#[derive(Debug, Clone, Default)]
pub struct LastSend {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    at: OnceLock<Instant>,
    set: Notify,
}

impl LastSend {
    /// From `at` on, no call is sent. Only the first setting counts.
    pub(crate) fn close_at(&self, at: Instant) {
        if self.inner.at.set(at).is_ok() {
            self.inner.set.notify_waiters();
        }
    }

    /// Whether sending has ended.
    pub(crate) fn passed(&self) -> bool {
        self.inner.at.get().is_some_and(|at| Instant::now() >= *at)
    }

    /// Completes once sending has ended (never, while the gateway runs).
    pub(crate) async fn reached(&self) {
        loop {
            let notified = self.inner.set.notified();
            tokio::pin!(notified);
            // Registered before the check, so a setting in between is not missed.
            notified.as_mut().enable();
            if let Some(at) = self.inner.at.get() {
                tokio::time::sleep_until(*at).await;
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn sending_ends_at_the_moment_set_and_not_before() {
        let last = LastSend::default();
        assert!(!last.passed());
        let waiting = tokio::spawn({
            let last = last.clone();
            async move { last.reached().await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "unset: calls are sent as ever");
        last.close_at(Instant::now() + Duration::from_secs(1));
        assert!(!last.passed());
        tokio::time::sleep(Duration::from_millis(1001)).await;
        assert!(last.passed());
        waiting.await.unwrap();
    }
}
