//! The one place where a failed call becomes the answer its caller sees: each layer fails
//! a call with its own typed error, and this turns it into a status, HubSpot's error JSON
//! (its `category`, and a `policyName` where hubgate stands in for HubSpot's 429), retry
//! hints and the outcome the call is counted under.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::hubspot::error_body::ErrorBody;
use crate::hubspot::TwoCredentials;
use crate::oauth::brokered::BrokerRefusal;
use crate::pace::{PaceError, Refusal};
use crate::proxy::body::{self, Body, CallerBodyError};
use crate::proxy::callers::CallerRefusal;
use crate::proxy::forward::{InvalidPath, UpstreamError};
use crate::proxy::guard::GuardRefusal;
use crate::proxy::outcome::Outcome;

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
const OWNER: HeaderName = HeaderName::from_static("x-hubgate-owner");

/// How a failed call is answered, apart from its message (the error's `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// HubSpot's `category`, so SDK error handlers that switch on it keep working.
    pub(crate) category: &'static str,
    /// HubSpot's `policyName`, for refusals that stand in for a 429.
    pub(crate) policy_name: Option<&'static str>,
    pub(crate) retry: Option<RetryHint>,
    /// The owner a refusal speaks for, echoed as `X-Hubgate-Owner`.
    pub(crate) owner: Option<String>,
    pub(crate) outcome: Outcome,
}

/// When and whether a caller should try again, as `Retry-After`, `retry-after-ms` and
/// `x-should-retry` (which the new `hubspot-sdk` clients obey).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryHint {
    pub(crate) after: Duration,
    pub(crate) should_retry: bool,
}

impl Answer {
    fn caller_problem(status: StatusCode) -> Answer {
        Answer {
            status,
            category: "VALIDATION_ERROR",
            policy_name: None,
            retry: None,
            owner: None,
            outcome: Outcome::BadRequest,
        }
    }

    fn upstream(status: StatusCode, category: &'static str) -> Answer {
        Answer {
            status,
            category,
            policy_name: None,
            retry: None,
            owner: None,
            outcome: Outcome::UpstreamError,
        }
    }

    fn rate_limit(
        status: StatusCode,
        policy: &'static str,
        retry: RetryHint,
        outcome: Outcome,
    ) -> Answer {
        Answer {
            status,
            category: "RATE_LIMITS",
            policy_name: Some(policy),
            retry: Some(retry),
            owner: None,
            outcome,
        }
    }

