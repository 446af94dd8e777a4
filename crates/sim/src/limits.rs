//! HubSpot's rate-limit windows (burst per owner, search per portal, daily per portal) and the
//! counters behind `/__sim/stats`.
//!
//! Windows are exact rolling windows over arrival timestamps, because that is what HubSpot's
//! `TEN_SECONDLY_ROLLING` policy promises and what a gateway must be tested against: a
//! bucketed approximation would hide off-by-one bursts at bucket edges. Every arrival counts,
//! rejected ones included, so a client that keeps hammering stays rejected.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::config::TokenKind;
use super::stats::{
    DailyStats, IntrospectionStats, OwnerStats, SearchStats, SimLimits, SimStats, Totals,
};

const DAY_MS: i64 = 86_400_000;

/// The HubSpot limit that rejected a call (its `policyName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitPolicy {
    TenSecondlyRolling,
    Secondly,
    Daily,
}

impl LimitPolicy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LimitPolicy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            LimitPolicy::Secondly => "SECONDLY",
            LimitPolicy::Daily => "DAILY",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            LimitPolicy::TenSecondlyRolling => "You have reached your ten_secondly_rolling limit.",
            LimitPolicy::Secondly => "You have reached your secondly limit.",
            LimitPolicy::Daily => "You have reached your daily limit.",
        }
    }
}

/// How a request is budgeted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BudgetClass {
    Normal,
    Search,
    Exempt { daily: bool },
}

/// The budget owner a credential resolves to, with its effective limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) app_id: u64,
    pub(crate) portal_id: u64,
    pub(crate) kind: TokenKind,
    pub(crate) burst_limit: u32,
    pub(crate) daily_limit: u64,
}

/// Values for the `X-HubSpot-RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateHeaders {
    pub(crate) max: u32,
    pub(crate) remaining: u64,
    pub(crate) interval_ms: u64,
    /// (limit, remaining) for private apps with a daily limit.
    pub(crate) daily: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) rejected: Option<LimitPolicy>,
    /// None for searches, which HubSpot answers without rate-limit headers.
    pub(crate) headers: Option<RateHeaders>,
}

struct Window {
    width: Duration,
    arrivals: VecDeque<Instant>,
    accepted: VecDeque<Instant>,
}

impl Window {
    fn new(width: Duration) -> Self {
        Window {
            width,
            arrivals: VecDeque::new(),
            accepted: VecDeque::new(),
        }
    }

    /// Drops timestamps outside (now − W, now].
    fn prune(&mut self, now: Instant) {
        let width = self.width;
        let old = |t: &Instant| now.saturating_duration_since(*t) >= width;
        while self.arrivals.front().is_some_and(old) {
            self.arrivals.pop_front();
        }
        while self.accepted.front().is_some_and(old) {
            self.accepted.pop_front();
        }
    }

    /// Records an arrival and returns how many arrivals the window holds, this one included.
    fn arrive(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.arrivals.push_back(now);
        self.arrivals.len() as u64
    }

    fn accept(&mut self, now: Instant) -> u64 {
        self.accepted.push_back(now);
        self.accepted.len() as u64
    }
}

struct OwnerState {
    window: Window,
    stats: OwnerStats,
}

struct SearchState {
    window: Window,
    stats: SearchStats,
}

struct DailyState {
    day: i64,
    used: u64,
    limit: u64,
}

#[derive(Default)]
struct Inner {
    owners: HashMap<(u64, u64), OwnerState>,
    search: HashMap<u64, SearchState>,
    daily: HashMap<u64, DailyState>,
    introspection: IntrospectionStats,
    requests: u64,
    unauthorized: u64,
    fault_errors: u64,
    fault_drops: u64,
}

impl Inner {
    fn owner(
        &mut self,
        app_id: u64,
        portal_id: u64,
        burst_limit: u32,
        width: Duration,
    ) -> &mut OwnerState {
        let o = self
            .owners
            .entry((app_id, portal_id))
            .or_insert_with(|| OwnerState {
                window: Window::new(width),
                stats: OwnerStats {
                    app_id,
                    portal_id,
                    ..OwnerStats::default()
                },
            });
        o.stats.burst_limit = u64::from(burst_limit);
        o
    }
}

