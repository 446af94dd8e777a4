//! The gateway's Prometheus metrics, in a registry of its own so that parallel gateways
//! (tests, embedding) never collide.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::config::MetricsConfig;
use crate::hubspot::{Owner, Policy};
use crate::proxy::outcome::Outcome;

/// Every metric hubgate exports; cloned handles share the same series. One `Arc`, since
/// every call clones it.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Calls answered, by how they ended.
    requests_total: FixedLabels<IntCounter>,
    /// Calls accepted whose response has not finished (or been abandoned) yet.
    requests_in_flight: IntGauge,
    /// Upstream answers by status class (2xx, 4xx, ...).
    upstream_responses_total: FixedLabels<IntCounter>,
    /// Time from sending a call upstream until its response headers arrived.
    upstream_duration_seconds: Histogram,
    /// Identity resolutions, by how the owner was found.
    identity_lookups_total: FixedLabels<IntCounter>,
    /// 429s received from the upstream, by owner and HubSpot policy.
    upstream_rate_limited_total: IntCounterVec,
    /// Calls sent again, by why.
    retries_total: FixedLabels<IntCounter>,
    /// Time calls waited for budget before being sent, by priority lane.
    queue_wait_seconds: FixedLabels<Histogram>,
    /// Calls answered from another call's upstream answer, by how they were coalesced.
    coalesced_total: FixedLabels<IntCounter>,
    /// Reads carried by each batch read.
    coalesced_batch_size: Histogram,
    /// Upstream calls coalescing did not have to make.
    upstream_calls_saved_total: IntCounter,
    /// Owner label pairs that have their own `upstream_rate_limited_total` series; counters
    /// never lose a series, so once full every new owner counts under "other".
    rate_limited_owners: Mutex<HashSet<(String, String)>>,
    /// `[metrics] max_owner_series`.
    max_owner_series: usize,
}

/// One metric's series for a known list of label values, each looked up once and then
/// kept: finding a series by its label (`with_label_values`) hashes the label and takes the
/// metric's lock on every call.
struct FixedLabels<M> {
    labels: Vec<&'static str>,
    series: Vec<OnceLock<M>>,
    lookup: Box<dyn Fn(&str) -> M + Send + Sync>,
}

impl<M: Clone> FixedLabels<M> {
    fn new(
        labels: impl IntoIterator<Item = &'static str>,
        lookup: impl Fn(&str) -> M + Send + Sync + 'static,
    ) -> Self {
        let labels: Vec<&'static str> = labels.into_iter().collect();
        let series = labels.iter().map(|_| OnceLock::new()).collect();
        FixedLabels {
            labels,
            series,
            lookup: Box::new(lookup),
        }
    }

    /// Creates every series now, so dashboards and rate() see them from the start.
    fn at_zero(self) -> Self {
        for label in &self.labels {
            self.get(label);
        }
        self
    }

    /// The series of `label`; one outside the known list is looked up each time.
    fn get(&self, label: &str) -> Cow<'_, M> {
        match self.labels.iter().position(|known| *known == label) {
            Some(i) => Cow::Borrowed(self.series[i].get_or_init(|| (self.lookup)(label))),
            None => Cow::Owned((self.lookup)(label)),
        }
    }
}

/// Every `status_class` label of `hubgate_upstream_responses_total`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

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

