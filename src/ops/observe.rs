//! Owns the read-only views of budget and queue state: what the budget metrics
//! (`budget_metrics`) export and the JSON of `/admin/budgets` and `/admin/owners/{owner}`.
//!
//! Everything here is computed when someone asks (a scrape, an admin call), so the request
//! path pays nothing for it: the metrics from `BudgetStore::snapshot` and
//! `Pacer::queue_depths`; a page of `/admin/budgets` from the keys of every budget and the
//! views of the page's alone; one owner from a few lookups by key.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hubgate_engine::{BudgetKey, Tick};
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

    /// One page of `GET /admin/budgets`: the active owners (a live lane or a live burst
    /// window) with their budgets and queues, then every portal's portal-wide budgets, in
    /// one order (owners by id, then portals by id), at most `limit` entries after
    /// `after`. Only the keys of every budget are read; views are built for the page.
    pub(crate) fn budgets_page(&self, limit: usize, after: Option<Cursor>) -> Value {
        let clock = self.pacer.clock();
        let (now, unix_ms) = (clock.now(), clock.unix_ms());
        let lane_owners = self.pacer.lane_owners();
        let owners_active = lane_owners.len();
        let mut owners: HashSet<Owner, foldhash::fast::RandomState> =
            lane_owners.into_iter().collect();
        let mut portals: HashSet<u64, foldhash::fast::RandomState> = HashSet::default();
        for key in self.pacer.store().keys() {
            match key {
                BudgetKey::Search { portal_id } | BudgetKey::Daily { portal_id } => {
                    portals.insert(portal_id);
                }
                _ => {
                    owners.insert(owner_of(key));
                }
            }
        }
        let owners: Vec<Owner> = match after {
            None => owners.into_iter().collect(),
            Some(Cursor::Owner(after)) => owners
                .into_iter()
                .filter(|o| owner_order(o) > owner_order(&after))
                .collect(),
            Some(Cursor::Portal(_)) => Vec::new(),
        };
        let (owners, more_owners) = first_sorted(owners, limit, owner_order);
        let portals: Vec<u64> = match after {
            Some(Cursor::Portal(after)) => portals.into_iter().filter(|p| *p > after).collect(),
            _ => portals.into_iter().collect(),
        };
        let (portals, more_portals) = first_sorted(portals, limit - owners.len(), |p| *p);
        let next_after =
            (more_owners || more_portals).then(|| match (portals.last(), owners.last()) {
                (Some(portal), _) => Cursor::Portal(*portal).label(),
                (None, Some(owner)) => owner.label(),
                (None, None) => String::new(),
            });
        let owners: Vec<Value> = owners
            .iter()
            .map(|owner| self.owner_view(owner, self.pacer.queue_depth(owner), now, unix_ms))
            .collect();
        let portals: Vec<Value> = portals
            .into_iter()
            .map(|portal_id| {
                json!({
                    "portal_id": portal_id,
                    "search": self.budget(BudgetKey::Search { portal_id }, now, unix_ms),
                    "daily": self.budget(BudgetKey::Daily { portal_id }, now, unix_ms),
                })
            })
            .collect();
        json!({
            "now_unix_ms": unix_ms,
            "owners_active": owners_active,
            "owners": owners,
            "portals": portals,
            "next_after": next_after,
        })
    }

    /// The JSON of `GET /admin/owners/{owner}`; `None` when the owner has neither a lane
    /// nor a live budget of its own. A few lookups by key, whatever the number of owners.
    pub(crate) fn owner_json(&self, owner: &Owner) -> Option<Value> {
        let clock = self.pacer.clock();
        let (now, unix_ms) = (clock.now(), clock.unix_ms());
        let depth = self.pacer.lane_depth(owner);
        let known = depth.is_some()
            || self
                .pacer
                .store()
                .view(&own_key(owner), now, unix_ms)
                .is_some();
        known.then(|| self.owner_view(owner, depth.unwrap_or(0), now, unix_ms))
    }

    fn owner_view(&self, owner: &Owner, depth: usize, now: Tick, unix_ms: i64) -> Value {
        let (app_id, portal_id) = match *owner {
            Owner::App { app_id, portal_id } => (Some(app_id), Some(portal_id)),
            _ => (None, None),
        };
        let mut budgets = serde_json::Map::new();
        budgets.insert("burst".into(), self.budget(own_key(owner), now, unix_ms));
        if *owner == Owner::Anonymous {
            budgets.insert("token".into(), self.budget(BudgetKey::Token, now, unix_ms));
        }
        if let Some(portal_id) = portal_id {
            budgets.insert(
                "search".into(),
                self.budget(BudgetKey::Search { portal_id }, now, unix_ms),
            );
            budgets.insert(
                "daily".into(),
                self.budget(BudgetKey::Daily { portal_id }, now, unix_ms),
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
    fn budget(&self, key: BudgetKey, now: Tick, unix_ms: i64) -> Value {
        self.pacer
            .store()
            .view(&key, now, unix_ms)
            .map_or(Value::Null, |v| budget_json(&v, unix_ms))
    }
}

/// Where a page of `/admin/budgets` starts: after an owner (its label), or after a portal
/// (`portal:<id>`); every owner comes before every portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cursor {
    Owner(Owner),
    Portal(u64),
}

impl Cursor {
    /// An owner label or `portal:<id>`, as a page's `next_after` gives it.
    pub(crate) fn parse(text: &str) -> Option<Cursor> {
        if let Some(id) = text.strip_prefix("portal:") {
            let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            return digits
                .then(|| id.parse().ok())
                .flatten()
                .map(Cursor::Portal);
        }
        Owner::parse(text).map(Cursor::Owner)
    }

    fn label(&self) -> String {
        match self {
            Cursor::Owner(owner) => owner.label(),
            Cursor::Portal(portal_id) => format!("portal:{portal_id}"),
        }
    }
}

/// Owners in page order: apps by (app, portal), then unidentified credentials, then the
/// anonymous owner.
fn owner_order(owner: &Owner) -> (u8, u64, u64) {
    match *owner {
        Owner::App { app_id, portal_id } => (0, app_id, portal_id),
        Owner::Unidentified { credential_hash } => (1, credential_hash, 0),
        Owner::Anonymous => (2, 0, 0),
    }
}

/// The `n` first of `items` by `key`, sorted, and whether any were left out: a partial
/// selection, so a page of a hundred costs linear time in the book, not a full sort.
fn first_sorted<T, K: Ord>(mut items: Vec<T>, n: usize, key: impl Fn(&T) -> K) -> (Vec<T>, bool) {
    let more = items.len() > n;
    if more {
        if n == 0 {
            return (Vec::new(), true);
        }
        items.select_nth_unstable_by_key(n - 1, &key);
        items.truncate(n);
    }
    items.sort_unstable_by_key(key);
    (items, more)
}

/// The owner whose calls spend a burst-like budget.
fn owner_of(key: BudgetKey) -> Owner {
    match key {
        BudgetKey::Burst { app_id, portal_id } => Owner::App { app_id, portal_id },
        BudgetKey::Unidentified { credential_hash } => Owner::Unidentified { credential_hash },
        BudgetKey::Global
        | BudgetKey::Token
        | BudgetKey::Search { .. }
        | BudgetKey::Daily { .. } => Owner::Anonymous,
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
