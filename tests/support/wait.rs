//! Waiting for a condition with a deadline, instead of sleeping for a guess.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked again: short next to every deadline in the tests.
const POLL: Duration = Duration::from_millis(20);

/// Checks `check` until it holds; panics naming `what` if it does not within `within`.
pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let holds = check();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err(String::new())
            }
        }
    })
    .await
}

/// Checks `check` until it gives `Ok(value)`, and returns the value; panics naming `what`,
/// with the last `Err` (what was seen instead), if that does not happen within `within`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}{}{seen}",
            if seen.is_empty() { "" } else { "; last seen: " }
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `wait_until` for code outside a runtime (starting child processes); blocks the thread.
pub(crate) fn wait_until_blocking(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(POLL);
    }
}

/// Moves this runtime's clock (tokio's, which the gateway reads through its clock module)
/// `by` ahead at once, instead of sleeping through it: timers due by then fire, and the
/// clock runs on from there. Only what reads tokio's clock sees the jump (not the
/// simulator's windows, not Redis, not `governor`). Current-thread runtimes only.
pub(crate) async fn jump_clock(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}
