//! The summary of a load run: its JSON (stable field names, listed in the README), the
//! simulator's view of it, and a text table with one column per run, so that runs can be
//! read side by side.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::tally::{Outcome, Tally};
use hubgate_sim::{RateLimitedCounts, SimStats};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub target: String,
    /// `closed` (callers send one call after another) or `open` (sends by the clock).
    pub mode: String,
    pub callers: Option<u64>,
    pub rate_per_second: Option<f64>,
    pub duration_seconds: f64,
    pub tokens: u64,
    pub mix: String,
    pub sent: u64,
    pub answered: u64,
    /// Sent but still unanswered when the run ended; they were cancelled.
    pub unfinished: u64,
    /// Open loop: calls due but not sent, because `--max-in-flight` calls were out or the
    /// generator fell behind the clock.
    pub skipped: u64,
    pub outcomes: Outcomes,
    pub latency_ms: Latency,
    pub throughput_per_second: Throughput,
    /// Present when `--sim` named the simulator behind the target.
    pub simulator: Option<SimView>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    pub ok_2xx: u64,
    pub rate_limited_upstream: u64,
    pub rate_limited_gateway: u64,
    pub client_error_4xx: u64,
    pub server_error_5xx: u64,
    pub other_status: u64,
    pub transport_error: u64,
    pub timeout: u64,
}

/// Of every answered call, from its intended send time; `null` when nothing was answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub sent: f64,
    pub answered: f64,
    pub ok_2xx: f64,
}

/// What the simulator saw of the run (its counters are reset when the run starts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimView {
    /// Calls of this run's owners the simulator accepted (burst and search windows).
    pub accepted: u64,
    /// What the windows let through in the run's span, capped by what was offered: per
    /// owner `min(sent, burst_limit × ⌈duration / window⌉)`, likewise per portal for searches.
    pub allowed: u64,
    /// `accepted / allowed`; `null` when no token could be matched to an owner. The
    /// simulator counts arrivals, so a retried call counts again: with faults injected
    /// this can pass 1.0.
    pub efficiency: Option<f64>,
    /// 429s the simulator answered, whoever received them.
    pub upstream_429s: u64,
    pub upstream_429s_by_policy: RateLimitedCounts,
    pub arrivals: u64,
    pub owners: u64,
    /// Most calls any owner had accepted in one rolling burst window, and its limit.
    pub max_accepted_in_window: u64,
    pub max_arrivals_in_window: u64,
    pub burst_limit: u64,
    pub search_max_accepted_in_window: u64,
    pub search_limit: u64,
    pub fault_errors: u64,
    pub fault_drops: u64,
}

/// What one run offered the simulator's windows: sends per (app, portal) and searches per
/// portal, for the tokens that could be matched to an owner.
#[derive(Debug, Default)]
pub struct Offered {
    pub burst: HashMap<(u64, u64), u64>,
    pub search: HashMap<u64, u64>,
}

/// Windows of `width` that start within `span`: a rolling window lets `limit` through in
/// each, since the first call of a burst from idle goes at once.
fn windows(span: Duration, width_ms: u64) -> u64 {
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    span_ms.div_ceil(width_ms.max(1)).max(1)
}

impl SimView {
    /// `span` is how long the load sent for.
    pub fn new(stats: &SimStats, offered: &Offered, span: Duration) -> SimView {
        let burst_windows = windows(span, stats.limits.burst_window_ms);
        let search_windows = windows(span, stats.limits.search_window_ms);
        let (mut accepted, mut allowed) = (0, 0);
        for owner in &stats.owners {
            if let Some(sent) = offered.burst.get(&(owner.app_id, owner.portal_id)) {
                let outside_accepted = owner.outside - owner.outside_rate_limited;
                accepted += owner.accepted.saturating_sub(outside_accepted);
                allowed += (*sent).min(owner.burst_limit * burst_windows);
            }
        }
        for portal in &stats.search {
            if let Some(sent) = offered.search.get(&portal.portal_id) {
                accepted += portal.accepted;
                allowed += (*sent).min(stats.limits.search_limit * search_windows);
            }
        }
        let matched = !offered.burst.is_empty() || !offered.search.is_empty();
        SimView {
            accepted,
            allowed,
            efficiency: (matched && allowed > 0).then(|| accepted as f64 / allowed as f64),
            upstream_429s: stats.totals.rate_limited.total(),
            upstream_429s_by_policy: stats.totals.rate_limited,
            arrivals: stats.totals.arrivals + stats.totals.search_arrivals,
            owners: stats.owners.len() as u64,
            max_accepted_in_window: stats
                .owners
                .iter()
                .map(|o| o.max_accepted_in_window)
                .max()
                .unwrap_or(0),
            max_arrivals_in_window: stats
                .owners
                .iter()
                .map(|o| o.max_arrivals_in_window)
                .max()
                .unwrap_or(0),
            burst_limit: stats
                .owners
                .iter()
                .map(|o| o.burst_limit)
                .max()
                .unwrap_or(0),
            search_max_accepted_in_window: stats
                .search
                .iter()
                .map(|s| s.max_accepted_in_window)
                .max()
                .unwrap_or(0),
            search_limit: stats.limits.search_limit,
            fault_errors: stats.totals.fault_errors,
            fault_drops: stats.totals.fault_drops,
        }
    }
}