/// Every `kind` label of `hubgate_coalesced_calls_total`.
pub const COALESCED_KINDS: [&str; 2] = ["batch_read", "identical_get"];

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
        Metrics::with_max_owner_series(MetricsConfig::default().max_owner_series)
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
        let coalesced_total = IntCounterVec::new(
            Opts::new(
                "hubgate_coalesced_calls_total",
                "Calls answered from an upstream call they shared, by kind: batch_read (a \
                 single-record read carried by a batch read) or identical_get (a copy of an \
                 identical GET's answer).",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let coalesced_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "hubgate_coalesced_batch_size",
                "Reads carried by each batch read hubgate sent in their place.",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]),
        )
        .expect("static metric definition");
        let upstream_calls_saved_total = IntCounter::new(
            "hubgate_upstream_calls_saved_total",
            "Upstream calls coalescing did not make: reads in a batch beyond the first, and \
             copies of an identical GET's answer.",
        )
        .expect("static metric definition");
        for collector in [
            Box::new(requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(coalesced_total.clone()),
            Box::new(coalesced_batch_size.clone()),
            Box::new(upstream_calls_saved_total.clone()),
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
        // Known label values start at zero, so dashboards and alerts read 0, not "no data".
        // 429s have no known owner yet: each policy starts under the "other" owner pair.
        for policy in Policy::ALL {
            upstream_rate_limited_total.with_label_values(&[OTHER, OTHER, policy.as_label()]);
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests_total: FixedLabels::new(
                    Outcome::ALL.iter().map(|outcome| outcome.as_label()),
                    move |label| requests_total.with_label_values(&[label]),
                )
                .at_zero(),
                requests_in_flight,
                upstream_responses_total: FixedLabels::new(STATUS_CLASSES, move |label| {
                    upstream_responses_total.with_label_values(&[label])
                })
                .at_zero(),
                upstream_duration_seconds,
                identity_lookups_total: FixedLabels::new(IDENTITY_RESULTS, move |label| {
                    identity_lookups_total.with_label_values(&[label])
                })
                .at_zero(),
                upstream_rate_limited_total,
                retries_total: FixedLabels::new(RETRY_REASONS, move |label| {
                    retries_total.with_label_values(&[label])
                })
                .at_zero(),
                queue_wait_seconds: FixedLabels::new(LANES, move |label| {
                    queue_wait_seconds.with_label_values(&[label])
                })
                .at_zero(),
                coalesced_total: FixedLabels::new(COALESCED_KINDS, move |label| {
                    coalesced_total.with_label_values(&[label])
                })
                .at_zero(),
                coalesced_batch_size,
                upstream_calls_saved_total,
                rate_limited_owners: Mutex::default(),
                max_owner_series: max_owner_series.max(1),
            }),
        }
    }

    /// Adds a collector computed at scrape time (the budget and queue gauges).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        self.inner
            .registry
            .register(collector)
            .map_err(|e| anyhow::anyhow!("cannot register metrics: {e}"))
    }

    /// A call waited `waited` for budget in `lane` (one of [`LANES`]) and was sent.
    pub fn observe_queue_wait(&self, lane: &'static str, waited: Duration) {
        self.inner
            .queue_wait_seconds
            .get(lane)
            .observe(waited.as_secs_f64());
    }

    /// A 429 from the upstream for `owner`, by the policy its body named.
    pub fn count_upstream_rate_limited(&self, owner: &Owner, policy: Policy) {
        let (app, portal) = self.bounded_rate_limited_owner(owner_labels(owner));
        self.inner
            .upstream_rate_limited_total
            .with_label_values(&[app.as_str(), portal.as_str(), policy.as_label()])
            .inc();
    }

    /// The labels `owner` counts under: its own while fewer than `max_owner_series` owners
    /// have a series, "other" after that.
    fn bounded_rate_limited_owner(&self, labels: (String, String)) -> (String, String) {
        let mut owners = self
            .inner
            .rate_limited_owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if owners.contains(&labels) {
            return labels;
        }
        if owners.len() < self.inner.max_owner_series {
            owners.insert(labels.clone());
            return labels;
        }
        (OTHER.into(), OTHER.into())
    }

    /// A call sent again; `reason` is one of [`RETRY_REASONS`].
    pub fn count_retry(&self, reason: &'static str) {
        self.inner.retries_total.get(reason).inc();
    }

    /// A batch read answered `readers` single-record reads.
    pub fn observe_batch(&self, readers: usize) {
        let inner = &self.inner;
        inner
            .coalesced_total
            .get("batch_read")
            .inc_by(readers as u64);
        inner.coalesced_batch_size.observe(readers as f64);
        inner
            .upstream_calls_saved_total
            .inc_by(readers.saturating_sub(1) as u64);
    }

    /// A GET was answered with a copy of an identical GET's answer.
    pub fn count_shared_get(&self) {
        self.inner.coalesced_total.get("identical_get").inc();
        self.inner.upstream_calls_saved_total.inc();
    }

    /// One resolved credential; `result` is one of [`IDENTITY_RESULTS`].
    pub fn count_identity_lookup(&self, result: &'static str) {
        self.inner.identity_lookups_total.get(result).inc();
    }

    /// `hubgate_requests_in_flight`, which the respond layer raises for each accepted call
    /// and lowers when its response ends.
    pub fn requests_in_flight(&self) -> IntGauge {
        self.inner.requests_in_flight.clone()
    }

    pub fn count_request(&self, outcome: Outcome) {
        self.inner.requests_total.get(outcome.as_label()).inc();
    }

    pub fn observe_upstream(&self, status: http::StatusCode, seconds: f64) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.inner.upstream_responses_total.get(class).inc();
        self.inner.upstream_duration_seconds.observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut buffer) {
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
        if let Err(e) = self.inner.registry.register(Box::new(gauge.clone())) {
            tracing::debug!(error = %e, "hubgate_store_degraded already registered");
        }
        gauge
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("max_owner_series", &self.inner.max_owner_series)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
