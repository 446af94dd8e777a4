//! `[budgets]`, `[queue]` and `[lanes]`: HubSpot's budgets as hubgate paces them, how
//! calls wait for them, and the share kept for high-priority calls; with HubSpot's list of
//! exempt endpoints as the default data.

use std::time::Duration;

use hubgate_engine::{BudgetKey, DailySpec, Limits, WindowSpec};
use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// HubSpot's budgets as hubgate paces them: defaults for every owner, per-owner
/// overrides, safety margins, and which calls are exempt.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BudgetsConfig {
    /// Calls per (app, portal) per burst window.
    pub burst_limit: u32,
    /// Length of the rolling burst window.
    pub burst_window_ms: u64,
    /// Extra spacing so sends that leave hubgate `burst_window_ms` apart still arrive at
    /// HubSpot a full window apart when network latency varies.
    pub burst_margin_ms: u64,
    /// CRM search calls per portal per search window.
    pub search_limit: u32,
    pub search_window_ms: u64,
    /// The search window's counterpart of `burst_margin_ms`.
    pub search_margin_ms: u64,
    /// Slots left unused in every window, for callers outside hubgate or clock drift.
    pub margin_slots: u32,
    /// Calls per portal per day; 0 = no daily limit.
    pub daily_limit: u64,
    /// Where the daily budget resets at midnight: "UTC" or a fixed offset like "-05:00".
    pub time_zone: String,
    /// Calls without any credential share this many per window (OAuth token calls have
    /// `token_limit` instead).
    pub anonymous_limit: u32,
    pub anonymous_window_ms: u64,
    /// OAuth token calls (`POST /oauth/v1/token`, `/oauth/{YYYY-MM}/token`: refresh and
    /// exchange) share this many per window, which no other call spends.
    pub token_limit: u32,
    pub token_window_ms: u64,
    /// Owners (queues and budgets) unused this long are forgotten.
    pub idle_ttl_ms: u64,
    /// Calls that skip the burst window (and the daily budget when `daily = true`).
    /// Setting this list replaces HubSpot's default list.
    pub exempt: Vec<ExemptRule>,
    /// Per-owner overrides.
    pub owners: Vec<OwnerBudget>,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            burst_limit: 110,
            burst_window_ms: 10_000,
            burst_margin_ms: 0,
            search_limit: 5,
            search_window_ms: 1_000,
            search_margin_ms: 0,
            margin_slots: 0,
            daily_limit: 0,
            time_zone: "UTC".into(),
            anonymous_limit: 10,
            anonymous_window_ms: 1_000,
            token_limit: 10,
            token_window_ms: 1_000,
            idle_ttl_ms: 300_000,
            exempt: default_exemptions(),
            owners: Vec::new(),
        }
    }
}

/// Limits of one owner (`app_id` + `portal_id`) or one portal (`portal_id` alone, for
/// the portal-wide daily budget and time zone).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OwnerBudget {
    #[serde(default)]
    pub app_id: Option<u64>,
    pub portal_id: u64,
    #[serde(default)]
    pub burst_limit: Option<u32>,
    #[serde(default)]
    pub daily_limit: Option<u64>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Priority lanes (`X-Hubgate-Priority: high | normal | low`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LanesConfig {
    /// Share of each window (percent) kept free for `high` calls while they keep coming;
    /// when none has come for a window, the share goes to the others.
    pub high_reserve_percent: u32,
}

impl Default for LanesConfig {
    fn default() -> Self {
        LanesConfig {
            high_reserve_percent: 20,
        }
    }
}

/// How calls wait for budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Longest a call may wait for budget; `X-Hubgate-Deadline-Ms` can only lower it.
    pub max_wait_ms: u64,
    /// Calls waiting per owner beyond which new ones get 503 at once.
    pub max_depth_per_owner: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_wait_ms: 30_000,
            max_depth_per_owner: 10_000,
        }
    }
}

