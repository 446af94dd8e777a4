//! The gateway's Prometheus metrics, in a registry of its own so that parallel gateways
//! (tests, embedding) never collide.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::identity::Owner;
use crate::outcome::Outcome;
use crate::ratelimit::Policy;

/// Every metric hubgate exports; cloned handles share the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Calls answered, by how they ended.
    requests_total: IntCounterVec,
    /// Calls accepted whose response has not finished (or been abandoned) yet.
    requests_in_flight: IntGauge,
    /// Upstream answers by status class (2xx, 4xx, ...).
    upstream_responses_total: IntCounterVec,
    /// Time from sending a call upstream until its response headers arrived.
    upstream_duration_seconds: Histogram,
    /// Identity resolutions, by how the owner was found.
    identity_lookups_total: IntCounterVec,
    /// 429s received from the upstream, by owner and HubSpot policy.
    upstream_rate_limited_total: IntCounterVec,
    /// Calls sent again, by why.
    retries_total: IntCounterVec,
    /// Time calls waited for budget before being sent, by priority lane.
    queue_wait_seconds: HistogramVec,
    /// Owner label pairs that have their own `upstream_rate_limited_total` series; counters
    /// never lose a series, so once full every new owner counts under "other".
    rate_limited_owners: Arc<Mutex<HashSet<(String, String)>>>,
    /// `[metrics] max_owner_series`.
    max_owner_series: usize,
}

/// Every `lane` label of `hubgate_queue_wait_seconds`.
pub const LANES: [&str; 3] = ["high", "normal", "low"];

/// The label value owners beyond `[metrics] max_owner_series` are summed under.
pub const OTHER: &str = "other";

/// Every `reason` label of `hubgate_retries_total`.
pub const RETRY_REASONS: [&str; 6] = [
    "rate_limited",
    "locked",
    "connect",
    "upstream_5xx",
    "upstream_failure",
    "timeout",
];

/// Every `result` label of `hubgate_identity_lookups_total`.
pub const IDENTITY_RESULTS: [&str; 7] = [
    "static",
    "cached",
    "introspected",
    "invalid",
    "unreachable",
    "hapikey",
    "anonymous",
];

impl Metrics {
    /// Metrics with the default bound of 1000 owner series.
    pub fn new() -> Metrics {
        Metrics::with_max_owner_series(crate::config::MetricsConfig::default().max_owner_series)
    }

