//! The state every connection shares: configuration, the credential registry, the limiter,
//! the CRM store, the OAuth server, the current faults, the arrival queue and the running outside consumers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{ExemptRule, HapiKeyConfig, SimConfig, TokenConfig};
use crate::crm::Crm;
use crate::faults::Faults;
use crate::limits::Limiter;
use crate::oauth::Registry;
use crate::stats::SimStats;

pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) tokens: HashMap<String, TokenConfig>,
    pub(crate) hapikeys: HashMap<String, HapiKeyConfig>,
    pub(crate) exempt: Vec<ExemptRule>,
    pub(crate) limiter: Limiter,
    pub(crate) crm: Crm,
    pub(crate) oauth: Registry,
    faults: Mutex<Faults>,
    /// Outside consumers by (app, portal); see `outside::set_outside`.
    pub(super) outside: Mutex<HashMap<(u64, u64), tokio::task::JoinHandle<()>>>,
    /// The arrival queue (`Faults::arrival_service_us`): when the last request served left
    /// its head. tokio's mutex hands out turns first come first served, which is the queue.
    arrival_queue: tokio::sync::Mutex<Option<Instant>>,
    /// The runtime the simulator was started on, so consumers started later from any thread
    /// run there and stop with it.
    pub(super) runtime: tokio::runtime::Handle,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, runtime: tokio::runtime::Handle) -> Self {
        let limiter = Limiter::new(
            config.burst_window_ms,
            config.search_limit,
            config.search_window_ms,
            config.daily_reset_utc_offset_ms,
        );
        Shared {
            tokens: config.token_registry(),
            hapikeys: config
                .hapikeys
                .iter()
                .map(|h| (h.key.clone(), h.clone()))
                .collect(),
            exempt: config.exempt.clone(),
            faults: Mutex::new(config.faults.clone()),
            limiter,
            crm: Crm::new(),
            oauth: Registry::new(config.app_registry(), config.oauth.clone()),
            outside: Mutex::new(HashMap::new()),
            arrival_queue: tokio::sync::Mutex::new(None),
            runtime,
            config,
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Waits for this request's turn through the arrival queue and its `service` time at the
    /// head. The caller counts the request while holding the returned guard, so requests are
    /// counted in queue order; `None` (no queue) when `service` is zero.
    pub(crate) async fn arrival_turn(
        &self,
        service: Duration,
    ) -> Option<tokio::sync::MutexGuard<'_, Option<Instant>>> {
        if service.is_zero() {
            return None;
        }
        let queued = Instant::now();
        let mut last_end = self.arrival_queue.lock().await;
        // Service starts when this request queued or when the one ahead left, whichever is
        // later; not at this wake-up, so timer granularity and late wake-ups do not slow
        // the queue below one request per `service`.
        let start = last_end.map_or(queued, |end| end.max(queued));
        let end = start + service;
        tokio::time::sleep_until(end).await;
        *last_end = Some(end);
        Some(last_end)
    }

    /// Clears counters, windows and the CRM store; faults, outside consumers, OAuth installs
    /// and tokens stay.
    pub(crate) fn reset(&self) {
        self.limiter.reset();
        self.crm.reset();
        self.oauth.reset_counters();
    }

    /// What `/__sim/stats` reports.
    pub(crate) fn stats(&self, unix_ms: i64) -> SimStats {
        SimStats {
            oauth: self.oauth.stats(),
            ..self.limiter.stats(unix_ms)
        }
    }

    /// The burst limit of an owner: a token override wins, since HubSpot tiers are per app.
    pub(super) fn burst_limit_for(&self, app_id: u64, portal_id: u64) -> u32 {
        self.tokens
            .values()
            .filter(|t| t.app_id == app_id && t.portal_id == portal_id)
            .find_map(|t| t.burst_limit)
            .unwrap_or(self.config.burst_limit)
    }

    pub(crate) fn stop_outside(&self) {
        let mut map = self.outside.lock().unwrap_or_else(|e| e.into_inner());
        for (_, h) in map.drain() {
            h.abort();
        }
    }
}
