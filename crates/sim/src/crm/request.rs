//! What the CRM reads from a request: the facts the server hands over, and the parsing of
//! bodies, property lists and paging parameters that every handler shares.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::reply::Reply;
use crate::http_util::parse_query;

/// Request facts the CRM handlers need.
pub(crate) struct Req<'a> {
    pub(crate) portal: u64,
    pub(crate) method: &'a str,
    pub(crate) segments: &'a [&'a str],
    pub(crate) query: Option<&'a str>,
    pub(crate) body: &'a [u8],
    pub(crate) corr: &'a str,
    pub(crate) now_ms: i64,
}

/// The JSON body; an empty body reads as `{}` because SDKs send none for bodiless creates.
pub(super) fn parse_body(r: &Req<'_>) -> Result<Value, Reply> {
    if r.body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(r.body).map_err(|e| {
        Reply::validation(
            r.corr,
            &format!(
                "Invalid input JSON on line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// The `properties` object of a create or update input; HubSpot stores every value as a string.
pub(super) fn input_props(
    v: &Value,
    corr: &str,
) -> Result<BTreeMap<String, Option<String>>, Reply> {
    let mut out = BTreeMap::new();
    match v.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = match v {
                    Value::Null => None,
                    other => Some(scalar_string(other)),
                };
                out.insert(k.clone(), v);
            }
        }
        Some(_) => return Err(Reply::validation(corr, "`properties` must be an object.")),
    }
    Ok(out)
}

/// The `properties` array of a search or batch-read body: the properties to answer with.
pub(super) fn body_props(body: &Value) -> Option<Vec<String>> {
    body.get("properties").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// `?properties=a,b&properties=c`: the properties to answer with, or None for all of them.
pub(super) fn requested_props(query: Option<&str>) -> Option<Vec<String>> {
    requested_list(query, "properties")
}

/// A query list of names, `?{field}=a,b&{field}=c`, or None when it names none.
pub(super) fn requested_list(query: Option<&str>, field: &str) -> Option<Vec<String>> {
    let props: Vec<String> = parse_query(query)
        .into_iter()
        .filter(|(k, _)| k == field)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    (!props.is_empty()).then_some(props)
}

pub(super) fn query_limit(q: &[(String, String)], default: usize, max: usize) -> usize {
    q.iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// A JSON scalar as HubSpot's string form; numbers and booleans keep their JSON spelling.
pub(super) fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn id_string(v: Option<&Value>) -> String {
    v.map(scalar_string).unwrap_or_default()
}
