//! The budget and queue gauges (`hubgate_budget_*`, `hubgate_queue_depth`,
//! `hubgate_owners_active`, the daily exhaustion forecast), computed at scrape time from the
//! observer's views, with owner labels bounded by `[metrics] max_owner_series`.

use std::collections::{BTreeMap, BTreeSet};

use hubgate_engine::BudgetKey;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntGauge, Opts};

use super::metrics::{owner_labels, OTHER};
use super::observe::{daily_forecast_seconds, Observer};
use crate::hubspot::Owner;
use crate::store::BudgetView;

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
        BudgetKey::Token => (pair_of_owner(&Owner::Anonymous), "token"),
    }
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
    outside_slots: GaugeVec,
    hubspot_used: GaugeVec,
    answer_delay: GaugeVec,
    owners_active: IntGauge,
    max_wait: Gauge,
}

/// A per-budget gauge, labelled by owner and budget (`burst`, `search`, `daily`).
fn budget_vec(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["app_id", "portal_id", "budget"])
        .expect("static metric definition")
}

fn budget_limit_vec() -> GaugeVec {
    budget_vec(
        "hubgate_budget_limit",
        "Sends a budget allows per rolling window (burst, search) or per day (daily; absent \
         when unlimited). Portal-wide budgets (search, daily) carry no app_id.",
    )
}

fn budget_used_vec() -> GaugeVec {
    budget_vec(
        "hubgate_budget_used",
        "Sends in a budget's current rolling window (burst, search), or today (daily).",
    )
}

fn outside_slots_vec() -> GaugeVec {
    budget_vec(
        "hubgate_budget_outside_slots",
        "Slots of a rolling window kept free for clients hubgate cannot see (their use as \
         learned from HubSpot's count, plus headroom) and for a lower tier than configured.",
    )
}

fn hubspot_used_vec() -> GaugeVec {
    budget_vec(
        "hubgate_budget_hubspot_used",
        "HubSpot's own count of a rolling window (X-HubSpot-RateLimit-Max minus -Remaining) \
         at the latest answer, while recent: every client's calls, not only hubgate's.",
    )
}

fn answer_delay_vec() -> GaugeVec {
    budget_vec(
        "hubgate_budget_answer_delay_seconds",
        "The largest delay between a send and its answer lately: how much longer than the \
         window each slot is held, since HubSpot counted the call before its answer came.",
    )
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
            outside_slots: outside_slots_vec(),
            hubspot_used: hubspot_used_vec(),
            answer_delay: answer_delay_vec(),
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
        descs.extend(self.outside_slots.desc());
        descs.extend(self.hubspot_used.desc());
        descs.extend(self.answer_delay.desc());
        descs.extend(self.owners_active.desc());
        descs.extend(self.max_wait.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let observer = &self.observer;
        let max = observer.max_owner_series();
        let (views, unix_ms) = observer.snapshot();

        let budget_limit = budget_limit_vec();
        let budget_used = budget_used_vec();
        let outside_slots = outside_slots_vec();
        let hubspot_used = hubspot_used_vec();
        let answer_delay = answer_delay_vec();
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
            if view.resets_at_unix_ms.is_none() {
                outside_slots
                    .with_label_values(&labels)
                    .add(view.outside_slots as f64);
                if let Some(count) = view.hubspot_used {
                    hubspot_used.with_label_values(&labels).add(count as f64);
                }
                // A delay cannot be summed: "other" shows the largest among them.
                let delay = answer_delay.with_label_values(&labels);
                delay.set(delay.get().max(view.answer_delay.as_secs_f64()));
            }
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
            .pacer()
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
            .set(i64::try_from(observer.pacer().active_owners()).unwrap_or(i64::MAX));
        self.max_wait.set(observer.max_wait().as_secs_f64());

        let mut families = Vec::new();
        families.extend(budget_limit.collect());
        families.extend(budget_used.collect());
        families.extend(queue_depth.collect());
        families.extend(forecast.collect());
        families.extend(outside_slots.collect());
        families.extend(hubspot_used.collect());
        families.extend(answer_delay.collect());
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
