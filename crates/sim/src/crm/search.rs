//! CRM search (`POST /crm/v3/objects/{type}/search`): filter groups, free-text query, one
//! sort and offset paging. Loose where the gateway does not care, exact in the answer shape.

use serde_json::{json, Value};

use super::reply::Reply;
use super::request::{body_props, parse_body, scalar_string, Req};
use super::store::{object_json, Db, Obj};

pub(super) fn search(db: &Db, r: &Req<'_>, ty: &str) -> Reply {
    let body = match parse_body(r) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(10)
        .clamp(1, 200) as usize;
    let offset = body
        .get("after")
        .and_then(|v| match v {
            Value::String(s) => s.parse::<usize>().ok(),
            Value::Number(n) => n.as_u64().map(|n| n as usize),
            _ => None,
        })
        .unwrap_or(0);
    let wanted = body_props(&body);
    let groups = body
        .get("filterGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = body
        .get("query")
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    let store = db.lock();
    let mut hits: Vec<(u64, &Obj)> = store
        .existing_table(r.portal, ty)
        .map(|t| {
            t.iter()
                .filter(|(_, o)| groups.is_empty() || groups.iter().any(|g| group_matches(g, o)))
                .filter(|(_, o)| {
                    text.as_deref().is_none_or(|q| {
                        o.props
                            .values()
                            .flatten()
                            .any(|v| v.to_lowercase().contains(q))
                    })
                })
                .map(|(id, o)| (*id, o))
                .collect()
        })
        .unwrap_or_default();
    if let Some(sort) = body
        .get("sorts")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        sort_hits(&mut hits, sort);
    }
    let total = hits.len();
    let page: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, o)| object_json(*id, o, wanted.as_deref()))
        .collect();
    let mut out = json!({ "total": total, "results": page });
    if offset + limit < total {
        out["paging"] = json!({ "next": { "after": (offset + limit).to_string() } });
    }
    Reply::json(200, out)
}

/// Filters within a group are ANDed; groups are ORed by the caller.
fn group_matches(group: &Value, o: &Obj) -> bool {
    let Some(filters) = group.get("filters").and_then(Value::as_array) else {
        return true;
    };
    filters.iter().all(|f| filter_matches(f, o))
}

fn filter_matches(f: &Value, o: &Obj) -> bool {
    let Some(name) = f.get("propertyName").and_then(Value::as_str) else {
        return false;
    };
    let op = f.get("operator").and_then(Value::as_str).unwrap_or("EQ");
    let actual = o.props.get(name).and_then(|v| v.as_deref());
    let want = f.get("value").map(scalar_string);
    // Properties are strings, but HubSpot compares numbers numerically.
    let cmp = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y),
        _ => Some(a.cmp(b)),
    };
    let values = || -> Vec<String> {
        f.get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(scalar_string).collect())
            .unwrap_or_default()
    };
    use std::cmp::Ordering::*;
    match (op, actual, want.as_deref()) {
        ("HAS_PROPERTY", a, _) => a.is_some_and(|v| !v.is_empty()),
        ("NOT_HAS_PROPERTY", a, _) => a.is_none_or(str::is_empty),
        ("EQ", Some(a), Some(w)) => a.eq_ignore_ascii_case(w),
        ("NEQ", a, Some(w)) => a.is_none_or(|a| !a.eq_ignore_ascii_case(w)),
        ("IN", Some(a), _) => values().iter().any(|w| a.eq_ignore_ascii_case(w)),
        ("NOT_IN", a, _) => a.is_none_or(|a| !values().iter().any(|w| a.eq_ignore_ascii_case(w))),
        ("CONTAINS_TOKEN", Some(a), Some(w)) => a
            .to_lowercase()
            .contains(&w.trim_matches('*').to_lowercase()),
        ("NOT_CONTAINS_TOKEN", a, Some(w)) => a.is_none_or(|a| {
            !a.to_lowercase()
                .contains(&w.trim_matches('*').to_lowercase())
        }),
        ("GT", Some(a), Some(w)) => cmp(a, w) == Some(Greater),
        ("GTE", Some(a), Some(w)) => matches!(cmp(a, w), Some(Greater | Equal)),
        ("LT", Some(a), Some(w)) => cmp(a, w) == Some(Less),
        ("LTE", Some(a), Some(w)) => matches!(cmp(a, w), Some(Less | Equal)),
        ("BETWEEN", Some(a), Some(lo)) => {
            let hi = f.get("highValue").map(scalar_string).unwrap_or_default();
            matches!(cmp(a, lo), Some(Greater | Equal)) && matches!(cmp(a, &hi), Some(Less | Equal))
        }
        _ => false,
    }
}

/// Accepts both sort shapes the SDKs send: `"-prop"` strings and `{propertyName, direction}`.
/// Ties fall back to the id so that paging through equal values is stable.
fn sort_hits(hits: &mut [(u64, &Obj)], sort: &Value) {
    let (name, desc) = match sort {
        Value::String(s) => match s.strip_prefix('-') {
            Some(n) => (n.to_string(), true),
            None => (s.clone(), false),
        },
        _ => (
            sort.get("propertyName")
                .and_then(Value::as_str)
                .unwrap_or("hs_object_id")
                .to_string(),
            sort.get("direction").and_then(Value::as_str) == Some("DESCENDING"),
        ),
    };
    hits.sort_by(|(ia, a), (ib, b)| {
        let va = a.props.get(&name).cloned().flatten();
        let vb = b.props.get(&name).cloned().flatten();
        let ord = match (
            va.as_deref().map(str::parse::<f64>),
            vb.as_deref().map(str::parse::<f64>),
        ) {
            (Some(Ok(x)), Some(Ok(y))) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            _ => va.cmp(&vb),
        }
        .then(ia.cmp(ib));
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
}
