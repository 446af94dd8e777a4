//! Each layer of the request path on its own, driven with `ServiceExt::oneshot` over an
//! in-memory upstream service: what it refuses, what it hands on, and what it adds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, ServiceExt};

use super::auth::AuthLayer;
use super::body::{self, Body, BoxError, CallerBodyError};
use super::callers::{AuthenticatedCaller, CallerRefusal, Callers, KeyProblem};
use super::guard::{GuardLayer, GuardRefusal, InboundLimits};
use super::identify::{IdentifyLayer, IdentityResolver};
use super::respond::RespondLayer;
use crate::config::{
    default_exemptions, key_sha256, CallerConfig, IdentityConfig, InboundConfig, RetryConfig,
    StaticCredential, UpstreamConfig, UpstreamTarget,
};
use crate::hubspot::{Classifier, Owner};
use crate::ops::metrics::Metrics;
use crate::pace::PacePolicy;

/// An upstream that answers 200 with the request body it read, and remembers each
/// request's head.
fn echo(
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    service_fn(move |request: Request<Body>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            seen.lock().unwrap().push(parts);
            Ok::<_, BoxError>(Response::new(body::full(bytes)))
        }
    })
}

fn limits() -> InboundLimits {
    InboundLimits {
        upstream_host: "api.hubapi.com".into(),
        max_header_bytes: 1024,
        max_body_bytes: 16,
        body_idle_timeout: Duration::from_secs(5),
        body_read_timeout: Duration::from_secs(60),
    }
}

fn request(method: Method, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body::empty())
        .unwrap()
}

fn refusal<T: std::error::Error + 'static>(error: &BoxError) -> &T {
    error
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("unexpected error: {error}"))
}

#[tokio::test]
async fn the_guard_refuses_tunnels_forward_proxy_use_and_oversized_calls() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let guard = GuardLayer::new(limits()).layer(echo(seen.clone()));
    let error = guard
        .clone()
        .oneshot(request(Method::CONNECT, "api.hubapi.com:443"))
        .await
        .unwrap_err();
    assert!(matches!(
        refusal::<GuardRefusal>(&error),
        GuardRefusal::ConnectRefused
    ));
    let error = guard
        .clone()
        .oneshot(request(
            Method::GET,
            "http://elsewhere.example/crm/v3/objects",
        ))
        .await
        .unwrap_err();
    assert!(matches!(
        refusal::<GuardRefusal>(&error),
        GuardRefusal::NotAForwardProxy { host } if host == "elsewhere.example"
    ));
    let mut big = request(Method::GET, "/crm/v3/objects/contacts");
    big.headers_mut()
        .insert("x-big", "a".repeat(2000).parse().unwrap());
    let error = guard.clone().oneshot(big).await.unwrap_err();
    assert!(matches!(
        refusal::<GuardRefusal>(&error),
        GuardRefusal::HeadersTooLarge { max: 1024, .. }
    ));
    let mut declared = request(Method::POST, "/crm/v3/objects/contacts");
    declared
        .headers_mut()
        .insert("content-length", "17".parse().unwrap());
    let error = guard.clone().oneshot(declared).await.unwrap_err();
    assert!(matches!(
        refusal::<GuardRefusal>(&error),
        GuardRefusal::BodyTooLarge { max: 16 }
    ));
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing refused reached upstream"
    );

    // An absolute-form target naming the upstream itself is accepted, and a body without a
    // declared length is counted while it streams.
    let named = guard
        .clone()
        .oneshot(request(Method::GET, "http://api.hubapi.com/crm/v3/objects"))
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::OK);
    let streamed = Request::post("/files/v3/files")
        .body(body::stream(http_body_util::StreamBody::new(
            futures_util::stream::iter((0..3).map(|_| {
                Ok::<_, BoxError>(http_body::Frame::data(bytes::Bytes::from_static(
                    b"0123456789",
                )))
            })),
        )))
        .unwrap();
    let error = guard.oneshot(streamed).await.unwrap_err();
    assert!(matches!(
        CallerBodyError::found_in(error.as_ref()),
        Some(CallerBodyError::TooLarge { max: 16 })
    ));
}

#[tokio::test]
async fn an_h2_request_naming_any_authority_is_not_taken_for_forward_proxy_use() {
    let guard = GuardLayer::new(limits()).layer(echo(Arc::default()));
    let mut h2 = request(Method::GET, "https://elsewhere.example/crm/v3/objects");
    *h2.version_mut() = Version::HTTP_2;
    assert_eq!(guard.oneshot(h2).await.unwrap().status(), StatusCode::OK);
}

