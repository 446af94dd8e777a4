//! Owns the read-only views of budget and queue state: what the budget metrics
//! (`budget_metrics`) export and the JSON of `/admin/budgets` and `/admin/owners/{owner}`.
//!
//! Everything here is computed when someone asks (a scrape, an admin call) from
//! `BudgetStore::snapshot` and `Pacer::queue_depths`, so the request path pays nothing for
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hubgate_engine::BudgetKey;
use serde_json::{json, Value};

use crate::hubspot::Owner;
use crate::pace::pacer::Pacer;
use crate::store::BudgetView;

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

    /// The pacer whose lanes and store the views read.
    pub(crate) fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// `[metrics] max_owner_series`.
    pub(crate) fn max_owner_series(&self) -> usize {
        self.max_owner_series
    }

    /// `[queue] max_wait_ms` as in force now.
    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms.load(Ordering::Relaxed))
    }

    /// Every live budget and the wall time it was read at.
    pub(crate) fn snapshot(&self) -> (Vec<BudgetView>, i64) {
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
                BudgetKey::Global | BudgetKey::Token => Owner::Anonymous,
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
    if *owner == Owner::Anonymous {
        budgets.insert("token".into(), find(views, BudgetKey::Token, unix_ms));
    }
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
    } else {
        out["outside_slots"] = json!(view.outside_slots);
        out["hubspot_used"] = json!(view.hubspot_used);
        out["answer_delay_ms"] = json!(view.answer_delay.as_secs_f64() * 1_000.0);
    }
    out
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
            outside_slots: 0,
            hubspot_used: None,
            answer_delay: Duration::ZERO,
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
}