    /// Metrics giving at most `max_owner_series` owners series of their own.
    pub fn with_max_owner_series(max_owner_series: usize) -> Metrics {
        let registry = Registry::new();
        let requests_total = IntCounterVec::new(
            Opts::new(
                "hubgate_requests_total",
                "Calls answered by hubgate, by outcome.",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let requests_in_flight = IntGauge::new(
            "hubgate_requests_in_flight",
            "Calls accepted and not finished: waiting, being forwarded, or streaming their \
             response. Returns to 0 when hubgate is idle.",
        )
        .expect("static metric definition");
        let upstream_responses_total = IntCounterVec::new(
            Opts::new(
                "hubgate_upstream_responses_total",
                "Responses received from the upstream, by status class.",
            ),
            &["status_class"],
        )
        .expect("static metric definition");
        let upstream_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "hubgate_upstream_duration_seconds",
                "Time from sending a call upstream until its response headers arrived.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("static metric definition");
        let identity_lookups_total = IntCounterVec::new(
            Opts::new(
                "hubgate_identity_lookups_total",
                "Credentials resolved to a quota owner, by result: static (config), cached or \
                 introspected (owner known), invalid (HubSpot rejected the token, fresh or \
                 cached), unreachable (keyed by credential hash), hapikey, anonymous.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let upstream_rate_limited_total = IntCounterVec::new(
            Opts::new(
                "hubgate_upstream_rate_limited_total",
                "429s received from the upstream, by owner and HubSpot policyName.",
            ),
            &["app_id", "portal_id", "policy"],
        )
        .expect("static metric definition");
        let retries_total = IntCounterVec::new(
            Opts::new(
                "hubgate_retries_total",
                "Calls hubgate sent again, by reason.",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let queue_wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hubgate_queue_wait_seconds",
                "Time calls waited for budget before being sent upstream, by priority lane.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                60.0,
            ]),
            &["lane"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests_in_flight.clone()),
            Box::new(upstream_responses_total.clone()),
            Box::new(upstream_duration_seconds.clone()),
            Box::new(identity_lookups_total.clone()),
            Box::new(upstream_rate_limited_total.clone()),
            Box::new(retries_total.clone()),
            Box::new(queue_wait_seconds.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        // Known label values start at zero so dashboards and rate() see them from the start.
        for outcome in Outcome::ALL {
            requests_total.with_label_values(&[outcome.as_label()]);
        }
        for result in IDENTITY_RESULTS {
            identity_lookups_total.with_label_values(&[result]);
        }
        for reason in RETRY_REASONS {
            retries_total.with_label_values(&[reason]);
        }
        for lane in LANES {
            queue_wait_seconds.with_label_values(&[lane]);
        }
        Metrics {
            registry,
            requests_total,
            requests_in_flight,
            upstream_responses_total,
            upstream_duration_seconds,
            identity_lookups_total,
            upstream_rate_limited_total,
            retries_total,
            queue_wait_seconds,
            rate_limited_owners: Arc::default(),
            max_owner_series: max_owner_series.max(1),
        }
    }

    /// `[metrics] max_owner_series`.
    pub fn max_owner_series(&self) -> usize {
        self.max_owner_series
    }

    /// Adds a collector computed at scrape time (the budget and queue gauges).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.registry
            .register(collector)
            .map_err(|e| anyhow::anyhow!("cannot register metrics: {e}"))
    }

    /// A call waited `waited` for budget in `lane` (one of [`LANES`]) and was sent.
    pub fn observe_queue_wait(&self, lane: &'static str, waited: Duration) {
        self.queue_wait_seconds
            .with_label_values(&[lane])
            .observe(waited.as_secs_f64());
    }

    /// A 429 from the upstream for `owner`, by the policy its body named.
    pub fn count_upstream_rate_limited(&self, owner: &Owner, policy: Policy) {
        let (app, portal) = self.bounded_rate_limited_owner(owner_labels(owner));
        self.upstream_rate_limited_total
            .with_label_values(&[app.as_str(), portal.as_str(), policy.as_label()])
            .inc();
    }

    /// The labels `owner` counts under: its own while fewer than `max_owner_series` owners
    /// have a series, "other" after that.
    fn bounded_rate_limited_owner(&self, labels: (String, String)) -> (String, String) {
        let mut owners = self
            .rate_limited_owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if owners.contains(&labels) {
            return labels;
        }
        if owners.len() < self.max_owner_series {
            owners.insert(labels.clone());
            return labels;
        }
        (OTHER.into(), OTHER.into())
    }

    /// A call sent again; `reason` is one of [`RETRY_REASONS`].
    pub fn count_retry(&self, reason: &'static str) {
        self.retries_total.with_label_values(&[reason]).inc();
    }

    /// One resolved credential; `result` is one of [`IDENTITY_RESULTS`].
    pub fn count_identity_lookup(&self, result: &'static str) {
        self.identity_lookups_total
            .with_label_values(&[result])
            .inc();
    }

    /// `hubgate_requests_in_flight`, which the respond layer raises for each accepted call
    /// and lowers when its response ends.
    pub fn requests_in_flight(&self) -> IntGauge {
        self.requests_in_flight.clone()
    }

    pub fn count_request(&self, outcome: Outcome) {
        self.requests_total
            .with_label_values(&[outcome.as_label()])
            .inc();
    }

    pub fn observe_upstream(&self, status: http::StatusCode, seconds: f64) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.upstream_responses_total
            .with_label_values(&[class])
            .inc();
        self.upstream_duration_seconds.observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        buffer
    }
}

/// `app_id` and `portal_id` label values of an owner; never a token or its hash.
pub fn owner_labels(owner: &Owner) -> (String, String) {
    match owner {
        Owner::App { app_id, portal_id } => (app_id.to_string(), portal_id.to_string()),
        Owner::Unidentified { .. } => ("unidentified".into(), "unidentified".into()),
        Owner::Anonymous => ("anonymous".into(), "anonymous".into()),
    }
}

impl Metrics {
    /// `hubgate_store_degraded`, registered by the stack whatever the store kind (memory
    /// stays 0). Registered on first call; a second stack on the same `Metrics` gets an
    /// unexported gauge rather than an error.
    pub fn store_degraded_gauge(&self) -> prometheus::IntGauge {
        let gauge = prometheus::IntGauge::new(
            "hubgate_store_degraded",
            "1 while the shared budget store (Redis) is unreachable and this replica serves \
             its local share or refuses calls ([store] on_failure), else 0.",
        )
        .expect("static metric definition");
        if let Err(e) = self.registry.register(Box::new(gauge.clone())) {
            tracing::debug!(error = %e, "hubgate_store_degraded already registered");
        }
        gauge
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
