//! Owns the read-only views of budget and queue state: the scrape-time budget metrics
//! (`hubgate_budget_*`, `hubgate_queue_depth`, `hubgate_owners_active`, the daily
//! exhaustion forecast) and the JSON of `/admin/budgets` and `/admin/owners/{owner}`.
//!
//! Everything here is computed when someone asks (a scrape, an admin call) from
//! `BudgetStore::snapshot` and `Pacer::queue_depths`, so the request path pays nothing for
//! it. Owner labels are bounded by `[metrics] max_owner_series`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntGauge, Opts};
use serde_json::{json, Value};

use super::metrics::{owner_labels, OTHER};
use crate::hubspot::Owner;
use crate::pace::pacer::Pacer;
use crate::store::BudgetView;
use hubgate_engine::BudgetKey;

/// Milliseconds in a day: the daily budget's period.
const DAY_MS: i64 = 86_400_000;

/// What the views read: the pacer (lanes, and through it the store and clock) and the
/// settings that shape the output.
#[derive(Debug, Clone)]
pub(crate) struct Observer {
    pacer: Pacer,
    /// `[metrics] max_owner_series`.
    max_owner_series: usize,
    /// `[queue] max_wait_ms`, exported so alerts compare queue waits with it; a reload
    /// sets it.
    max_wait_ms: Arc<AtomicU64>,
}

/// One budget's labels in the metrics: `app_id` is empty for portal-wide budgets (search,
/// daily), which Prometheus stores as no `app_id` label at all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OwnerPair {
    app_id: String,
    portal_id: String,
}

/// Sorts owner pairs so that a portal's series stay together and ids sort as numbers.
fn pair_order(pair: &OwnerPair) -> (u8, u64, u64, String, String) {
    match (pair.portal_id.parse::<u64>(), pair.app_id.parse::<u64>()) {
        (Ok(portal), Ok(app)) => (0, portal, app, String::new(), String::new()),
        (Ok(portal), Err(_)) => (0, portal, 0, pair.app_id.clone(), String::new()),
        _ => (1, 0, 0, pair.portal_id.clone(), pair.app_id.clone()),
    }
}

/// Maps each pair to itself for the first `max` pairs (lowest ids first) and to
/// ("other", "other") for the rest.
fn bound(pairs: impl IntoIterator<Item = OwnerPair>, max: usize) -> BTreeSet<OwnerPair> {
    let mut all: Vec<OwnerPair> = pairs
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    all.sort_by_key(pair_order);
    all.into_iter().take(max).collect()
}

fn other() -> OwnerPair {
    OwnerPair {
        app_id: OTHER.into(),
        portal_id: OTHER.into(),
    }
}

fn pair_of_owner(owner: &Owner) -> OwnerPair {
    let (app_id, portal_id) = owner_labels(owner);
    OwnerPair { app_id, portal_id }
}

/// The labels and budget name of a budget key; never a token or credential hash.
fn labels_of(key: &BudgetKey) -> (OwnerPair, &'static str) {
    let portal = |p: u64| OwnerPair {
        app_id: String::new(),
        portal_id: p.to_string(),
    };
    match *key {
        BudgetKey::Burst { app_id, portal_id } => (
            OwnerPair {
                app_id: app_id.to_string(),
                portal_id: portal_id.to_string(),
            },
            "burst",
        ),
        BudgetKey::Search { portal_id } => (portal(portal_id), "search"),
        BudgetKey::Daily { portal_id } => (portal(portal_id), "daily"),
        BudgetKey::Unidentified { .. } => (
            pair_of_owner(&Owner::Unidentified { credential_hash: 0 }),
            "burst",
        ),
        BudgetKey::Global => (pair_of_owner(&Owner::Anonymous), "burst"),
    }
}

/// Seconds until a daily budget runs out at the burn rate it has had since its last reset
/// (used today / time since local midnight); `None` when unlimited or nothing is spent yet.
/// Zero once exhausted.
pub(crate) fn daily_forecast_seconds(view: &BudgetView, unix_ms: i64) -> Option<f64> {
    let reset = view.resets_at_unix_ms?;
    if view.limit == 0 {
        return None;
    }
    if view.remaining == 0 {
        return Some(0.0);
    }
    if view.used == 0 {
        return None;
    }
    // A second at least, so a burst right after midnight reads as a high rate, not infinity.
    let elapsed_s = ((unix_ms - (reset - DAY_MS)) as f64 / 1000.0).max(1.0);
    let per_second = view.used as f64 / elapsed_s;
    Some(view.remaining as f64 / per_second)
}

