//! The live counters of a load run: how each call ended, its latency, and what every token
//! offered, shared by the senders, the progress line and the summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use http::{HeaderMap, StatusCode};

use super::mix::{CallKind, LastCreated};

/// How one call ended, as a caller would count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A 429 HubSpot sent (passed on by the gateway, if any).
    RateLimitedUpstream,
    /// A 429 the gateway answered itself (`HUBGATE_*` policies, hubgate's `DAILY`).
    RateLimitedGateway,
    ClientError,
    ServerError,
    /// 1xx or 3xx: not expected from these calls.
    OtherStatus,
    /// No answer: refused, reset or closed connection.
    Transport,
    /// No answer within the call timeout.
    Timeout,
}

impl Outcome {
    pub const COUNT: usize = 8;

    /// HubSpot stamps every answer, 429s included, with `X-HubSpot-Correlation-Id`; a 429
    /// without it was made by whatever stands in between (hubgate's own refusals carry the
    /// id only in the body).
    pub fn of(status: StatusCode, headers: &HeaderMap) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::Ok,
            429 if headers.contains_key("x-hubspot-correlation-id") => Outcome::RateLimitedUpstream,
            429 => Outcome::RateLimitedGateway,
            400..=499 => Outcome::ClientError,
            500..=599 => Outcome::ServerError,
            _ => Outcome::OtherStatus,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one token was asked to do, for weighing the simulator's `accepted` against it.
#[derive(Debug, Default)]
pub struct TokenTally {
    pub burst_sent: AtomicU64,
    pub search_sent: AtomicU64,
    pub last_created: LastCreated,
}

#[derive(Debug)]
pub struct Tally {
    pub sent: AtomicU64,
    /// Open-loop calls due but not sent (`--max-in-flight` out, or behind the clock).
    pub skipped: AtomicU64,
    pub in_flight: AtomicU64,
    outcomes: [AtomicU64; Outcome::COUNT],
    /// Microseconds from each call's intended send time to its whole answer.
    latency: Mutex<Histogram<u64>>,
    pub tokens: Vec<TokenTally>,
}

/// Longest latency the histogram holds exactly; longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

impl Tally {
    pub fn new(tokens: usize) -> Tally {
        Tally {
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            outcomes: Default::default(),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            ),
            tokens: (0..tokens).map(|_| TokenTally::default()).collect(),
        }
    }

    /// Counts a call as sent and in flight until the returned guard is dropped, which also
    /// covers calls cut off at the end of the run.
    pub fn start(&self, token: usize, kind: CallKind) -> InFlight<'_> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let per_token = &self.tokens[token];
        let offered = if kind.is_search() {
            &per_token.search_sent
        } else {
            &per_token.burst_sent
        };
        offered.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub fn finish(&self, outcome: Outcome, latency: Option<Duration>) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()].load(Ordering::Relaxed)
    }

    pub fn answered(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_hubspot_429s_from_the_gateway_s_own() {
        let mut from_hubspot = HeaderMap::new();
        from_hubspot.insert("x-hubspot-correlation-id", "abc".parse().expect("value"));
        let none = HeaderMap::new();
        let status = |code| StatusCode::from_u16(code).expect("status");
        assert_eq!(
            Outcome::of(status(429), &from_hubspot),
            Outcome::RateLimitedUpstream
        );
        assert_eq!(Outcome::of(status(429), &none), Outcome::RateLimitedGateway);
        assert_eq!(Outcome::of(status(207), &none), Outcome::Ok);
        assert_eq!(
            Outcome::of(status(404), &from_hubspot),
            Outcome::ClientError
        );
        assert_eq!(Outcome::of(status(503), &none), Outcome::ServerError);
        assert_eq!(Outcome::of(status(304), &none), Outcome::OtherStatus);
    }

    #[test]
    fn in_flight_ends_when_the_call_is_dropped() {
        let tally = Tally::new(1);
        let call = tally.start(0, CallKind::Search);
        assert_eq!(tally.in_flight.load(Ordering::Relaxed), 1);
        drop(call);
        assert_eq!(tally.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(tally.sent.load(Ordering::Relaxed), 1);
        assert_eq!(tally.tokens[0].search_sent.load(Ordering::Relaxed), 1);
        tally.finish(Outcome::Ok, Some(Duration::from_millis(2)));
        assert_eq!(tally.answered(), 1);
        let latency = tally.latency();
        assert_eq!(latency.len(), 1);
        assert!(latency.max().abs_diff(2_000) <= 2, "{}", latency.max());
    }
}