/// Every window and counter of one simulator, behind one lock: a request's accounting touches
/// several of them and must see them consistently.
pub(crate) struct Limiter {
    burst_window: Duration,
    search_limit: u32,
    search_window: Duration,
    daily_offset_ms: i64,
    inner: Mutex<Inner>,
}

/// Totals kept outside any owner's window.
pub(crate) enum Counter {
    Request,
    Unauthorized,
    FaultError,
    FaultDrop,
}

/// The introspection endpoints `IntrospectionStats` counts separately.
pub(crate) enum IntrospectionKind {
    OauthAccessToken,
    PrivateAppTokenInfo,
    TokenIntrospect,
}

impl Limiter {
    pub(crate) fn new(
        burst_window_ms: u64,
        search_limit: u32,
        search_window_ms: u64,
        daily_offset_ms: i64,
    ) -> Self {
        Limiter {
            burst_window: Duration::from_millis(burst_window_ms),
            search_limit,
            search_window: Duration::from_millis(search_window_ms),
            daily_offset_ms,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not turn every later request into a panic too.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn day_of(&self, unix_ms: i64) -> i64 {
        unix_ms
            .saturating_add(self.daily_offset_ms)
            .div_euclid(DAY_MS)
    }

    /// Records one request of `caller` and decides whether HubSpot would reject it.
    pub(crate) fn check(
        &self,
        caller: &Caller,
        class: BudgetClass,
        now: Instant,
        unix_ms: i64,
    ) -> Decision {
        let day = self.day_of(unix_ms);
        let burst_window = self.burst_window;
        let search_window = self.search_window;
        let search_limit = u64::from(self.search_limit);
        let mut inner = self.lock();
        let daily_applies = caller.kind == TokenKind::Private
            && caller.daily_limit > 0
            && !matches!(class, BudgetClass::Exempt { daily: true });

        // Daily usage counts every non-exempt arrival, like the burst window does.
        let mut daily_state = None;
        let mut rejected = None;
        if daily_applies {
            let d = inner.daily.entry(caller.portal_id).or_insert(DailyState {
                day,
                used: 0,
                limit: caller.daily_limit,
            });
            if d.day != day {
                d.day = day;
                d.used = 0;
            }
            d.limit = caller.daily_limit;
            d.used += 1;
            if d.used > d.limit {
                rejected = Some(LimitPolicy::Daily);
            }
            daily_state = Some((d.limit, d.limit.saturating_sub(d.used)));
        }

        match class {
            BudgetClass::Normal => {
                let limit = u64::from(caller.burst_limit);
                let o = inner.owner(
                    caller.app_id,
                    caller.portal_id,
                    caller.burst_limit,
                    burst_window,
                );
                let n = o.window.arrive(now);
                o.stats.arrivals += 1;
                o.stats.max_arrivals_in_window = o.stats.max_arrivals_in_window.max(n);
                if rejected.is_none() && n > limit {
                    rejected = Some(LimitPolicy::TenSecondlyRolling);
                }
                match rejected {
                    None => {
                        let a = o.window.accept(now);
                        o.stats.accepted += 1;
                        o.stats.max_accepted_in_window = o.stats.max_accepted_in_window.max(a);
                    }
                    Some(p) => bump(&mut o.stats, p),
                }
                Decision {
                    rejected,
                    headers: Some(RateHeaders {
                        max: caller.burst_limit,
                        remaining: limit.saturating_sub(n),
                        interval_ms: burst_window.as_millis() as u64,
                        daily: daily_state,
                    }),
                }
            }
            BudgetClass::Search => {
                let s = inner
                    .search
                    .entry(caller.portal_id)
                    .or_insert_with(|| SearchState {
                        window: Window::new(search_window),
                        stats: SearchStats {
                            portal_id: caller.portal_id,
                            ..SearchStats::default()
                        },
                    });
                let n = s.window.arrive(now);
                s.stats.arrivals += 1;
                s.stats.max_in_window = s.stats.max_in_window.max(n);
                if rejected.is_none() && n > search_limit {
                    rejected = Some(LimitPolicy::Secondly);
                }
                match rejected {
                    None => {
                        let a = s.window.accept(now);
                        s.stats.accepted += 1;
                        s.stats.max_accepted_in_window = s.stats.max_accepted_in_window.max(a);
                    }
                    Some(p) => {
                        s.stats.rate_limited += 1;
                        let o = inner.owner(
                            caller.app_id,
                            caller.portal_id,
                            caller.burst_limit,
                            burst_window,
                        );
                        bump(&mut o.stats, p);
                    }
                }
                Decision {
                    rejected,
                    headers: None,
                }
            }
            BudgetClass::Exempt { .. } => {
                let limit = u64::from(caller.burst_limit);
                let o = inner.owner(
                    caller.app_id,
                    caller.portal_id,
                    caller.burst_limit,
                    burst_window,
                );
                o.stats.exempt += 1;
                o.window.prune(now);
                let n = o.window.arrivals.len() as u64;
                if let Some(p) = rejected {
                    bump(&mut o.stats, p);
                }
                Decision {
                    rejected,
                    headers: Some(RateHeaders {
                        max: caller.burst_limit,
                        remaining: limit.saturating_sub(n),
                        interval_ms: burst_window.as_millis() as u64,
                        daily: daily_state,
                    }),
                }
            }
        }
    }

    /// `count` arrivals at one instant from traffic that bypasses the gateway (see
    /// `Simulator::set_outside`); one lock for all, so a bursty block lands whole.
    pub(crate) fn outside_arrivals(
        &self,
        app_id: u64,
        portal_id: u64,
        burst_limit: u32,
        count: u32,
        now: Instant,
    ) {
        let width = self.burst_window;
        let mut inner = self.lock();
        let o = inner.owner(app_id, portal_id, burst_limit, width);
        for _ in 0..count {
            let n = o.window.arrive(now);
            o.stats.arrivals += 1;
            o.stats.outside += 1;
            o.stats.max_arrivals_in_window = o.stats.max_arrivals_in_window.max(n);
            if n > u64::from(burst_limit) {
                o.stats.outside_rate_limited += 1;
            } else {
                let a = o.window.accept(now);
                o.stats.accepted += 1;
                o.stats.max_accepted_in_window = o.stats.max_accepted_in_window.max(a);
            }
        }
    }

    pub(crate) fn count(&self, c: Counter) {
        let mut inner = self.lock();
        match c {
            Counter::Request => inner.requests += 1,
            Counter::Unauthorized => inner.unauthorized += 1,
            Counter::FaultError => inner.fault_errors += 1,
            Counter::FaultDrop => inner.fault_drops += 1,
        }
    }

    pub(crate) fn count_introspection(&self, kind: IntrospectionKind, token: &str) {
        let mut inner = self.lock();
        let s = &mut inner.introspection;
        match kind {
            IntrospectionKind::OauthAccessToken => s.oauth_access_token += 1,
            IntrospectionKind::PrivateAppTokenInfo => s.private_app_token_info += 1,
            IntrospectionKind::TokenIntrospect => s.token_introspect += 1,
        }
        s.total += 1;
        drop(inner);
        if !token.is_empty() {
            self.attribute_introspection(token);
        }
    }

    /// Credits one introspection to `token`; separate because some endpoints carry the token
    /// in a body that is only read after the call has been counted.
    pub(crate) fn attribute_introspection(&self, token: &str) {
        let mut inner = self.lock();
        let by_token = &mut inner.introspection.by_token;
        // Bounded so that a flood of junk tokens cannot grow memory without limit.
        if by_token.len() < 10_000 || by_token.contains_key(token) {
            *by_token.entry(token.to_string()).or_insert(0) += 1;
        }
    }

    pub(crate) fn reset(&self) {
        *self.lock() = Inner::default();
    }

    pub(crate) fn stats(&self, unix_ms: i64) -> SimStats {
        let day = self.day_of(unix_ms);
        let inner = self.lock();
        let mut owners: Vec<OwnerStats> = inner.owners.values().map(|o| o.stats.clone()).collect();
        owners.sort_by_key(|o| (o.portal_id, o.app_id));
        let mut search: Vec<SearchStats> = inner.search.values().map(|s| s.stats.clone()).collect();
        search.sort_by_key(|s| s.portal_id);
        let mut daily: Vec<DailyStats> = inner
            .daily
            .iter()
            .map(|(portal, d)| DailyStats {
                portal_id: *portal,
                used: if d.day == day { d.used } else { 0 },
                limit: d.limit,
            })
            .collect();
        daily.sort_by_key(|d| d.portal_id);
        let mut totals = Totals {
            requests: inner.requests,
            unauthorized: inner.unauthorized,
            fault_errors: inner.fault_errors,
            fault_drops: inner.fault_drops,
            ..Totals::default()
        };
        for o in &owners {
            totals.arrivals += o.arrivals;
            totals.accepted += o.accepted;
            totals.outside += o.outside;
            totals.rate_limited.ten_secondly_rolling += o.rate_limited.ten_secondly_rolling;
            totals.rate_limited.secondly += o.rate_limited.secondly;
            totals.rate_limited.daily += o.rate_limited.daily;
        }
        totals.search_arrivals = search.iter().map(|s| s.arrivals).sum();
        SimStats {
            limits: SimLimits {
                burst_window_ms: self.burst_window.as_millis() as u64,
                search_limit: u64::from(self.search_limit),
                search_window_ms: self.search_window.as_millis() as u64,
            },
            owners,
            search,
            daily,
            introspection: inner.introspection.clone(),
            totals,
            oauth: Default::default(),
        }
    }
}

fn bump(stats: &mut OwnerStats, p: LimitPolicy) {
    match p {
        LimitPolicy::TenSecondlyRolling => stats.rate_limited.ten_secondly_rolling += 1,
        LimitPolicy::Secondly => stats.rate_limited.secondly += 1,
        LimitPolicy::Daily => stats.rate_limited.daily += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(limit: u32) -> Caller {
        Caller {
            app_id: 1,
            portal_id: 2,
            kind: TokenKind::Oauth,
            burst_limit: limit,
            daily_limit: 0,
        }
    }

    #[test]
    fn rolling_window_counts_rejections() {
        let l = Limiter::new(1000, 5, 1000, 0);
        let t0 = Instant::now();
        let c = caller(2);
        assert!(l.check(&c, BudgetClass::Normal, t0, 0).rejected.is_none());
        assert!(l.check(&c, BudgetClass::Normal, t0, 0).rejected.is_none());
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(
            l.check(&c, BudgetClass::Normal, t1, 0).rejected,
            Some(LimitPolicy::TenSecondlyRolling)
        );
        // At t0+1000 the first two left the window; the rejected one at t1 still counts.
        let t2 = t0 + Duration::from_millis(1000);
        assert!(l.check(&c, BudgetClass::Normal, t2, 0).rejected.is_none());
        assert!(l.check(&c, BudgetClass::Normal, t2, 0).rejected.is_some());
        let s = l.stats(0);
        assert_eq!(s.owners[0].max_arrivals_in_window, 3);
        assert_eq!(s.owners[0].max_accepted_in_window, 2);
        assert_eq!(s.owners[0].arrivals, 5);
        assert_eq!(s.owners[0].accepted, 3);
        assert_eq!(s.owners[0].burst_limit, 2);
        assert_eq!(
            s.limits,
            SimLimits {
                burst_window_ms: 1000,
                search_limit: 5,
                search_window_ms: 1000
            }
        );
    }

    #[test]
    fn daily_rolls_over() {
        let l = Limiter::new(1000, 5, 1000, 0);
        let mut c = caller(100);
        c.kind = TokenKind::Private;
        c.daily_limit = 1;
        let t = Instant::now();
        assert!(l.check(&c, BudgetClass::Normal, t, 10).rejected.is_none());
        assert_eq!(
            l.check(&c, BudgetClass::Normal, t, 20).rejected,
            Some(LimitPolicy::Daily)
        );
        assert!(l
            .check(&c, BudgetClass::Normal, t, DAY_MS + 1)
            .rejected
            .is_none());
    }
}