impl BudgetsConfig {
    /// The engine's limits. The config must be valid (`Config::validate`).
    pub fn limits(&self) -> Limits {
        let margin_slots = self.margin_slots;
        let window = |limit: u32, window_ms: u64, margin_ms: u64| {
            WindowSpec::new(limit, Duration::from_millis(window_ms))
                .with_margins(Duration::from_millis(margin_ms), margin_slots)
        };
        // Burst answers carry HubSpot's count, so a burst after a quiet spell can be judged
        // on a fresh one (see `SlidingLog::probe_out_until`); search answers carry none.
        let burst =
            window(self.burst_limit, self.burst_window_ms, self.burst_margin_ms).learning_first();
        let default_offset = parse_utc_offset(&self.time_zone).unwrap_or(0);
        let mut limits = Limits {
            burst,
            search: window(
                self.search_limit,
                self.search_window_ms,
                self.search_margin_ms,
            ),
            unidentified: burst,
            // The anonymous and token windows are about a second long, like search, so they
            // take search's margin.
            global: window(
                self.anonymous_limit,
                self.anonymous_window_ms,
                self.search_margin_ms,
            ),
            token: window(
                self.token_limit,
                self.token_window_ms,
                self.search_margin_ms,
            ),
            daily: DailySpec {
                limit: self.daily_limit,
                utc_offset_secs: default_offset,
            },
            ..Limits::default()
        };
        for owner in &self.owners {
            if let (Some(app_id), Some(burst_limit)) = (owner.app_id, owner.burst_limit) {
                limits.window_overrides.insert(
                    BudgetKey::Burst {
                        app_id,
                        portal_id: owner.portal_id,
                    },
                    window(burst_limit, self.burst_window_ms, self.burst_margin_ms)
                        .learning_first(),
                );
            }
            if owner.daily_limit.is_some() || owner.time_zone.is_some() {
                limits.daily_overrides.insert(
                    owner.portal_id,
                    DailySpec {
                        limit: owner.daily_limit.unwrap_or(self.daily_limit),
                        utc_offset_secs: owner
                            .time_zone
                            .as_deref()
                            .and_then(|tz| parse_utc_offset(tz).ok())
                            .unwrap_or(default_offset),
                    },
                );
            }
        }
        limits
    }

    pub(crate) fn check(&self, problems: &mut Problems) {
        for (key, limit) in [
            ("budgets.burst_limit", self.burst_limit),
            ("budgets.search_limit", self.search_limit),
            ("budgets.anonymous_limit", self.anonymous_limit),
            ("budgets.token_limit", self.token_limit),
        ] {
            if limit == 0 {
                problems.add(
                    key,
                    "must be at least 1: a budget of 0 would hold every call until its deadline",
                );
            } else if self.margin_slots >= limit {
                problems.add(
                    "budgets.margin_slots",
                    format!("must be smaller than {key} ({limit}), or no call could ever be sent"),
                );
            }
        }
        for (key, ms) in [
            ("budgets.burst_window_ms", self.burst_window_ms),
            ("budgets.search_window_ms", self.search_window_ms),
            ("budgets.anonymous_window_ms", self.anonymous_window_ms),
            ("budgets.token_window_ms", self.token_window_ms),
            ("budgets.idle_ttl_ms", self.idle_ttl_ms),
        ] {
            if ms == 0 {
                problems.add(key, "must be greater than 0");
            }
        }
        if let Err(e) = parse_utc_offset(&self.time_zone) {
            problems.add("budgets.time_zone", e);
        }
        for (i, rule) in self.exempt.iter().enumerate() {
            if let Some(problem) = rule.problem() {
                problems.add(format!("budgets.exempt.{i}.path"), problem);
            }
            if let Some(method) = &rule.method {
                if method.parse::<http::Method>().is_err() || method.is_empty() {
                    problems.add(
                        format!("budgets.exempt.{i}.method"),
                        format!("'{method}' is not an HTTP method"),
                    );
                }
            }
        }
        for (i, owner) in self.owners.iter().enumerate() {
            if owner.burst_limit.is_some() && owner.app_id.is_none() {
                problems.add(
                    format!("budgets.owners.{i}.burst_limit"),
                    "a burst limit belongs to an (app, portal): add app_id",
                );
            }
            if owner.burst_limit == Some(0) {
                problems.add(
                    format!("budgets.owners.{i}.burst_limit"),
                    "must be at least 1",
                );
            }
            if let Some(tz) = &owner.time_zone {
                if let Err(e) = parse_utc_offset(tz) {
                    problems.add(format!("budgets.owners.{i}.time_zone"), e);
                }
            }
        }
    }
}

