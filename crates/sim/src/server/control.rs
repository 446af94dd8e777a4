//! The `/__sim/*` routes that control and observe the simulator (stats, reset, faults,
//! outside consumers, OAuth settings and installs, health) and dispatch to the fidelity routes. They are exempt from
//! auth, limits and faults, so tests can always reach them.

use std::sync::Arc;

use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::echo::{echo, pattern_response};
use super::outside::set_outside;
use super::state::Shared;
use crate::clock::unix_ms;
use crate::faults::Faults;
use crate::http_util::{empty_response, json_response, segments, Body};
use crate::outside::OutsideConfig;

/// Control bodies are tiny; the cap only guards against a runaway client.
const MAX_CONTROL_BODY: usize = 1024 * 1024;

pub(super) async fn sim_route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs = segments(&path);
    let method = req.method().clone();
    match (&method, &segs[1..]) {
        (_, ["echo", ..]) => echo(req).await,
        (&Method::GET, ["bytes", n]) => match n.parse::<u64>() {
            Ok(n) => pattern_response(n),
            Err(_) => json_response(400, &json!({ "message": "n must be a byte count" })),
        },
        (&Method::GET, ["stats"]) => {
            let stats = shared.stats(unix_ms());
            json_response(200, &serde_json::to_value(stats).unwrap_or(Value::Null))
        }
        (&Method::POST, ["reset"]) => {
            shared.reset();
            empty_response(204)
        }
        (&Method::GET, ["faults"]) => json_response(
            200,
            &serde_json::to_value(shared.faults()).unwrap_or(Value::Null),
        ),
        (&Method::POST, ["faults"]) => match sim_json::<Faults>(req).await {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    shared.set_faults(f.clone());
                    json_response(200, &serde_json::to_value(f).unwrap_or(Value::Null))
                }
                Err(e) => json_response(400, &json!({ "message": e.to_string() })),
            },
            Err(resp) => resp,
        },
        // Deserializing validates the pattern, so a bad one answers 400 from `sim_json`.
        (&Method::POST, ["outside"]) => match sim_json::<OutsideConfig>(req).await {
            Ok(o) => {
                set_outside(shared, o);
                empty_response(204)
            }
            Err(resp) => resp,
        },
        (&Method::GET, ["oauth"]) => json_response(
            200,
            &serde_json::to_value(shared.oauth.settings()).unwrap_or(Value::Null),
        ),
        (&Method::POST, ["oauth"]) => match sim_json::<Value>(req).await {
            Ok(patch) => match shared.oauth.patch_settings(&patch) {
                Ok(settings) => {
                    json_response(200, &serde_json::to_value(settings).unwrap_or(Value::Null))
                }
                Err(e) => json_response(400, &json!({ "message": e.to_string() })),
            },
            Err(resp) => resp,
        },
        (&Method::POST, ["oauth", "install"]) => match sim_json::<InstallRequest>(req).await {
            Ok(r) => match shared.oauth.install(
                r.app_id,
                r.hub_id,
                r.scopes,
                tokio::time::Instant::now(),
            ) {
                Ok(grant) => {
                    json_response(200, &serde_json::to_value(grant).unwrap_or(Value::Null))
                }
                Err(e) => json_response(400, &json!({ "message": e })),
            },
            Err(resp) => resp,
        },
        (&Method::GET, ["health"]) => json_response(200, &json!({ "status": "ok" })),
        _ => json_response(
            404,
            &json!({ "message": format!("unknown simulator route {method} {path}") }),
        ),
    }
}

/// `POST /__sim/oauth/install`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    app_id: u64,
    hub_id: u64,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Control routes answer in plain `{"message"}` bodies, not HubSpot's shape: they are the
/// simulator's own API.
async fn sim_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let body = Limited::new(req.into_body(), MAX_CONTROL_BODY)
        .collect()
        .await
        .map_err(|_| json_response(400, &json!({ "message": "unreadable body" })))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| json_response(400, &json!({ "message": format!("invalid JSON: {e}") })))
}
