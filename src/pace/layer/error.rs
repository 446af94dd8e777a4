//! The answers the pacing layer gives itself instead of HubSpot's, and what they say.

use std::time::Duration;

use crate::hubspot::Owner;
use crate::pace::pacer::Refusal;

/// Why the pacing layer answered a call itself.
#[derive(Debug)]
pub(crate) enum PaceError {
    /// The pacer refused the call (queue full, deadline, daily budget, store), for `owner`,
    /// at wall time `unix_ms`.
    Refused {
        owner: Owner,
        refusal: Refusal,
        unix_ms: i64,
    },
    /// The caller is over its `[[callers]] max_rps`.
    CallerCapped {
        caller: String,
        retry_after: Duration,
    },
    /// `X-Hubgate-Deadline-Ms` is not a number of milliseconds; the message says so.
    InvalidDeadline(String),
    /// The request body could not be read before the call was paced.
    UnreadableBody(String),
    /// hubgate is shutting down and the call's answer could not come back before it
    /// stops; nothing was sent.
    ShuttingDown,
}

impl std::error::Error for PaceError {}

impl std::fmt::Display for PaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: &Duration| d.as_millis();
        match self {
            PaceError::CallerCapped { caller, retry_after } => write!(
                f,
                "caller '{caller}' is over its cap of calls per second ([[callers]] max_rps); retry after {} ms or slow down",
                ms(retry_after)
            ),
            PaceError::InvalidDeadline(message) | PaceError::UnreadableBody(message) => {
                f.write_str(message)
            }
            PaceError::ShuttingDown => f.write_str(
                "hubgate is shutting down and this call's answer could not come back before it stops ([server] shutdown_grace_ms, [upstream] response_timeout_ms); nothing was sent to HubSpot, retry it",
            ),
            PaceError::Refused { owner, refusal, .. } if *owner == Owner::UNPROVEN => {
                match refusal {
                    Refusal::QueueFull { drain: wait, .. }
                    | Refusal::DeadlineUnmeetable { estimate: wait, .. }
                    | Refusal::DeadlineExpired {
                        retry_after: wait, ..
                    } => write!(
                        f,
                        "HubSpot has not accepted this call's credential yet (a hapikey before its first success, or a token hubgate could not look up), and calls with unproven credentials share one small budget (owner {owner}) that is spent for about {} ms; check that the credential is valid and retry after that. A credential HubSpot accepts once gets its own budget",
                        ms(wait)
                    ),
                    other => PaceError::Refused {
                        owner: Owner::Anonymous,
                        refusal: other.clone(),
                        unix_ms: 0,
                    }
                    .fmt(f),
                }
            }
            PaceError::Refused { owner, refusal, .. } => match refusal {
                Refusal::QueueFull { depth, drain } => write!(
                    f,
                    "hubgate's queue for owner {owner} is full ({depth} calls waiting, [queue] max_depth_per_owner); retry after {} ms or send fewer calls at once",
                    ms(drain)
                ),
                Refusal::DeadlineUnmeetable { estimate, deadline } => write!(
                    f,
                    "this call would wait about {} ms for owner {owner}'s HubSpot budget, longer than its deadline of {} ms (X-Hubgate-Deadline-Ms or [queue] max_wait_ms); retry after {} ms or allow a longer deadline",
                    ms(estimate),
                    ms(deadline),
                    ms(estimate)
                ),
                Refusal::DeadlineExpired { waited, retry_after } => write!(
                    f,
                    "this call waited {} ms for owner {owner}'s HubSpot budget and its deadline passed (X-Hubgate-Deadline-Ms or [queue] max_wait_ms); retry after {} ms or allow a longer deadline",
                    ms(waited),
                    ms(retry_after)
                ),
                Refusal::DailyExhausted { resets_at_unix_ms } => {
                    let portal = match owner {
                        Owner::App { portal_id, .. } => portal_id.to_string(),
                        _ => "-".into(),
                    };
                    let resets_at = httpdate::fmt_http_date(
                        std::time::UNIX_EPOCH
                            + Duration::from_millis(u64::try_from(*resets_at_unix_ms).unwrap_or(0)),
                    );
                    write!(
                        f,
                        "You have reached your daily limit. hubgate answered for HubSpot: portal {portal} has no daily calls left until {resets_at}; retry after the reset"
                    )
                }
                Refusal::StoreUnavailable => f.write_str(
                    "hubgate cannot use the shared budget store (Redis) for this call's budgets (Redis is unreachable, or fails the budget script on their keys: the log names which) and is configured to refuse calls meanwhile ([store] on_failure = \"fail_closed\"); nothing was sent to HubSpot, retry shortly",
                ),
            },
        }
    }
}