fn callers_requiring_a_key() -> Arc<ArcSwap<PacePolicy>> {
    let callers = [CallerConfig {
        name: "sync".into(),
        weight: 1,
        max_rps: None,
        key_sha256: Some(key_sha256("secret-key")),
        priorities: crate::config::default_priorities(),
        portals: Vec::new(),
    }];
    let inbound = InboundConfig {
        require_caller_key: true,
        ..InboundConfig::default()
    };
    Arc::new(ArcSwap::from_pointee(PacePolicy {
        classifier: Classifier::new(&default_exemptions()),
        max_wait: Duration::from_secs(30),
        search_pause: Duration::from_secs(1),
        retry: RetryConfig::default(),
        callers: Callers::new(&callers, &inbound),
        coalesce: Default::default(),
        still_out_every: Duration::from_millis(500),
    }))
}

#[tokio::test]
async fn auth_names_the_caller_by_its_key_and_keeps_the_key_from_hubspot() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let caller_seen = Arc::new(Mutex::new(None));
    let recorded = caller_seen.clone();
    let inner = echo(seen.clone());
    let upstream = service_fn(move |request: Request<Body>| {
        *recorded.lock().unwrap() = request.extensions().get::<AuthenticatedCaller>().cloned();
        inner.clone().oneshot(request)
    });
    let auth = AuthLayer::new(callers_requiring_a_key()).layer(upstream);

    let error = auth
        .clone()
        .oneshot(request(Method::GET, "/crm/v3/objects/contacts"))
        .await
        .unwrap_err();
    assert!(matches!(
        refusal::<CallerRefusal>(&error),
        CallerRefusal::Unauthorized {
            problem: KeyProblem::Missing,
            ..
        }
    ));
    let mut keyed = request(Method::GET, "/crm/v3/objects/contacts");
    keyed
        .headers_mut()
        .insert("x-hubgate-key", "secret-key".parse().unwrap());
    assert_eq!(auth.oneshot(keyed).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        *caller_seen.lock().unwrap(),
        Some(AuthenticatedCaller("sync".into()))
    );
    let forwarded = seen.lock().unwrap();
    assert!(!forwarded[0].headers.contains_key("x-hubgate-key"));
}

#[tokio::test]
async fn identify_tags_each_call_with_its_owner() {
    let credentials = [StaticCredential {
        token: Some("pat-na1-known".into()),
        token_sha256: None,
        app_id: 7,
        portal_id: 9,
    }];
    // Static credentials, hapikeys and calls without a credential never reach HubSpot, so
    // the client's target is never dialled.
    let resolver = IdentityResolver::new(
        &IdentityConfig::default(),
        &credentials,
        super::upstream::build_client(&UpstreamConfig::default()).unwrap(),
        UpstreamTarget::parse("http://127.0.0.1:9").unwrap(),
        Metrics::new(),
    )
    .unwrap();
    let owners = Arc::new(Mutex::new(Vec::new()));
    let recorded = owners.clone();
    let upstream = service_fn(move |request: Request<Body>| {
        recorded
            .lock()
            .unwrap()
            .push(request.extensions().get::<Owner>().copied());
        async { Ok::<_, BoxError>(Response::new(body::empty())) }
    });
    let identify = IdentifyLayer::new(resolver).layer(upstream);
    let mut bearer = request(Method::GET, "/crm/v3/objects/contacts");
    bearer
        .headers_mut()
        .insert("authorization", "Bearer pat-na1-known".parse().unwrap());
    identify.clone().oneshot(bearer).await.unwrap();
    identify
        .clone()
        .oneshot(request(Method::GET, "/crm/v3/objects/contacts?hapikey=k"))
        .await
        .unwrap();
    identify
        .oneshot(request(Method::GET, "/crm/v3/objects/contacts"))
        .await
        .unwrap();
    let owners = owners.lock().unwrap();
    assert_eq!(
        owners[0],
        Some(Owner::App {
            app_id: 7,
            portal_id: 9
        })
    );
    assert!(matches!(owners[1], Some(Owner::Unidentified { .. })));
    assert_eq!(owners[2], Some(Owner::Anonymous));
}

#[tokio::test]
async fn respond_answers_every_call_once_and_counts_it_until_its_body_ends() {
    let metrics = Metrics::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let upstream = service_fn(move |request: Request<Body>| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err::<Response<Body>, BoxError>(Box::new(GuardRefusal::ConnectRefused))
            } else {
                drop(request);
                Ok(Response::new(body::full("fine")))
            }
        }
    });
    let respond = RespondLayer::new(metrics.clone()).layer(upstream);
    let refused = respond
        .clone()
        .oneshot(request(Method::GET, "/x"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    let answered = respond.oneshot(request(Method::GET, "/x")).await.unwrap();
    let in_flight = metrics.requests_in_flight();
    assert_eq!(
        in_flight.get(),
        2,
        "both calls stay in flight until their bodies end"
    );
    drop(refused);
    assert_eq!(
        answered.into_body().collect().await.unwrap().to_bytes(),
        "fine"
    );
    assert_eq!(in_flight.get(), 0);
    let text = String::from_utf8(metrics.encode()).unwrap();
    for line in [
        "hubgate_requests_total{outcome=\"bad_request\"} 1",
        "hubgate_requests_total{outcome=\"forwarded\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}
