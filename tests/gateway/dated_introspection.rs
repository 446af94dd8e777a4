//! OAuth owners through HubSpot's dated introspection (`POST /oauth/2026-03/token/introspect`,
//! with each `[[apps]]` entry's client credentials), the v1 lookup as a fallback while
//! `[identity] v1_introspection` is on, and private-app tokens keeping their own lookup;
//! rehearsed against a simulator whose v1 route is switched off as on 2027-02-16.

use http::StatusCode;
use hubgate::config::AppConfig;
use hubgate::Config;
use hubgate_sim::SimStats;

use crate::support::*;

fn app(app_id: u64, secret: &str) -> AppConfig {
    AppConfig {
        app_id,
        client_id: format!("sim-client-{app_id}"),
        client_secret: secret.to_string(),
        ..AppConfig::default()
    }
}

/// The generated apps' credentials as the simulator hands them out.
fn sim_app(app_id: u64) -> AppConfig {
    app(app_id, &format!("sim-secret-{app_id}"))
}

async fn call(gateway: &Gateway, token: &str) -> StatusCode {
    let request = http::Request::get(gateway.url("/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    send(request).await.0
}

/// Whether the gateway keeps budgets for this (app, portal): it billed a call to it.
async fn owner_known(gateway: &Gateway, app_id: u64, portal_id: u64) -> bool {
    let (status, _, body) =
        get(&gateway.admin_url(&format!("/admin/owners/{app_id}:{portal_id}"))).await;
    match status {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("admin owner answered {other}: {body:?}"),
    }
}

fn counts(stats: &SimStats) -> (u64, u64, u64) {
    let i = &stats.introspection;
    (
        i.token_introspect,
        i.oauth_access_token,
        i.private_app_token_info,
    )
}

#[tokio::test]
async fn dated_introspection_names_oauth_owners_when_v1_is_switched_off() {
    let sim = Hubspot::start(sim_config(
        "generate_tokens = 2\n[oauth]\nv1_oauth = false\n",
    ))
    .await;
    let installed = sim.oauth_install(3001, 4242, &[]).unwrap();
    let gateway = sim
        .gateway(|config: &mut Config| {
            config.apps = vec![
                // An app whose credentials HubSpot refuses must not stop the others.
                AppConfig {
                    client_id: "sim-client-unknown".into(),
                    ..app(3999, "nope")
                },
                sim_app(3002),
                sim_app(3001),
            ];
            config.identity.v1_introspection = false;
        })
        .await;

    for _ in 0..3 {
        assert_eq!(
            call(&gateway, &installed.access_token).await,
            StatusCode::OK
        );
        assert_eq!(call(&gateway, "oauth-sim-2").await, StatusCode::OK);
    }
    let known = (
        owner_known(&gateway, 3001, 4242).await,
        owner_known(&gateway, 3002, 1002).await,
    );
    let (dated, v1, _) = counts(&sim.stats());
    eprintln!(
        "owners known (3001:4242, 3002:1002): {known:?}; dated introspections {dated}, v1 {v1}"
    );
    assert_eq!(
        known,
        (true, true),
        "both tokens billed to their own (app, portal)"
    );
    assert_eq!(v1, 0, "v1_introspection = false never asks the v1 route");
    assert!(
        (2..=6).contains(&dated),
        "at most one question per app for each of 2 tokens, then cached: {dated}"
    );
}

#[tokio::test]
async fn the_v1_lookup_stays_the_fallback_while_enabled() {
    let sim = Hubspot::start(sim_config("generate_tokens = 2\n")).await;
    // oauth-sim-1 is app 3001's, which hubgate has no credentials for.
    let with_v1 = sim
        .gateway(|config: &mut Config| config.apps = vec![sim_app(3002)])
        .await;
    assert_eq!(call(&with_v1, "oauth-sim-1").await, StatusCode::OK);
    let after_first = counts(&sim.stats());
    eprintln!("with v1 on: (dated, v1, private) = {after_first:?}");
    assert_eq!(after_first.0, 1, "the dated introspection is asked first");
    assert_eq!(after_first.1, 1, "then the v1 route");
    assert!(owner_known(&with_v1, 3001, 1001).await);

    let without_v1 = sim
        .gateway(|config: &mut Config| {
            config.apps = vec![sim_app(3002)];
            config.identity.v1_introspection = false;
        })
        .await;
    assert_eq!(call(&without_v1, "oauth-sim-1").await, StatusCode::OK);
    let after_second = counts(&sim.stats());
    assert_eq!(after_second.1, 1, "no v1 lookup once it is off");
    assert!(
        !owner_known(&without_v1, 3001, 1001).await,
        "a token no app knows is not given an owner"
    );
}

#[tokio::test]
async fn private_app_tokens_keep_their_own_lookup() {
    let sim = Hubspot::start(sim_config(
        "generate_tokens = 1\n[oauth]\nv1_oauth = false\n",
    ))
    .await;
    let gateway = sim
        .gateway(|config: &mut Config| {
            config.apps = vec![sim_app(3001)];
            config.identity.v1_introspection = false;
        })
        .await;
    assert_eq!(call(&gateway, "pat-na1-sim-1").await, StatusCode::OK);
    assert_eq!(counts(&sim.stats()), (0, 0, 1));
    assert!(owner_known(&gateway, 2001, 1001).await);
}
