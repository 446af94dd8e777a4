//! What a load run asks of the simulator behind its target: which owner each token is,
//! a reset before the run, its stats after; and of hubgate's admin listener, the budgets.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _};
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use crate::proxy::body::{self, Body};
use crate::proxy::upstream::UpstreamClient;
use hubgate_sim::SimStats;

/// Control calls are local and small; a simulator that takes longer is not there.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

async fn fetch(
    client: &UpstreamClient,
    request: Request<Body>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri = request.uri().clone();
    let answer = tokio::time::timeout(CONTROL_TIMEOUT, async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    })
    .await
    .with_context(|| {
        format!(
            "{uri} did not answer within {} s",
            CONTROL_TIMEOUT.as_secs()
        )
    })?;
    answer.with_context(|| format!("calling {uri}"))
}

fn get(url: String) -> anyhow::Result<Request<Body>> {
    Ok(Request::get(url).body(body::empty())?)
}

/// The (app, portal) of each token, asked through the simulator's introspection routes
/// (never rate limited); `None` for a token it does not know.
pub async fn owners_of(
    client: &UpstreamClient,
    sim: &str,
    tokens: &[String],
) -> anyhow::Result<Vec<Option<(u64, u64)>>> {
    stream::iter(tokens)
        .map(|token| owner_of(client, sim, token))
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn owner_of(
    client: &UpstreamClient,
    sim: &str,
    token: &str,
) -> anyhow::Result<Option<(u64, u64)>> {
    let private = Request::builder()
        .method(Method::POST)
        .uri(format!("{sim}/oauth/v2/private-apps/get/access-token-info"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(json!({ "tokenKey": token }).to_string()))?;
    let (status, answer) = fetch(client, private).await?;
    if status == StatusCode::OK {
        return Ok(ids(&answer, "appId", "hubId"));
    }
    let Ok(oauth) = get(format!("{sim}/oauth/v1/access-tokens/{token}")) else {
        return Ok(None);
    };
    let (status, answer) = fetch(client, oauth).await?;
    Ok((status == StatusCode::OK)
        .then(|| ids(&answer, "app_id", "hub_id"))
        .flatten())
}

fn ids(answer: &[u8], app: &str, portal: &str) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_slice(answer).ok()?;
    Some((v.get(app)?.as_u64()?, v.get(portal)?.as_u64()?))
}

pub async fn reset(client: &UpstreamClient, sim: &str) -> anyhow::Result<()> {
    let request = Request::post(format!("{sim}/__sim/reset")).body(body::empty())?;
    let (status, _) = fetch(client, request).await?;
    anyhow::ensure!(
        status.is_success(),
        "{sim}/__sim/reset answered {status}: is --sim the simulator's base URL?"
    );
    Ok(())
}

pub async fn stats(client: &UpstreamClient, sim: &str) -> anyhow::Result<SimStats> {
    let (status, answer) = fetch(client, get(format!("{sim}/__sim/stats"))?).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{sim}/__sim/stats answered {status}: is --sim the simulator's base URL?"
    );
    serde_json::from_slice(&answer)
        .with_context(|| format!("{sim}/__sim/stats is not the simulator's stats JSON"))
}

/// hubgate's burst budgets summed over its active owners, from every page of
/// `GET /admin/budgets`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayLoad {
    pub burst_used: u64,
    pub burst_limit: u64,
    pub queued: u64,
}

pub async fn gateway_load(client: &UpstreamClient, admin: &str) -> anyhow::Result<GatewayLoad> {
    /// Pages followed at most: 1000 a page covers any gateway's owners long before, and a
    /// cursor that never ends must not hang the load test.
    const MAX_PAGES: usize = 1000;
    let mut load = GatewayLoad::default();
    let mut after = String::new();
    for _ in 0..MAX_PAGES {
        let url = format!("{admin}/admin/budgets?limit=1000&after={after}");
        let (status, answer) = fetch(client, get(url)?).await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "{admin}/admin/budgets answered {status}"
        );
        let v: Value = serde_json::from_slice(&answer)?;
        for owner in v
            .get("owners")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            load.queued += owner
                .get("queue_depth")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if let Some(burst) = owner.pointer("/budgets/burst").filter(|b| !b.is_null()) {
                load.burst_used += burst.get("used").and_then(Value::as_u64).unwrap_or(0);
                load.burst_limit += burst.get("limit").and_then(Value::as_u64).unwrap_or(0);
            }
        }
        match v.get("next_after").and_then(Value::as_str) {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    Ok(load)
}
