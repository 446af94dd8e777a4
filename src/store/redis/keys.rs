//! Where each budget lives in Redis: its key (hash-tagged by portal, so one reservation's
//! keys share a Redis Cluster slot), and each replica's share of the limits while Redis is
//! away.

use hubgate_engine::{BudgetKey, DailySpec, Limits, WindowSpec};

/// The Redis key of a budget (window logs get `:blk` appended for their block).
pub(super) fn key_name(prefix: &str, key: &BudgetKey) -> String {
    match *key {
        BudgetKey::Burst { app_id, portal_id } => {
            format!("{prefix}:{{p{portal_id}}}:burst:{app_id}")
        }
        BudgetKey::Search { portal_id } => format!("{prefix}:{{p{portal_id}}}:search"),
        BudgetKey::Daily { portal_id } => format!("{prefix}:{{p{portal_id}}}:daily"),
        BudgetKey::Unidentified { credential_hash } => {
            format!("{prefix}:{{u{credential_hash:016x}}}:burst")
        }
        BudgetKey::Global => format!("{prefix}:{{anon}}:global"),
        BudgetKey::Token => format!("{prefix}:{{anon}}:token"),
    }
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
