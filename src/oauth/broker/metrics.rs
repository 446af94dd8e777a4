//! The broker's metrics: installs by status, refreshes by outcome, and the time left on
//! the soonest-expiring access token.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::oauth::{Install, InstallStatus};
use crate::ops::metrics::Metrics;

/// Every `outcome` label of `hubgate_oauth_refreshes_total`.
pub(crate) const REFRESH_OUTCOMES: [&str; 5] =
    ["ok", "lost_race", "invalid_grant", "refused", "unavailable"];

/// Every `status` label of `hubgate_oauth_installs`.
pub(crate) const INSTALL_STATUSES: [&str; 2] = ["active", "needs_reauth"];

#[derive(Debug, Clone)]
pub(crate) struct BrokerMetrics {
    installs: IntGaugeVec,
    refreshes: IntCounterVec,
    soonest_expiry: IntGauge,
    reauth_refusals: prometheus::IntCounter,
}

impl BrokerMetrics {
    /// Registers the broker's series with `metrics`, every label at zero.
    pub(crate) fn register(metrics: &Metrics) -> anyhow::Result<BrokerMetrics> {
        let installs = IntGaugeVec::new(
            Opts::new(
                "hubgate_oauth_installs",
                "OAuth installs the broker holds, by status",
            ),
            &["status"],
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new(
                "hubgate_oauth_refreshes_total",
                "Refreshes of brokered OAuth tokens, by outcome",
            ),
            &["outcome"],
        )?;
        let soonest_expiry = IntGauge::new(
            "hubgate_oauth_token_expiry_seconds",
            "Seconds until the soonest-expiring access token of an active install expires",
        )?;
        let reauth_refusals = prometheus::IntCounter::new(
            "hubgate_oauth_reauth_refusals_total",
            "Brokered calls refused because their install needs to be authorized again",
        )?;
        for status in INSTALL_STATUSES {
            installs.with_label_values(&[status]).set(0);
        }
        for outcome in REFRESH_OUTCOMES {
            refreshes.with_label_values(&[outcome]);
        }
        metrics.register(Box::new(installs.clone()))?;
        metrics.register(Box::new(refreshes.clone()))?;
        metrics.register(Box::new(soonest_expiry.clone()))?;
        metrics.register(Box::new(reauth_refusals.clone()))?;
        Ok(BrokerMetrics {
            installs,
            refreshes,
            soonest_expiry,
            reauth_refusals,
        })
    }

    pub(crate) fn count_refresh(&self, outcome: &'static str) {
        self.refreshes.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn count_reauth_refusal(&self) {
        self.reauth_refusals.inc();
    }

    /// Sets the install gauges from a full list taken at `now` (unix ms).
    pub(crate) fn observe_installs(&self, installs: &[Install], now: i64) {
        let active = installs
            .iter()
            .filter(|i| i.status == InstallStatus::Active)
            .count();
        self.installs
            .with_label_values(&["active"])
            .set(active as i64);
        self.installs
            .with_label_values(&["needs_reauth"])
            .set((installs.len() - active) as i64);
        let soonest = installs
            .iter()
            .filter(|i| i.status == InstallStatus::Active)
            .map(|i| (i.access_expires_at_unix_ms - now) / 1000)
            .min();
        self.soonest_expiry.set(soonest.unwrap_or(0));
    }
}