    /// The answer for `error`, found by its type. An error of a type no layer should fail
    /// with is answered as a gateway failure (and logged by the caller of this).
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> Option<Answer> {
        if let Some(refusal) = error.downcast_ref::<GuardRefusal>() {
            return Some(Answer::caller_problem(match refusal {
                GuardRefusal::ConnectRefused => StatusCode::METHOD_NOT_ALLOWED,
                GuardRefusal::NotAForwardProxy { .. } => StatusCode::MISDIRECTED_REQUEST,
                GuardRefusal::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                GuardRefusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                GuardRefusal::AmbiguousPath(_) => StatusCode::BAD_REQUEST,
            }));
        }
        if let Some(body) = error.downcast_ref::<CallerBodyError>() {
            return Some(Answer::caller_problem(match body {
                CallerBodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                CallerBodyError::Stalled(_) | CallerBodyError::TooSlow(_) => {
                    StatusCode::REQUEST_TIMEOUT
                }
                CallerBodyError::Broken(_) => StatusCode::BAD_REQUEST,
            }));
        }
        if let Some(refusal) = error.downcast_ref::<CallerRefusal>() {
            return Some(match refusal {
                CallerRefusal::Unauthorized { .. } => Answer {
                    category: "HUBGATE_UNAUTHORIZED",
                    outcome: Outcome::Unauthorized,
                    ..Answer::caller_problem(StatusCode::UNAUTHORIZED)
                },
                CallerRefusal::BadHeader(_) => Answer::caller_problem(StatusCode::BAD_REQUEST),
                CallerRefusal::PriorityNotAllowed { .. } => Answer {
                    category: "HUBGATE_FORBIDDEN",
                    ..Answer::caller_problem(StatusCode::FORBIDDEN)
                },
            });
        }
        if let Some(refusal) = error.downcast_ref::<BrokerRefusal>() {
            return Some(match refusal {
                BrokerRefusal::BadHeader(_) => Answer::caller_problem(StatusCode::BAD_REQUEST),
                BrokerRefusal::PortalNotAllowed { .. } => Answer {
                    category: "HUBGATE_FORBIDDEN",
                    ..Answer::caller_problem(StatusCode::FORBIDDEN)
                },
                BrokerRefusal::UnknownInstall { .. } => Answer {
                    category: "HUBGATE_UNKNOWN_INSTALL",
                    ..Answer::caller_problem(StatusCode::NOT_FOUND)
                },
                BrokerRefusal::ReauthRequired { .. } => Answer {
                    category: "HUBGATE_REAUTH_REQUIRED",
                    outcome: Outcome::Unauthorized,
                    ..Answer::caller_problem(StatusCode::UNAUTHORIZED)
                },
                BrokerRefusal::Unavailable(_) => Answer {
                    retry: Some(RetryHint {
                        after: Duration::from_secs(1),
                        should_retry: true,
                    }),
                    ..Answer::upstream(StatusCode::SERVICE_UNAVAILABLE, "HUBGATE_TOKEN_UNAVAILABLE")
                },
            });
        }
        if error.is::<InvalidPath>() || error.is::<TwoCredentials>() {
            return Some(Answer::caller_problem(StatusCode::BAD_REQUEST));
        }
        if let Some(upstream) = error.downcast_ref::<UpstreamError>() {
            return Some(match upstream {
                UpstreamError::Connect { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Failed { .. } => {
                    Answer::upstream(StatusCode::BAD_GATEWAY, "HUBGATE_UPSTREAM_UNAVAILABLE")
                }
                UpstreamError::Timeout { .. } => {
                    Answer::upstream(StatusCode::GATEWAY_TIMEOUT, "HUBGATE_UPSTREAM_TIMEOUT")
                }
            });
        }
        error.downcast_ref::<PaceError>().map(Answer::of_pacing)
    }

    fn of_pacing(error: &PaceError) -> Answer {
        let hint = |after: Duration, should_retry| RetryHint {
            after,
            should_retry,
        };
        match error {
            PaceError::InvalidDeadline(_) | PaceError::UnreadableBody(_) => {
                Answer::caller_problem(StatusCode::BAD_REQUEST)
            }
            // Nothing was sent: another replica, or this one restarted, can take it at once.
            PaceError::ShuttingDown => Answer {
                status: StatusCode::SERVICE_UNAVAILABLE,
                category: "HUBGATE_SHUTTING_DOWN",
                policy_name: None,
                retry: Some(hint(Duration::from_secs(1), true)),
                owner: None,
                outcome: Outcome::RejectedShutdown,
            },
            PaceError::CallerCapped { retry_after, .. } => Answer::rate_limit(
                StatusCode::TOO_MANY_REQUESTS,
                "HUBGATE_CALLER_CAP",
                hint(*retry_after, true),
                Outcome::RejectedCap,
            ),
            PaceError::Refused {
                owner,
                refusal,
                unix_ms,
            } => {
                let mut answer = match refusal {
                    Refusal::QueueFull { drain, .. } => Answer::rate_limit(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "HUBGATE_QUEUE_FULL",
                        hint(*drain, true),
                        Outcome::RejectedQueueFull,
                    ),
                    Refusal::DeadlineUnmeetable { estimate, .. } => Answer::rate_limit(
                        StatusCode::TOO_MANY_REQUESTS,
                        "HUBGATE_DEADLINE",
                        hint(*estimate, true),
                        Outcome::RejectedDeadline,
                    ),
                    Refusal::DeadlineExpired { retry_after, .. } => Answer::rate_limit(
                        StatusCode::TOO_MANY_REQUESTS,
                        "HUBGATE_DEADLINE",
                        hint(*retry_after, true),
                        Outcome::RejectedDeadline,
                    ),
                    // Hours away: an SDK's automatic retry would only spend the caller's time.
                    Refusal::DailyExhausted { resets_at_unix_ms } => Answer::rate_limit(
                        StatusCode::TOO_MANY_REQUESTS,
                        "DAILY",
                        hint(
                            Duration::from_millis(
                                u64::try_from(resets_at_unix_ms - unix_ms).unwrap_or(0),
                            ),
                            false,
                        ),
                        Outcome::RejectedDaily,
                    ),
                    // The store is probed about twice a second; a second is a fair first retry.
                    Refusal::StoreUnavailable => Answer {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        category: "HUBGATE_STORE_UNAVAILABLE",
                        policy_name: None,
                        retry: Some(hint(Duration::from_secs(1), true)),
                        owner: None,
                        outcome: Outcome::RejectedStoreUnavailable,
                    },
                };
                answer.owner = Some(owner.label());
                answer
            }
        }
    }
}

/// The response for a call that failed with `error`; `request_id` becomes HubSpot's
/// `correlationId`.
pub(crate) fn rescue(
    error: &(dyn std::error::Error + Send + Sync + 'static),
    request_id: &str,
) -> Response<Body> {
    let (answer, message) = match Answer::of(error) {
        Some(answer) => (answer, error.to_string()),
        None => {
            tracing::error!(error = %error, "a call failed with an error no layer should produce");
            (
                Answer::upstream(StatusCode::BAD_GATEWAY, "HUBGATE_INTERNAL_ERROR"),
                "hubgate failed to handle this call; the call may or may not have reached HubSpot"
                    .to_string(),
            )
        }
    };
    let json = ErrorBody {
        message: &message,
        category: answer.category,
        correlation_id: request_id,
        policy_name: answer.policy_name,
    }
    .to_json();
    let mut response = Response::new(body::full(json));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if answer.status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    if let Some(hint) = answer.retry {
        let millis = hint.after.as_millis();
        let seconds = hint
            .after
            .as_secs()
            .saturating_add(u64::from(hint.after.subsec_nanos() > 0));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        headers.insert(
            RETRY_AFTER_MS,
            HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
        );
        headers.insert(
            SHOULD_RETRY,
            HeaderValue::from_static(if hint.should_retry { "true" } else { "false" }),
        );
    }
    if let Some(owner) = answer.owner.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(OWNER, owner);
    }
    response.extensions_mut().insert(answer.outcome);
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::hubspot::path::AmbiguousPath;
    use crate::hubspot::Owner;
    use crate::proxy::body::{BodyStalled, BoxError};
    use crate::proxy::callers::KeyProblem;

    const OWNER: Owner = Owner::App {
        app_id: 1,
        portal_id: 2,
    };

    async fn answered(error: BoxError) -> (Response<Body>, serde_json::Value) {
        let response = rescue(&*error, "req-1");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap();
        (Response::from_parts(parts, body::empty()), json)
    }

    fn refused(refusal: Refusal) -> BoxError {
        Box::new(PaceError::Refused {
            owner: OWNER,
            refusal,
            unix_ms: 1_000,
        })
    }

    #[tokio::test]
    async fn every_layers_error_has_its_status_category_and_outcome() {
        let cases: Vec<(BoxError, StatusCode, &str, Outcome)> = vec![
            (
                Box::new(GuardRefusal::ConnectRefused),
                StatusCode::METHOD_NOT_ALLOWED,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(GuardRefusal::NotAForwardProxy { host: "x".into() }),
                StatusCode::MISDIRECTED_REQUEST,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(GuardRefusal::HeadersTooLarge { size: 9, max: 1 }),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(GuardRefusal::BodyTooLarge { max: 1 }),
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(GuardRefusal::AmbiguousPath(AmbiguousPath::Semicolon)),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(
                    crate::hubspot::single_credential(
                        &[(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"))]
                            .into_iter()
                            .collect(),
                        &"/x?hapikey=b".parse().unwrap(),
                    )
                    .unwrap_err(),
                ),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(CallerBodyError::TooLarge { max: 1 }),
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(CallerBodyError::Stalled(BodyStalled {
                    idle: Duration::from_millis(5),
                })),
                StatusCode::REQUEST_TIMEOUT,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(CallerBodyError::Broken("reset".into())),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(CallerRefusal::Unauthorized {
                    header: "X-Hubgate-Key".into(),
                    problem: KeyProblem::Missing,
                }),
                StatusCode::UNAUTHORIZED,
                "HUBGATE_UNAUTHORIZED",
                Outcome::Unauthorized,
            ),
            (
                Box::new(CallerRefusal::BadHeader(
                    "X-Hubgate-Priority must be high".into(),
                )),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(UpstreamError::Connect {
                    upstream: "u".into(),
                    reason: "refused".into(),
                }),
                StatusCode::BAD_GATEWAY,
                "HUBGATE_UPSTREAM_UNAVAILABLE",
                Outcome::UpstreamError,
            ),
            (
                Box::new(UpstreamError::Tls {
                    upstream: "u".into(),
                    reason: "bad cert".into(),
                }),
                StatusCode::BAD_GATEWAY,
                "HUBGATE_UPSTREAM_UNAVAILABLE",
                Outcome::UpstreamError,
            ),
            (
                Box::new(UpstreamError::Failed {
                    upstream: "u".into(),
                    reason: "reset".into(),
                }),
                StatusCode::BAD_GATEWAY,
                "HUBGATE_UPSTREAM_UNAVAILABLE",
                Outcome::UpstreamError,
            ),
            (
                Box::new(UpstreamError::Timeout {
                    upstream: "u".into(),
                    timeout_ms: 5,
                }),
                StatusCode::GATEWAY_TIMEOUT,
                "HUBGATE_UPSTREAM_TIMEOUT",
                Outcome::UpstreamError,
            ),
            (
                Box::new(PaceError::InvalidDeadline(
                    "X-Hubgate-Deadline-Ms must be a whole number".into(),
                )),
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                Outcome::BadRequest,
            ),
            (
                Box::new(PaceError::CallerCapped {
                    caller: "c".into(),
                    retry_after: Duration::from_millis(300),
                }),
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITS",
                Outcome::RejectedCap,
            ),
            (
                refused(Refusal::QueueFull {
                    depth: 3,
                    drain: Duration::from_secs(2),
                }),
                StatusCode::SERVICE_UNAVAILABLE,
                "RATE_LIMITS",
                Outcome::RejectedQueueFull,
            ),
            (
                refused(Refusal::DeadlineUnmeetable {
                    estimate: Duration::from_secs(2),
                    deadline: Duration::from_secs(1),
                }),
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITS",
                Outcome::RejectedDeadline,
            ),
            (
                refused(Refusal::DeadlineExpired {
                    waited: Duration::from_secs(1),
                    retry_after: Duration::ZERO,
                }),
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITS",
                Outcome::RejectedDeadline,
            ),
            (
                refused(Refusal::DailyExhausted {
                    resets_at_unix_ms: 86_400_000,
                }),
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITS",
                Outcome::RejectedDaily,
            ),
            (
                refused(Refusal::StoreUnavailable),
                StatusCode::SERVICE_UNAVAILABLE,
                "HUBGATE_STORE_UNAVAILABLE",
                Outcome::RejectedStoreUnavailable,
            ),
        ];
        for (error, status, category, outcome) in cases {
            let shown = error.to_string();
            let (response, json) = answered(error).await;
            assert_eq!(response.status(), status, "{shown}");
            assert_eq!(json["category"], category, "{shown}");
            assert_eq!(json["status"], "error");
            assert_eq!(
                json["message"],
                shown.as_str(),
                "the message is the error's own"
            );
            assert_eq!(json["correlationId"], "req-1");
            assert_eq!(
                response.extensions().get::<Outcome>(),
                Some(&outcome),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn refusals_that_stand_in_for_a_429_say_when_to_retry_and_for_whom() {
        let (response, json) = answered(refused(Refusal::QueueFull {
            depth: 3,
            drain: Duration::from_millis(1_500),
        }))
        .await;
        let headers = response.headers();
        assert_eq!(json["policyName"], "HUBGATE_QUEUE_FULL");
        assert_eq!(json["errorType"], "RATE_LIMIT");
        assert_eq!(headers["retry-after"], "2", "rounded up to whole seconds");
        assert_eq!(headers["retry-after-ms"], "1500");
        assert_eq!(headers["x-should-retry"], "true");
        assert_eq!(headers["x-hubgate-owner"], "1:2");

        // The daily reset is hours away: an SDK's automatic retry would only waste time.
        let (response, json) = answered(refused(Refusal::DailyExhausted {
            resets_at_unix_ms: 7_201_000,
        }))
        .await;
        assert_eq!(json["policyName"], "DAILY");
        assert_eq!(response.headers()["retry-after"], "7200");
        assert_eq!(response.headers()["x-should-retry"], "false");
        assert!(
            json["message"].as_str().unwrap().contains("portal 2"),
            "{json}"
        );

        let (response, json) = answered(Box::new(GuardRefusal::ConnectRefused)).await;
        assert!(response.headers().contains_key("allow"));
        assert!(json.get("policyName").is_none() && json.get("errorType").is_none());
        assert!(!response.headers().contains_key("retry-after"));
    }

    #[tokio::test]
    async fn an_error_no_layer_should_produce_is_still_one_hubspot_shaped_answer() {
        let (response, json) = answered("something unforeseen".into()).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(json["category"], "HUBGATE_INTERNAL_ERROR");
        assert!(
            !json["message"].as_str().unwrap().contains("unforeseen"),
            "internal error text is not shown to the caller"
        );
    }
}
