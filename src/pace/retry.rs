//! When a call is sent again: which failures are retried for which methods, how long to
//! wait (exponential backoff with full jitter, never less than HubSpot's `Retry-After`),
//! and the per-owner retry budget that keeps a 429 storm from feeding itself.

use std::time::Duration;

use http::{Method, StatusCode};
use rand::Rng;

use crate::config::RetryConfig;
use crate::hubspot::rate_limit::Policy;

/// A per-owner retry budget (tower's, the Finagle design): first tries deposit, retries
/// withdraw, over a 10 s memory.
pub(crate) fn retry_budget(config: &RetryConfig) -> tower::retry::budget::TpsBudget {
    tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        config.budget_min_per_second,
        config.budget_percent as f32 / 100.0,
    )
}

/// How an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The upstream answered with this status; for 429s, the policy its body named.
    Status {
        status: StatusCode,
        policy: Option<Policy>,
    },
    /// No connection could be made: nothing was sent.
    Connect,
    /// The call was sent (perhaps processed) but no answer came: reset, garbage, timeout.
    AfterSend,
}

/// Why a call goes again; the `reason` label of `hubgate_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) reason: &'static str,
    /// Least wait before the retry re-enters the pacer (`Retry-After`, 423's 2 s).
    pub(crate) at_least: Duration,
}

/// Whether this failure is worth another try, for this method. A call HubSpot may have
/// processed is only retried when sending it twice does no harm (RFC 9110 idempotent
/// methods): a POST or PATCH is never sent twice after it may have arrived.
pub(crate) fn plan(
    failure: Failure,
    method: &Method,
    retry_after: Option<Duration>,
    config: &RetryConfig,
) -> Result<Plan, Skip> {
    let retry_after = retry_after.unwrap_or(Duration::ZERO);
    match failure {
        Failure::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            policy,
        } => match policy {
            Some(Policy::Daily) => Err(Skip::Daily),
            // Rejected calls were not processed: any method may go again.
            _ => Ok(Plan {
                reason: "rate_limited",
                at_least: retry_after,
            }),
        },
        Failure::Status {
            status: StatusCode::LOCKED,
            ..
        } => Ok(Plan {
            reason: "locked",
            at_least: retry_after.max(Duration::from_millis(config.locked_delay_ms)),
        }),
        Failure::Status { status, .. } if matches!(status.as_u16(), 502..=504) => {
            if is_idempotent(method) {
                Ok(Plan {
                    reason: "upstream_5xx",
                    at_least: retry_after,
                })
            } else {
                Err(Skip::NotIdempotent)
            }
        }
        Failure::Status { .. } => Err(Skip::NotRetryable),
        Failure::Connect => Ok(Plan {
            reason: "connect",
            at_least: Duration::ZERO,
        }),
        Failure::AfterSend if is_idempotent(method) => Ok(Plan {
            reason: "upstream_failure",
            at_least: Duration::ZERO,
        }),
        Failure::AfterSend => Err(Skip::NotIdempotent),
    }
}

/// Why a failed call was not retried; a retryable one says so in `X-Hubgate-Retry-Skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Not a failure retrying helps with (400, 404, ...): passed through quietly.
    NotRetryable,
    /// HubSpot's daily budget is spent: answered as hubgate's own 429 DAILY.
    Daily,
    NotIdempotent,
    BodyNotReplayable,
    Deadline,
    RetryBudget,
    MaxRetries,
}

impl Skip {
    /// The `X-Hubgate-Retry-Skipped` value, for skips a caller should know about.
    pub(crate) fn header_value(self) -> Option<&'static str> {
        match self {
            Skip::NotRetryable | Skip::Daily => None,
            Skip::NotIdempotent => Some("not-idempotent: the call may have been processed"),
            Skip::BodyNotReplayable => {
                Some("body-too-large: only bodies up to [retry] max_body_bytes are replayed")
            }
            Skip::Deadline => Some("deadline: a retry could not finish before the call's deadline"),
            Skip::RetryBudget => {
                Some("retry-budget: this owner's retries are over their share of recent calls")
            }
            Skip::MaxRetries => Some("max-retries: [retry] max_retries reached"),
        }
    }
}

/// RFC 9110 §9.2.2: sending these twice has the effect of sending them once.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Full-jitter exponential backoff before retry `retry` (1-based): uniform in
/// `[0, min(max, base * 2^(retry-1))]`, so retrying callers spread out instead of colliding.
pub(crate) fn backoff(retry: u32, config: &RetryConfig, rng: &mut impl Rng) -> Duration {
    let exp = retry.saturating_sub(1).min(32);
    let ceiling = config
        .base_delay_ms
        .saturating_mul(1u64 << exp)
        .min(config.max_delay_ms);
    Duration::from_millis(rng.random_range(0..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig::default()
    }

    #[test]
    fn what_is_retried_for_which_method() {
        let c = config();
        let too_many = |policy| Failure::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            policy,
        };
        assert_eq!(
            plan(too_many(Some(Policy::TenSecondly)), &Method::POST, None, &c)
                .unwrap()
                .reason,
            "rate_limited"
        );
        assert_eq!(
            plan(too_many(None), &Method::PATCH, None, &c)
                .unwrap()
                .reason,
            "rate_limited"
        );
        assert_eq!(
            plan(too_many(Some(Policy::Daily)), &Method::GET, None, &c),
            Err(Skip::Daily)
        );
        let locked = Failure::Status {
            status: StatusCode::LOCKED,
            policy: None,
        };
        assert_eq!(
            plan(locked, &Method::POST, None, &c).unwrap().at_least,
            Duration::from_secs(2)
        );
        let bad_gateway = Failure::Status {
            status: StatusCode::BAD_GATEWAY,
            policy: None,
        };
        assert_eq!(
            plan(bad_gateway, &Method::GET, None, &c).unwrap().reason,
            "upstream_5xx"
        );
        assert_eq!(
            plan(bad_gateway, &Method::POST, None, &c),
            Err(Skip::NotIdempotent)
        );
        assert_eq!(
            plan(Failure::Connect, &Method::POST, None, &c)
                .unwrap()
                .reason,
            "connect"
        );
        assert_eq!(
            plan(Failure::AfterSend, &Method::PATCH, None, &c),
            Err(Skip::NotIdempotent)
        );
        assert_eq!(
            plan(Failure::AfterSend, &Method::PUT, None, &c)
                .unwrap()
                .reason,
            "upstream_failure"
        );
        let not_found = Failure::Status {
            status: StatusCode::NOT_FOUND,
            policy: None,
        };
        assert_eq!(
            plan(not_found, &Method::GET, None, &c),
            Err(Skip::NotRetryable)
        );
        let retry_after = Some(Duration::from_secs(7));
        assert_eq!(
            plan(too_many(None), &Method::GET, retry_after, &c)
                .unwrap()
                .at_least,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_an_exponential_cap() {
        let c = config();
        let mut rng = rand::rng();
        for retry in 1..10 {
            let ceiling = Duration::from_millis((100u64 << (retry - 1)).min(10_000));
            let draws: Vec<Duration> = (0..200).map(|_| backoff(retry, &c, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling));
            assert!(
                draws.iter().any(|d| *d < ceiling / 2),
                "jitter spreads retries"
            );
        }
    }
}
