//! Where each budget lives in Redis: its key (hash-tagged by portal, so one reservation's
//! keys share a Redis Cluster slot), the shard a failure is confined to, and each
//! replica's share of the limits while Redis is away.

use hubgate_engine::{BudgetKey, DailySpec, Limits, WindowSpec};
use redis::cluster_routing::Slot;

/// The hash tag of a budget's keys: its portal, its credential, or `anon`. Every budget
/// one call spends carries the same tag, so a script's keys never cross cluster slots.
pub(super) fn hash_tag(key: &BudgetKey) -> String {
    match *key {
        BudgetKey::Burst { portal_id, .. }
        | BudgetKey::Search { portal_id }
        | BudgetKey::Daily { portal_id } => format!("p{portal_id}"),
        BudgetKey::Unidentified { credential_hash } => format!("u{credential_hash:016x}"),
        BudgetKey::Global | BudgetKey::Token => "anon".into(),
    }
}

/// The Redis key of a budget (window logs get `:blk` appended for their block).
pub(super) fn key_name(prefix: &str, key: &BudgetKey) -> String {
    let tag = hash_tag(key);
    match *key {
        BudgetKey::Burst { app_id, .. } => format!("{prefix}:{{{tag}}}:burst:{app_id}"),
        BudgetKey::Search { .. } => format!("{prefix}:{{{tag}}}:search"),
        BudgetKey::Daily { .. } => format!("{prefix}:{{{tag}}}:daily"),
        BudgetKey::Unidentified { .. } => format!("{prefix}:{{{tag}}}:burst"),
        BudgetKey::Global => format!("{prefix}:{{{tag}}}:global"),
        BudgetKey::Token => format!("{prefix}:{{{tag}}}:token"),
    }
}

/// Which part of Redis a failure is confined to: on one node, all of it (`WHOLE`); in a
/// cluster, one hash slot, as a slot lives on one master and fails over with it.
pub(super) type Shard = Slot;

/// The one shard of a single Redis.
pub(super) const WHOLE: Shard = match Slot::new(0) {
    Some(slot) => slot,
    None => panic!("slot 0 exists"),
};

/// Where a budget lives, and the hash tag that reaches it (the prober's key carries it).
pub(super) fn shard_of(key: &BudgetKey, cluster: bool) -> (Shard, String) {
    if !cluster {
        return (WHOLE, "probe".into());
    }
    let tag = hash_tag(key);
    (Slot::for_key(format!("{{{tag}}}")), tag)
}

/// `keys` without repeats, first occurrence kept: a key listed twice is spent once.
pub(super) fn dedup(keys: &[BudgetKey]) -> Vec<BudgetKey> {
    let mut out: Vec<BudgetKey> = Vec::with_capacity(keys.len());
    for key in keys {
        if !out.contains(key) {
            out.push(*key);
        }
    }
    out
}

/// Each budget's share for one of `replicas`: `limit / replicas`, at least 1 (a limit of
/// 0 stays 0), slot margins divided alike.
pub(super) fn share_limits(limits: &Limits, replicas: u32) -> Limits {
    let n = replicas.max(1);
    let window = |spec: WindowSpec| {
        if spec.limit == 0 {
            return spec;
        }
        let limit = (spec.limit / n).max(1);
        WindowSpec {
            limit,
            margin_slots: (spec.margin_slots / n).min(limit - 1),
            ..spec
        }
    };
    let daily = |spec: DailySpec| DailySpec {
        limit: if spec.limit == 0 {
            0
        } else {
            (spec.limit / u64::from(n)).max(1)
        },
        ..spec
    };
    Limits {
        burst: window(limits.burst),
        search: window(limits.search),
        unidentified: window(limits.unidentified),
        global: window(limits.global),
        token: window(limits.token),
        daily: daily(limits.daily),
        window_overrides: limits
            .window_overrides
            .iter()
            .map(|(k, v)| (*k, window(*v)))
            .collect(),
        daily_overrides: limits
            .daily_overrides
            .iter()
            .map(|(k, v)| (*k, daily(*v)))
            .collect(),
    }
}

/// The longest span of any window budget, microseconds.
pub(super) fn max_span_micros(limits: &Limits) -> u64 {
    [
        limits.burst,
        limits.search,
        limits.unidentified,
        limits.global,
        limits.token,
    ]
    .iter()
    .chain(limits.window_overrides.values())
    .map(WindowSpec::span_micros)
    .max()
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_of_one_portal_share_a_hash_tag() {
        let burst = key_name(
            "hg",
            &BudgetKey::Burst {
                app_id: 1,
                portal_id: 7,
            },
        );
        let daily = key_name("hg", &BudgetKey::Daily { portal_id: 7 });
        assert_eq!(burst, "hg:{p7}:burst:1");
        assert_eq!(daily, "hg:{p7}:daily");
        assert_eq!(
            key_name(
                "hg",
                &BudgetKey::Unidentified {
                    credential_hash: 255
                }
            ),
            "hg:{u00000000000000ff}:burst"
        );
        assert_eq!(key_name("hg", &BudgetKey::Token), "hg:{anon}:token");
    }

    #[test]
    fn a_portals_budgets_fall_in_the_slot_redis_gives_its_tag() {
        // CLUSTER KEYSLOT {p7} on a real cluster answers 3821.
        let burst = BudgetKey::Burst {
            app_id: 1,
            portal_id: 7,
        };
        assert_eq!(
            shard_of(&burst, true).0,
            shard_of(&BudgetKey::Daily { portal_id: 7 }, true).0
        );
        assert_eq!(shard_of(&burst, true).1, "p7");
        assert_eq!(shard_of(&burst, true).0, Slot::new(3821).unwrap());
        assert_eq!(shard_of(&burst, false), (WHOLE, "probe".to_string()));
    }

    #[test]
    fn shares_divide_limits_but_never_below_one() {
        let limits = Limits {
            burst: WindowSpec::new(110, Duration::from_secs(10)).with_margins(Duration::ZERO, 5),
            global: WindowSpec::new(2, Duration::from_secs(1)),
            daily: DailySpec {
                limit: 1_000,
                utc_offset_secs: 0,
            },
            ..Limits::default()
        };
        let share = share_limits(&limits, 3);
        assert_eq!(share.burst.limit, 36);
        assert_eq!(share.burst.capacity(), 35);
        assert_eq!(share.global.limit, 1);
        assert_eq!(share.global.capacity(), 1);
        assert_eq!(share.daily.limit, 333);
        assert_eq!(share_limits(&limits, 1).burst, limits.burst);
    }
}