/// How the run was driven, for the summary's header fields.
#[derive(Debug)]
pub struct RunShape {
    pub target: String,
    pub callers: Option<u64>,
    pub rate_per_second: Option<f64>,
    pub tokens: u64,
    pub mix: String,
}

impl Summary {
    pub fn new(
        shape: RunShape,
        tally: &Tally,
        span: Duration,
        simulator: Option<SimView>,
    ) -> Summary {
        use std::sync::atomic::Ordering::Relaxed;
        let sent = tally.sent.load(Relaxed);
        let answered = tally.answered();
        let seconds = span.as_secs_f64().max(1e-9);
        let outcomes = Outcomes {
            ok_2xx: tally.count(Outcome::Ok),
            rate_limited_upstream: tally.count(Outcome::RateLimitedUpstream),
            rate_limited_gateway: tally.count(Outcome::RateLimitedGateway),
            client_error_4xx: tally.count(Outcome::ClientError),
            server_error_5xx: tally.count(Outcome::ServerError),
            other_status: tally.count(Outcome::OtherStatus),
            transport_error: tally.count(Outcome::Transport),
            timeout: tally.count(Outcome::Timeout),
        };
        Summary {
            target: shape.target,
            mode: if shape.rate_per_second.is_some() {
                "open"
            } else {
                "closed"
            }
            .into(),
            callers: shape.callers,
            rate_per_second: shape.rate_per_second,
            duration_seconds: span.as_secs_f64(),
            tokens: shape.tokens,
            mix: shape.mix,
            sent,
            answered,
            unfinished: sent.saturating_sub(answered),
            skipped: tally.skipped.load(Relaxed),
            outcomes,
            latency_ms: latency(&tally.latency()),
            throughput_per_second: Throughput {
                sent: sent as f64 / seconds,
                answered: answered as f64 / seconds,
                ok_2xx: outcomes.ok_2xx as f64 / seconds,
            },
            simulator,
        }
    }

