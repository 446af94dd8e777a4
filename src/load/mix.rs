//! What `hubgate load` sends: the weighted mix of HubSpot calls, and each call's request
//! built from what this run already created (so reads find real objects).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{header, Method, Request};
use rand::Rng as _;
use serde_json::{json, Value};

use crate::proxy::body::{self, Body};

/// One kind of call in the mix; every one is a route the simulator serves and HubSpot has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallKind {
    /// `GET /crm/v3/objects/contacts/{id}` (a contacts page until this token created one).
    Get,
    /// `POST /crm/v3/objects/contacts`.
    Create,
    /// `POST /crm/v3/objects/contacts/batch/read` (`batch/create` until this token created one).
    Batch,
    /// `POST /crm/v3/objects/contacts/search`: spends the portal's search budget, not the burst.
    Search,
}

impl CallKind {
    pub const ALL: [CallKind; 4] = [
        CallKind::Get,
        CallKind::Create,
        CallKind::Batch,
        CallKind::Search,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CallKind::Get => "get",
            CallKind::Create => "create",
            CallKind::Batch => "batch",
            CallKind::Search => "search",
        }
    }

    /// HubSpot budgets searches per portal in a window of their own.
    pub fn is_search(self) -> bool {
        self == CallKind::Search
    }

    /// Calls whose answer carries the id of a contact this token created.
    fn creates(self) -> bool {
        matches!(self, CallKind::Create | CallKind::Batch)
    }
}

/// Relative weights of the call kinds, e.g. `get=60,create=20,batch=10,search=10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            weights: [60, 20, 10, 10],
        }
    }
}

impl Mix {
    pub fn weight(&self, kind: CallKind) -> u32 {
        self.weights[kind as usize]
    }

    /// A kind drawn with probability proportional to its weight.
    pub fn pick(&self) -> CallKind {
        let total: u32 = self.weights.iter().sum();
        let mut roll = rand::rng().random_range(0..total);
        for kind in CallKind::ALL {
            let w = self.weight(kind);
            if roll < w {
                return kind;
            }
            roll -= w;
        }
        CallKind::Get
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 4];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| {
                format!(
                    "'{part}' is not NAME=WEIGHT; write e.g. get=60,create=20,batch=10,search=10"
                )
            })?;
            let kind = CallKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "unknown call '{}'; the calls are get, create, batch and search",
                        name.trim()
                    )
                })?;
            weights[kind as usize] = weight.trim().parse().map_err(|_| {
                format!(
                    "the weight of '{}' must be a whole number, got '{}'",
                    kind.name(),
                    weight.trim()
                )
            })?;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err("the mix needs at least one call with a weight above 0".into());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = CallKind::ALL
            .into_iter()
            .filter(|k| self.weight(*k) > 0)
            .map(|k| format!("{}={}", k.name(), self.weight(k)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The newest contact one token created, so its reads hit a real object (0: none yet).
#[derive(Debug, Default)]
pub struct LastCreated(AtomicU64);

impl LastCreated {
    fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|id| *id != 0)
    }

    /// Remembers the first id in a create or batch answer.
    pub fn learn(&self, kind: CallKind, answer: &[u8]) {
        if !kind.creates() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(answer) else {
            return;
        };
        let id = v
            .get("id")
            .or_else(|| v.pointer("/results/0/id"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(id) = id {
            self.0.store(id, Ordering::Relaxed);
        }
    }
}

/// The request for one call of `kind` on `base` (no trailing slash) with `token`.
pub fn request(
    base: &str,
    token: &str,
    kind: CallKind,
    last: &LastCreated,
    serial: u64,
) -> Result<Request<Body>, http::Error> {
    let (method, path, body) = match (kind, last.get()) {
        (CallKind::Get, Some(id)) => (
            Method::GET,
            format!("/crm/v3/objects/contacts/{id}?properties=email"),
            None,
        ),
        (CallKind::Get, None) => (
            Method::GET,
            "/crm/v3/objects/contacts?limit=10".into(),
            None,
        ),
        (CallKind::Create, _) => (
            Method::POST,
            "/crm/v3/objects/contacts".into(),
            Some(json!({ "properties": contact(serial, 0) })),
        ),
        (CallKind::Batch, Some(id)) => (
            Method::POST,
            "/crm/v3/objects/contacts/batch/read".into(),
            Some(json!({ "inputs": [{ "id": id.to_string() }], "properties": ["email"] })),
        ),
        (CallKind::Batch, None) => (
            Method::POST,
            "/crm/v3/objects/contacts/batch/create".into(),
            Some(
                json!({ "inputs": (0..3).map(|i| json!({ "properties": contact(serial, i) })).collect::<Vec<_>>() }),
            ),
        ),
        (CallKind::Search, _) => (
            Method::POST,
            "/crm/v3/objects/contacts/search".into(),
            Some(json!({
                "filterGroups": [{ "filters": [{ "propertyName": "firstname", "operator": "EQ", "value": "Load" }] }],
                "properties": ["email"],
                "limit": 10,
            })),
        ),
    };
    let builder = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    match body {
        Some(json) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(body::full(Bytes::from(json.to_string()))),
        None => builder.body(body::empty()),
    }
}

fn contact(serial: u64, index: u64) -> Value {
    json!({
        "email": format!("load-{serial}-{index}@example.com"),
        "firstname": "Load",
        "lastname": format!("Caller {serial}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_mixes() {
        let mix: Mix = "get=3, search=1".parse().expect("valid mix");
        assert_eq!(mix.weight(CallKind::Get), 3);
        assert_eq!(mix.weight(CallKind::Create), 0);
        assert_eq!(mix.to_string(), "get=3,search=1");
        assert_eq!(
            Mix::default().to_string(),
            "get=60,create=20,batch=10,search=10"
        );
        for (bad, says) in [
            ("get", "NAME=WEIGHT"),
            ("fetch=1", "unknown call 'fetch'"),
            ("get=x", "whole number"),
            ("get=0", "at least one"),
        ] {
            let err = bad.parse::<Mix>().expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn picks_only_weighted_kinds() {
        let mix: Mix = "create=1,search=1".parse().expect("valid mix");
        for _ in 0..200 {
            assert!(matches!(mix.pick(), CallKind::Create | CallKind::Search));
        }
    }

    #[test]
    fn reads_follow_what_was_created() {
        let last = LastCreated::default();
        let get = request("http://h", "t", CallKind::Get, &last, 1).expect("request");
        assert_eq!(get.uri().path(), "/crm/v3/objects/contacts");
        let batch = request("http://h", "t", CallKind::Batch, &last, 1).expect("request");
        assert_eq!(batch.uri().path(), "/crm/v3/objects/contacts/batch/create");
        last.learn(CallKind::Get, br#"{"id":"5"}"#);
        assert_eq!(last.get(), None, "a read never teaches an id");
        last.learn(CallKind::Batch, br#"{"results":[{"id":"100007"}]}"#);
        assert_eq!(last.get(), Some(100_007));
        last.learn(CallKind::Create, br#"{"id":"100009"}"#);
        let get = request("http://h", "t", CallKind::Get, &last, 1).expect("request");
        assert_eq!(get.uri().path(), "/crm/v3/objects/contacts/100009");
        assert_eq!(get.headers()[header::AUTHORIZATION], "Bearer t");
        let batch = request("http://h", "t", CallKind::Batch, &last, 1).expect("request");
        assert_eq!(batch.uri().path(), "/crm/v3/objects/contacts/batch/read");
    }
}
