//! The background refresher: refreshes installs in use at ~75 % of their token's life,
//! so callers never wait on the token endpoint, and idle installs at least daily, so
//! their refresh tokens never go stale; it also keeps the install gauges current.

use std::time::Duration;

use super::{lifetime_ms, Broker, Install, InstallKey, InstallStatus, Need};

/// Share of a token's life after which an install in use is refreshed.
const REFRESH_AT: f64 = 0.75;
/// An install nobody called through this process for this long is idle...
const IDLE_AFTER: Duration = Duration::from_secs(3600);
/// ...and is refreshed only this often.
const IDLE_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Bounds on how often the refresher looks at the installs; at least every few seconds,
/// since other replicas add and refresh installs in a shared store too.
const MIN_TICK: Duration = Duration::from_millis(100);
const MAX_TICK: Duration = Duration::from_secs(5);

impl Broker {
    /// Runs until the gateway stops (the task is aborted).
    pub(crate) async fn run_refresher(self) {
        loop {
            let wait = match self.list().await {
                Ok(installs) => self.sweep(&installs),
                Err(e) => {
                    tracing::warn!(error = %e, "the refresher could not list installs");
                    MAX_TICK
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait.clamp(MIN_TICK, MAX_TICK)) => {}
                () = self.inner.installed.notified() => {}
            }
        }
    }

    /// Starts the refreshes that are due and updates the gauges; answers how long until
    /// the next one is.
    fn sweep(&self, installs: &[Install]) -> Duration {
        let now = self.inner.clock.unix_ms();
        self.inner.metrics.observe_installs(installs, now);
        let mut next = MAX_TICK.as_millis() as i64;
        for install in installs {
            if install.status != InstallStatus::Active {
                continue;
            }
            let due_at = self.due_at(install);
            if due_at <= now {
                let broker = self.clone();
                let key = install.key;
                let version = install.version;
                tokio::spawn(async move {
                    broker.try_refresh_when(key, Need::Due { version }).await;
                });
            } else {
                // A tenth of the time left, so the refresh starts close to its due time.
                next = next.min(((due_at - now) / 10).max(1).min(due_at - now));
            }
        }
        Duration::from_millis(u64::try_from(next).unwrap_or(0))
    }

    /// When `install` should be refreshed: at `REFRESH_AT` of its token's life while in
    /// use, else a day after its last refresh (or when its token is gone).
    fn due_at(&self, install: &Install) -> i64 {
        let ahead = install.updated_at_unix_ms + (lifetime_ms(install) as f64 * REFRESH_AT) as i64;
        if self.used_within(
            install.key,
            IDLE_AFTER.max(Duration::from_millis(
                u64::try_from(2 * lifetime_ms(install)).unwrap_or(0),
            )),
        ) {
            ahead
        } else {
            install.updated_at_unix_ms + IDLE_REFRESH.as_millis() as i64
        }
    }

    fn used_within(&self, key: InstallKey, window: Duration) -> bool {
        let now = self.inner.clock.unix_ms();
        self.inner
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|&at| now - at <= window.as_millis() as i64)
    }
}