    /// `closed, 60 callers` or `open, 1000/s`.
    pub fn pace(&self) -> String {
        match (self.rate_per_second, self.callers) {
            (Some(rate), _) => format!("open, {rate}/s"),
            (None, Some(callers)) => format!("closed, {callers} callers"),
            (None, None) => self.mode.clone(),
        }
    }
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| Some(us as f64 / 1000.0);
    Latency {
        p50: ms(histogram.value_at_quantile(0.50)),
        p90: ms(histogram.value_at_quantile(0.90)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
        mean: Some(histogram.mean() / 1000.0),
    }
}

/// The summaries as one table, a column per run under its title.
pub fn table(columns: &[(&str, &Summary)]) -> String {
    type Row = (&'static str, fn(&Summary) -> String);
    let rows: [Row; 24] = [
        ("target", |s| s.target.clone()),
        ("pace", Summary::pace),
        ("tokens", |s| s.tokens.to_string()),
        ("duration (s)", |s| format!("{:.1}", s.duration_seconds)),
        ("calls sent", |s| s.sent.to_string()),
        ("  2xx", |s| s.outcomes.ok_2xx.to_string()),
        ("  429 from HubSpot", |s| {
            s.outcomes.rate_limited_upstream.to_string()
        }),
        ("  429 from the gateway", |s| {
            s.outcomes.rate_limited_gateway.to_string()
        }),
        ("  other 4xx", |s| s.outcomes.client_error_4xx.to_string()),
        ("  5xx", |s| s.outcomes.server_error_5xx.to_string()),
        ("  transport errors", |s| {
            (s.outcomes.transport_error + s.outcomes.other_status).to_string()
        }),
        ("  timeouts", |s| s.outcomes.timeout.to_string()),
        ("  unfinished at the end", |s| s.unfinished.to_string()),
        ("not sent (at max in flight, or late)", |s| {
            s.skipped.to_string()
        }),
        ("latency p50 (ms)", |s| fmt_ms(s.latency_ms.p50)),
        ("latency p90 (ms)", |s| fmt_ms(s.latency_ms.p90)),
        ("latency p99 (ms)", |s| fmt_ms(s.latency_ms.p99)),
        ("latency max (ms)", |s| fmt_ms(s.latency_ms.max)),
        ("answers per second", |s| {
            format!("{:.1}", s.throughput_per_second.answered)
        }),
        ("2xx per second", |s| {
            format!("{:.1}", s.throughput_per_second.ok_2xx)
        }),
        ("simulator: accepted / allowed", |s| {
            on_sim(s, |v| format!("{} / {}", v.accepted, v.allowed))
        }),
        ("simulator: efficiency", |s| {
            on_sim(s, |v| {
                v.efficiency
                    .map_or("-".into(), |e| format!("{:.1} %", e * 100.0))
            })
        }),
        ("simulator: 429s it sent", |s| {
            on_sim(s, |v| v.upstream_429s.to_string())
        }),
        ("simulator: most in one window", |s| {
            on_sim(s, |v| {
                format!("{} (limit {})", v.max_accepted_in_window, v.burst_limit)
            })
        }),
    ];
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, value)| columns.iter().map(|(_, s)| value(s)).collect())
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].len())
                .chain([columns[c].0.len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:label_width$}", "");
    for (c, (title, _)) in columns.iter().enumerate() {
        let _ = write!(out, "{title:>width$}", width = widths[c]);
    }
    out.push('\n');
    for ((label, _), row) in rows.iter().zip(&cells) {
        if label.starts_with("simulator") && columns.iter().all(|(_, s)| s.simulator.is_none()) {
            continue;
        }
        let _ = write!(out, "{label:label_width$}");
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(out, "{cell:>width$}", width = widths[c]);
        }
        out.push('\n');
    }
    out
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn on_sim(summary: &Summary, f: impl Fn(&SimView) -> String) -> String {
    summary.simulator.as_ref().map_or("-".into(), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubgate_sim::{OwnerStats, SearchStats, SimLimits};

    fn stats() -> SimStats {
        SimStats {
            limits: SimLimits {
                burst_window_ms: 1000,
                search_limit: 5,
                search_window_ms: 1000,
            },
            owners: vec![
                OwnerStats {
                    app_id: 2001,
                    portal_id: 1001,
                    burst_limit: 20,
                    arrivals: 70,
                    accepted: 58,
                    max_accepted_in_window: 20,
                    ..OwnerStats::default()
                },
                OwnerStats {
                    app_id: 2002,
                    portal_id: 1002,
                    burst_limit: 20,
                    arrivals: 7,
                    accepted: 7,
                    ..OwnerStats::default()
                },
            ],
            search: vec![SearchStats {
                portal_id: 1001,
                accepted: 14,
                ..SearchStats::default()
            }],
            ..SimStats::default()
        }
    }

    #[test]
    fn efficiency_weighs_accepted_against_what_the_windows_allowed() {
        let offered = Offered {
            // Owner 1 wanted more than 3 windows of 20; owner 2 only 7; searches 40 > 3 × 5.
            burst: HashMap::from([((2001, 1001), 500), ((2002, 1002), 7)]),
            search: HashMap::from([(1001, 40)]),
        };
        let view = SimView::new(&stats(), &offered, Duration::from_millis(2_500));
        assert_eq!(view.allowed, 60 + 7 + 15);
        assert_eq!(view.accepted, 58 + 7 + 14);
        let efficiency = view.efficiency.expect("matched owners");
        assert!((efficiency - 79.0 / 82.0).abs() < 1e-9);
        assert_eq!(view.max_accepted_in_window, 20);
        assert_eq!(view.burst_limit, 20);
        let unmatched = SimView::new(&stats(), &Offered::default(), Duration::from_secs(1));
        assert_eq!(unmatched.efficiency, None);
    }

    #[test]
    fn table_puts_runs_side_by_side() {
        let tally = Tally::new(1);
        let shape = || RunShape {
            target: "http://127.0.0.1:1".into(),
            callers: Some(3),
            rate_per_second: None,
            tokens: 1,
            mix: "get=1".into(),
        };
        let plain = Summary::new(shape(), &tally, Duration::from_secs(2), None);
        let text = table(&[("a", &plain), ("b", &plain)]);
        assert!(text.contains("closed, 3 callers"), "{text}");
        assert!(
            !text.contains("simulator"),
            "no simulator rows without one: {text}"
        );
        let mut with_sim = plain.clone();
        with_sim.simulator = Some(SimView::new(
            &stats(),
            &Offered::default(),
            Duration::from_secs(1),
        ));
        let text = table(&[("a", &plain), ("b", &with_sim)]);
        assert!(text.contains("simulator: 429s it sent"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().all(|l| l.len() == lines[0].len()),
            "aligned columns:\n{text}"
        );
    }
}