/// "UTC", "Z", or a fixed offset "+05:30" / "-08:00" (optionally prefixed "UTC"), in
/// seconds east of UTC. Named zones (with daylight saving) are not supported yet.
pub fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let fail = || {
        format!("'{text}' is not a time zone hubgate understands; use \"UTC\" or a fixed offset like \"-05:00\" or \"+05:30\"")
    };
    let trimmed = text.trim();
    let rest = trimmed.strip_prefix("UTC").unwrap_or(trimmed);
    if rest.is_empty() || rest == "Z" {
        return Ok(0);
    }
    let (sign, digits) = match rest.as_bytes()[0] {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return Err(fail()),
    };
    let (hours, minutes) = digits.split_once(':').ok_or_else(fail)?;
    let hours: i32 = hours.parse().map_err(|_| fail())?;
    let minutes: i32 = minutes.parse().map_err(|_| fail())?;
    if hours > 14 || minutes >= 60 || hours < 0 || minutes < 0 {
        return Err(fail());
    }
    Ok(sign * (hours * 3600 + minutes * 60))
}

impl LanesConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.high_reserve_percent > 90 {
            problems.add(
                "lanes.high_reserve_percent",
                "must be at most 90: normal and low calls need some of each window",
            );
        }
    }
}

impl QueueConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.max_wait_ms == 0 {
            problems.add("queue.max_wait_ms", "must be greater than 0");
        }
        if self.max_depth_per_owner == 0 {
            problems.add("queue.max_depth_per_owner", "must be at least 1");
        }
    }
}

/// One exemption: calls matching it skip the burst window, and the daily budget too when
/// `daily` is set. Patterns match path segments: `*` one segment, a final `**` the rest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ExemptRule {
    /// Only this method is exempt (e.g. "POST"); absent: every method.
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    /// Also exempt from the portal's daily budget.
    #[serde(default)]
    pub daily: bool,
}

impl ExemptRule {
    fn new(method: Option<&str>, path: &str, daily: bool) -> ExemptRule {
        ExemptRule {
            method: method.map(str::to_string),
            path: path.to_string(),
            daily,
        }
    }

    /// Whether the rule is well formed; the message says how to fix it.
    pub fn problem(&self) -> Option<String> {
        if !self.path.starts_with('/') {
            return Some(format!("path '{}' must start with '/'", self.path));
        }
        let segments: Vec<&str> = self.path[1..].split('/').collect();
        if let Some(i) = segments.iter().position(|s| *s == "**") {
            if i + 1 != segments.len() {
                return Some(format!("'**' may only end the path '{}'", self.path));
            }
        }
        None
    }
}

/// HubSpot's exemptions (`x-hubspot-rate-limit-exemptions` in its API specs; see
/// docs/hubspot.md), the default for `[[budgets.exempt]]`.
pub fn default_exemptions() -> Vec<ExemptRule> {
    vec![
        ExemptRule::new(None, "/crm/v4/associations/*/*/batch/**", false),
        ExemptRule::new(None, "/crm/v3/associations/*/*/batch/**", false),
        ExemptRule::new(None, "/crm/v4/associations/*/*/labels/**", false),
        ExemptRule::new(None, "/crm/v4/associations/definitions/**", false),
        ExemptRule::new(None, "/cms/v3/source-code/**", false),
        ExemptRule::new(None, "/marketing/v3/emails/*/publish", false),
        ExemptRule::new(None, "/marketing/v3/emails/*/unpublish", false),
        ExemptRule::new(Some("POST"), "/automation/v4/flows", false),
        ExemptRule::new(None, "/events/v3/send", true),
        ExemptRule::new(None, "/events/v3/send/batch", true),
        ExemptRule::new(None, "/marketing/v3/transactional/single-email/send", true),
        ExemptRule::new(None, "/marketing/v4/email/single-send", true),
        ExemptRule::new(None, "/webhooks-journal/**", true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_problems_are_reported() {
        assert!(ExemptRule::new(None, "no-slash", false).problem().is_some());
        assert!(ExemptRule::new(None, "/a/**/b", false).problem().is_some());
        assert!(ExemptRule::new(None, "/a/*/b/**", false)
            .problem()
            .is_none());
    }
}