impl Observer {
    pub(crate) fn new(pacer: Pacer, max_owner_series: usize, max_wait: Duration) -> Observer {
        Observer {
            pacer,
            max_owner_series: max_owner_series.max(1),
            max_wait_ms: Arc::new(AtomicU64::new(
                u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }

    /// A reload changed `[queue] max_wait_ms`.
    pub(crate) fn set_max_wait(&self, max_wait: Duration) {
        self.max_wait_ms.store(
            u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn snapshot(&self) -> (Vec<BudgetView>, i64) {
        let clock = self.pacer.clock();
        let unix_ms = clock.unix_ms();
        (self.pacer.store().snapshot(clock.now(), unix_ms), unix_ms)
    }

    /// The JSON of `GET /admin/budgets`: every active owner (a live lane or a live burst
    /// window) with its budgets and queue, and every portal's portal-wide budgets.
    pub(crate) fn budgets_json(&self) -> Value {
        let (views, unix_ms) = self.snapshot();
        let depths: BTreeMap<String, (Owner, usize)> = self
            .pacer
            .queue_depths()
            .into_iter()
            .map(|(owner, depth)| (owner.label(), (owner, depth)))
            .collect();
        let mut owners: BTreeMap<String, Owner> =
            depths.iter().map(|(l, (o, _))| (l.clone(), *o)).collect();
        for view in &views {
            let owner = match view.key {
                BudgetKey::Burst { app_id, portal_id } => Owner::App { app_id, portal_id },
                BudgetKey::Unidentified { credential_hash } => {
                    Owner::Unidentified { credential_hash }
                }
                BudgetKey::Global => Owner::Anonymous,
                BudgetKey::Search { .. } | BudgetKey::Daily { .. } => continue,
            };
            owners.insert(owner.label(), owner);
        }
        let owners: Vec<Value> = owners
            .values()
            .map(|owner| {
                let depth = depths.get(&owner.label()).map_or(0, |(_, d)| *d);
                owner_json(owner, depth, &views, unix_ms)
            })
            .collect();
        let portals: BTreeSet<u64> = views
            .iter()
            .filter_map(|v| match v.key {
                BudgetKey::Search { portal_id } | BudgetKey::Daily { portal_id } => Some(portal_id),
                _ => None,
            })
            .collect();
        let portals: Vec<Value> = portals
            .into_iter()
            .map(|portal_id| {
                json!({
                    "portal_id": portal_id,
                    "search": find(&views, BudgetKey::Search { portal_id }, unix_ms),
                    "daily": find(&views, BudgetKey::Daily { portal_id }, unix_ms),
                })
            })
            .collect();
        json!({
            "now_unix_ms": unix_ms,
            "owners_active": self.pacer.active_owners(),
            "owners": owners,
            "portals": portals,
        })
    }

    /// The JSON of `GET /admin/owners/{owner}`; `None` when the owner has neither a lane
    /// nor a live budget of its own.
    pub(crate) fn owner_json(&self, owner: &Owner) -> Option<Value> {
        let (views, unix_ms) = self.snapshot();
        let lane = self
            .pacer
            .queue_depths()
            .into_iter()
            .find(|(o, _)| o == owner);
        let own_key = own_key(owner);
        let known = lane.is_some() || views.iter().any(|v| v.key == own_key);
        known.then(|| owner_json(owner, lane.map_or(0, |(_, d)| d), &views, unix_ms))
    }
}

/// The budget an owner spends on every ordinary call.
fn own_key(owner: &Owner) -> BudgetKey {
    match *owner {
        Owner::App { app_id, portal_id } => BudgetKey::Burst { app_id, portal_id },
        Owner::Unidentified { credential_hash } => BudgetKey::Unidentified { credential_hash },
        Owner::Anonymous => BudgetKey::Global,
    }
}

fn owner_json(owner: &Owner, depth: usize, views: &[BudgetView], unix_ms: i64) -> Value {
    let (app_id, portal_id) = match *owner {
        Owner::App { app_id, portal_id } => (Some(app_id), Some(portal_id)),
        _ => (None, None),
    };
    let mut budgets = serde_json::Map::new();
    budgets.insert("burst".into(), find(views, own_key(owner), unix_ms));
    if let Some(portal_id) = portal_id {
        budgets.insert(
            "search".into(),
            find(views, BudgetKey::Search { portal_id }, unix_ms),
        );
        budgets.insert(
            "daily".into(),
            find(views, BudgetKey::Daily { portal_id }, unix_ms),
        );
    }
    json!({
        "owner": owner.label(),
        "app_id": app_id,
        "portal_id": portal_id,
        "queue_depth": depth,
        "budgets": budgets,
    })
}

/// A budget's JSON, or `null` when it is not live (nothing spent recently: all free).
fn find(views: &[BudgetView], key: BudgetKey, unix_ms: i64) -> Value {
    views
        .iter()
        .find(|v| v.key == key)
        .map_or(Value::Null, |v| budget_json(v, unix_ms))
}

fn budget_json(view: &BudgetView, unix_ms: i64) -> Value {
    let unlimited = view.resets_at_unix_ms.is_some() && view.limit == 0;
    let next_free_unix_ms = view
        .next_free_in
        .map(|d| unix_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    let mut out = json!({
        "limit": (!unlimited).then_some(view.limit),
        "used": view.used,
        "remaining": (!unlimited).then_some(view.remaining),
        "next_free_unix_ms": next_free_unix_ms,
    });
    if let Some(reset) = view.resets_at_unix_ms {
        out["resets_at_unix_ms"] = json!(reset);
        out["exhaustion_forecast_seconds"] = json!(daily_forecast_seconds(view, unix_ms));
    }
    out
}

/// Parses the `{owner}` of `/admin/owners/{owner}`: `app_id:portal_id`, `anonymous` or
/// `unidentified:<16 hex>` (the forms of `X-Hubgate-Owner`).
pub fn parse_owner(text: &str) -> Option<Owner> {
    if text == "anonymous" {
        return Some(Owner::Anonymous);
    }
    let (a, b) = text.split_once(':')?;
    if a == "unidentified" {
        return u64::from_str_radix(b, 16)
            .ok()
            .filter(|_| b.len() == 16)
            .map(|credential_hash| Owner::Unidentified { credential_hash });
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some(Owner::App {
        app_id: a.parse().ok()?,
        portal_id: b.parse().ok()?,
    })
}

/// The scrape-time collector of the budget and queue gauges.
#[derive(Debug)]
pub(crate) struct BudgetCollector {
    observer: Observer,
    /// Templates: their descriptions are what the registry checks; values are built fresh
    /// on every scrape so owners that left take their series with them.
    budget_limit: GaugeVec,
    budget_used: GaugeVec,
    queue_depth: GaugeVec,
    forecast: GaugeVec,
    owners_active: IntGauge,
    max_wait: Gauge,
}

fn budget_limit_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "hubgate_budget_limit",
            "Sends a budget allows per rolling window (burst, search) or per day (daily; absent \
             when unlimited). Portal-wide budgets (search, daily) carry no app_id.",
        ),
        &["app_id", "portal_id", "budget"],
    )
    .expect("static metric definition")
}

fn budget_used_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "hubgate_budget_used",
            "Sends in a budget's current rolling window (burst, search), or today (daily).",
        ),
        &["app_id", "portal_id", "budget"],
    )
    .expect("static metric definition")
}

fn queue_depth_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "hubgate_queue_depth",
            "Calls waiting for budget in an owner's queue.",
        ),
        &["app_id", "portal_id"],
    )
    .expect("static metric definition")
}

