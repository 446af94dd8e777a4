//! The pacing layer over an in-memory upstream service, in paused time: it holds calls to
//! the budget, retries what passes, refuses what cannot be served, and learns from answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode};
use hubgate_engine::{Limits, WindowSpec};
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::config::{default_exemptions, InboundConfig};
use crate::pace::pacer::PacerConfig;
use crate::proxy::body;
use crate::store::MemoryStore;

const OWNER: Owner = Owner::App {
    app_id: 1,
    portal_id: 2,
};
const WINDOW: Duration = Duration::from_secs(1);

fn pace_layer(burst_limit: u32) -> PaceLayer {
    let limits = Limits {
        burst: WindowSpec::new(burst_limit, WINDOW),
        ..Limits::default()
    };
    let pacer = Pacer::new(
        Arc::new(MemoryStore::new(limits)),
        Clock::new(),
        PacerConfig::unshared(100, Duration::from_secs(300)),
    );
    PaceLayer::new(PaceShared {
        pacer,
        last_send: crate::pace::LastSend::default(),
        replay_buffer: crate::pace::ReplayBuffer::new(64 << 20),
        policy: Arc::new(ArcSwap::from_pointee(PacePolicy {
            classifier: Classifier::new(&default_exemptions()),
            max_wait: Duration::from_secs(30),
            search_pause: Duration::from_secs(1),
            retry: RetryConfig::default(),
            callers: Callers::new(&[], &InboundConfig::default()),
            coalesce: Default::default(),
            still_out_every: Duration::from_millis(500),
        })),
        clock: Clock::new(),
        metrics: Metrics::new(),
        batches: Default::default(),
        in_flight: Default::default(),
    })
}

fn call(method: Method) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri("/crm/v3/objects/contacts")
        .body(body::full("{}"))
        .unwrap();
    request.extensions_mut().insert(OWNER);
    request
}

/// One scripted upstream answer: a status and body, or a failure to answer.
type Scripted = Result<(u16, &'static str), fn() -> UpstreamError>;

/// An upstream that gives the scripted answers in turn (the last one from then on) and
/// counts the calls it received.
fn scripted(
    answers: Vec<Scripted>,
) -> (
    impl tower::Service<
            Request<Body>,
            Response = Response<Body>,
            Error = BoxError,
            Future = impl Send + 'static,
        > + Clone
        + Send
        + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let answers = Arc::new(answers);
    let upstream = service_fn(move |_request: Request<Body>| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let answer = answers[n.min(answers.len() - 1)];
        async move {
            match answer {
                Ok((status, body)) => {
                    let mut response = Response::new(body::full(body));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok(response)
                }
                Err(failure) => Err(Box::new(failure()) as BoxError),
            }
        }
    });
    (upstream, calls)
}

fn connect_failure() -> UpstreamError {
    UpstreamError::Connect {
        upstream: "u".into(),
        reason: "refused".into(),
    }
}

fn lost_answer() -> UpstreamError {
    UpstreamError::Failed {
        upstream: "u".into(),
        reason: "reset".into(),
    }
}