fn forecast_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "hubgate_daily_exhaustion_forecast_seconds",
            "Seconds until a portal's daily budget runs out at its average burn rate since the \
             daily reset (used today / time since local midnight); 0 once exhausted.",
        ),
        &["portal_id"],
    )
    .expect("static metric definition")
}

impl BudgetCollector {
    pub(crate) fn new(observer: Observer) -> BudgetCollector {
        BudgetCollector {
            observer,
            budget_limit: budget_limit_vec(),
            budget_used: budget_used_vec(),
            queue_depth: queue_depth_vec(),
            forecast: forecast_vec(),
            owners_active: IntGauge::new(
                "hubgate_owners_active",
                "Quota owners with a live queue (busy, or used within budgets.idle_ttl_ms).",
            )
            .expect("static metric definition"),
            max_wait: Gauge::new(
                "hubgate_queue_max_wait_seconds",
                "The longest a call may wait for budget ([queue] max_wait_ms).",
            )
            .expect("static metric definition"),
        }
    }
}

impl Collector for BudgetCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = Vec::new();
        descs.extend(self.budget_limit.desc());
        descs.extend(self.budget_used.desc());
        descs.extend(self.queue_depth.desc());
        descs.extend(self.forecast.desc());
        descs.extend(self.owners_active.desc());
        descs.extend(self.max_wait.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let observer = &self.observer;
        let max = observer.max_owner_series;
        let (views, unix_ms) = observer.snapshot();

        let budget_limit = budget_limit_vec();
        let budget_used = budget_used_vec();
        let labelled: Vec<(OwnerPair, &'static str, &BudgetView)> = views
            .iter()
            .map(|v| {
                let (pair, budget) = labels_of(&v.key);
                (pair, budget, v)
            })
            .collect();
        let own = bound(labelled.iter().map(|(p, _, _)| p.clone()), max);
        for (pair, budget, view) in &labelled {
            let pair = if own.contains(pair) { pair } else { &other() };
            let labels = [pair.app_id.as_str(), pair.portal_id.as_str(), budget];
            budget_used.with_label_values(&labels).add(view.used as f64);
            let unlimited = view.resets_at_unix_ms.is_some() && view.limit == 0;
            if !unlimited {
                budget_limit
                    .with_label_values(&labels)
                    .add(view.limit as f64);
            }
        }

        // A forecast cannot be summed: "other" shows the soonest exhaustion among them.
        let forecast = forecast_vec();
        let forecasts: Vec<(String, f64)> = labelled
            .iter()
            .filter(|(_, budget, _)| *budget == "daily")
            .filter_map(|(pair, _, view)| {
                daily_forecast_seconds(view, unix_ms).map(|f| {
                    let portal = if own.contains(pair) {
                        pair.portal_id.clone()
                    } else {
                        OTHER.to_string()
                    };
                    (portal, f)
                })
            })
            .collect();
        let mut soonest: BTreeMap<String, f64> = BTreeMap::new();
        for (portal, f) in forecasts {
            let entry = soonest.entry(portal).or_insert(f);
            *entry = entry.min(f);
        }
        for (portal, f) in soonest {
            forecast.with_label_values(&[portal.as_str()]).set(f);
        }

        let queue_depth = queue_depth_vec();
        let depths: Vec<(OwnerPair, usize)> = observer
            .pacer
            .queue_depths()
            .into_iter()
            .map(|(owner, depth)| (pair_of_owner(&owner), depth))
            .collect();
        let own = bound(depths.iter().map(|(p, _)| p.clone()), max);
        for (pair, depth) in &depths {
            let pair = if own.contains(pair) { pair } else { &other() };
            queue_depth
                .with_label_values(&[pair.app_id.as_str(), pair.portal_id.as_str()])
                .add(*depth as f64);
        }

        self.owners_active
            .set(i64::try_from(observer.pacer.active_owners()).unwrap_or(i64::MAX));
        self.max_wait
            .set(observer.max_wait_ms.load(Ordering::Relaxed) as f64 / 1000.0);

        let mut families = Vec::new();
        families.extend(budget_limit.collect());
        families.extend(budget_used.collect());
        families.extend(queue_depth.collect());
        families.extend(forecast.collect());
        families.extend(self.owners_active.collect());
        families.extend(self.max_wait.collect());
        // An empty vector still yields a family with no samples; leave it out so the
        // exposition has no HELP for a metric without data.
        families.retain(|f| !f.get_metric().is_empty());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(limit: u64, used: u64, reset: i64) -> BudgetView {
        BudgetView {
            key: BudgetKey::Daily { portal_id: 1 },
            limit,
            used,
            remaining: limit.saturating_sub(used),
            next_free_in: Some(Duration::ZERO),
            resets_at_unix_ms: Some(reset),
        }
    }

    #[test]
    fn forecast_is_remaining_over_the_average_rate_since_reset() {
        // Six hours into the day, a quarter spent: three quarters left at the same pace
        // take eighteen hours.
        let reset = 2 * DAY_MS;
        let now = DAY_MS + 6 * 3_600_000;
        let f = daily_forecast_seconds(&view(1000, 250, reset), now).unwrap();
        assert!((f - 18.0 * 3600.0).abs() < 1e-6, "{f}");
        assert_eq!(
            daily_forecast_seconds(&view(1000, 1000, reset), now),
            Some(0.0)
        );
        assert_eq!(daily_forecast_seconds(&view(1000, 0, reset), now), None);
        assert_eq!(daily_forecast_seconds(&view(0, 10, reset), now), None);
        // Right at midnight the elapsed time counts as one second, never zero.
        let f = daily_forecast_seconds(&view(100, 10, reset), DAY_MS).unwrap();
        assert!((f - 9.0).abs() < 1e-9, "{f}");
    }

    #[test]
    fn owner_paths_parse_strictly() {
        assert_eq!(
            parse_owner("12:34"),
            Some(Owner::App {
                app_id: 12,
                portal_id: 34
            })
        );
        assert_eq!(parse_owner("anonymous"), Some(Owner::Anonymous));
        assert_eq!(
            parse_owner("unidentified:00000000000000ff"),
            Some(Owner::Unidentified {
                credential_hash: 255
            })
        );
        for bad in [
            "",
            "12",
            "12:",
            ":3",
            "+1:2",
            "1:2:3",
            "a:b",
            "unidentified:ff",
            "1:99999999999999999999",
        ] {
            assert_eq!(parse_owner(bad), None, "{bad}");
        }
    }

    #[test]
    fn bounding_keeps_the_lowest_ids_and_groups_portals() {
        let p = |a: &str, b: &str| OwnerPair {
            app_id: a.into(),
            portal_id: b.into(),
        };
        let own = bound(
            [
                p("9", "2"),
                p("1", "10"),
                p("", "2"),
                p("anonymous", "anonymous"),
                p("3", "2"),
            ],
            3,
        );
        assert_eq!(
            own.into_iter().collect::<Vec<_>>(),
            vec![p("", "2"), p("3", "2"), p("9", "2")]
        );
    }
}