const TEN_SECONDLY: &str = r#"{"status":"error","policyName":"TEN_SECONDLY_ROLLING"}"#;

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_within_the_budget_and_the_answer_says_so() {
    let (upstream, calls) = scripted(vec![Ok((429, TEN_SECONDLY)), Ok((200, "{}"))]);
    let paced = pace_layer(10).layer(upstream);
    let response = paced.oneshot(call(Method::POST)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(response.headers()["x-hubgate-retries"], "1");
    assert_eq!(response.headers()["x-hubgate-owner"], "1:2");
}

#[tokio::test(start_paused = true)]
async fn a_failed_connection_is_retried_but_a_lost_post_answer_is_not() {
    let (upstream, calls) = scripted(vec![Err(connect_failure), Ok((200, "{}"))]);
    let response = pace_layer(10)
        .layer(upstream)
        .oneshot(call(Method::POST))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "nothing was sent: safe to retry"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let (upstream, calls) = scripted(vec![Err(lost_answer), Ok((200, "{}"))]);
    let error = pace_layer(10)
        .layer(upstream)
        .oneshot(call(Method::POST))
        .await
        .unwrap_err();
    assert!(error.is::<UpstreamError>(), "{error}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a POST that may have arrived goes once"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_burst_limit_wait_for_the_window_to_slide() {
    let (upstream, calls) = scripted(vec![Ok((200, "{}"))]);
    let paced = pace_layer(2).layer(upstream);
    let started = tokio::time::Instant::now();
    let answers =
        futures_util::future::join_all((0..3).map(|_| paced.clone().oneshot(call(Method::GET))))
            .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let waits: Vec<String> = answers
        .iter()
        .map(|a| {
            a.as_ref().unwrap().headers()["x-hubgate-queue-ms"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(waits, ["0", "0", "1000"]);
    assert_eq!(started.elapsed(), WINDOW);
}

#[tokio::test(start_paused = true)]
async fn a_bad_deadline_header_is_refused_before_anything_is_sent() {
    let (upstream, calls) = scripted(vec![Ok((200, "{}"))]);
    let mut request = call(Method::GET);
    request
        .headers_mut()
        .insert("x-hubgate-deadline-ms", "soon".parse().unwrap());
    let error = pace_layer(2)
        .layer(upstream)
        .oneshot(request)
        .await
        .unwrap_err();
    assert!(
        matches!(error.downcast_ref::<PaceError>(), Some(PaceError::InvalidDeadline(m)) if m.contains("\"soon\"")),
        "{error}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn hubspots_daily_429_is_answered_as_a_spent_daily_budget() {
    let daily = r#"{"status":"error","policyName":"DAILY"}"#;
    let (upstream, calls) = scripted(vec![Ok((429, daily))]);
    let error = pace_layer(10)
        .layer(upstream)
        .oneshot(call(Method::GET))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.downcast_ref::<PaceError>(),
            Some(PaceError::Refused {
                owner: OWNER,
                refusal: Refusal::DailyExhausted { .. },
                ..
            })
        ),
        "{error}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a spent day is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn hubspots_count_in_the_headers_takes_slots_another_client_spent() {
    let seen = Arc::new(Mutex::new(0));
    let counted = seen.clone();
    let upstream = service_fn(move |_request: Request<Body>| {
        *counted.lock().unwrap() += 1;
        async {
            let mut response = Response::new(body::empty());
            // HubSpot counted 9 of 10: one of ours and eight of someone else's.
            response
                .headers_mut()
                .insert("x-hubspot-ratelimit-max", "10".parse().unwrap());
            response
                .headers_mut()
                .insert("x-hubspot-ratelimit-remaining", "1".parse().unwrap());
            Ok::<_, BoxError>(response)
        }
    });
    let paced = pace_layer(10).layer(upstream);
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        paced.clone().oneshot(call(Method::GET)).await.unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), 3);
    assert!(
        started.elapsed() >= WINDOW,
        "the third call waited for the outside use to leave the window ({:?})",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_unanswered_past_its_window_holds_its_slot_until_its_caller_gives_up() {
    // The first call is never answered; the second is answered at once. Each records when
    // it left.
    let sent_at = Arc::new(Mutex::new(Vec::new()));
    let recorded = sent_at.clone();
    let upstream = service_fn(move |_request: Request<Body>| {
        let first = {
            let mut sent = recorded.lock().unwrap();
            sent.push(tokio::time::Instant::now());
            sent.len() == 1
        };
        async move {
            if first {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(Response::new(body::full("{}")))
        }
    });
    let paced = pace_layer(1).layer(upstream);
    let start = tokio::time::Instant::now();
    let given_up = tokio::spawn(paced.clone().oneshot(call(Method::GET)));
    // Its caller gives up 3.2 s in, three windows after its slot would have freed.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    given_up.abort();
    assert!(given_up.await.unwrap_err().is_cancelled());
    let response = paced.oneshot(call(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = sent_at.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    // HubSpot may have counted the first call as late as 3.2 s: the second goes a window
    // after that, not at once (a window after its admission) nor at 4.0 s (a window after
    // the last bound taken while it was on its way).
    let second = sent[1].duration_since(start);
    assert!(second >= Duration::from_millis(4_200), "{second:?}");
    assert!(second < Duration::from_millis(4_300), "{second:?}");
}
