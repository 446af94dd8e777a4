//! v4 associations between objects: default and labeled links (always stored in both
//! directions), removal, and listing with paging.

use serde_json::{json, Value};

use super::paths::type_id_of;
use super::reply::Reply;
use super::request::{parse_body, query_limit, Req};
use super::store::{link, parse_id, Db};
use crate::clock::iso_ms;
use crate::http_util::parse_query;

/// HubSpot's default (unlabeled) association type ids for common pairs.
fn assoc_type_id(from: &str, to: &str) -> i64 {
    match (from, to) {
        ("contacts", "companies") => 279,
        ("companies", "contacts") => 280,
        ("deals", "contacts") => 3,
        ("contacts", "deals") => 4,
        ("deals", "companies") => 341,
        ("companies", "deals") => 342,
        ("contacts", "tickets") => 15,
        ("tickets", "contacts") => 16,
        ("tickets", "companies") => 339,
        ("companies", "tickets") => 340,
        ("deals", "line_items") => 19,
        ("line_items", "deals") => 20,
        _ => 1,
    }
}

/// `PUT /crm/v4/objects/{type}/{id}/associations/default/{toType}/{toId}`.
pub(super) fn associate_default(
    db: &Db,
    r: &Req<'_>,
    ty: &str,
    id: &str,
    to_ty: &str,
    to_id: &str,
) -> Reply {
    let (Some(from), Some(to)) = (parse_id(id), parse_id(to_id)) else {
        return Reply::validation(r.corr, "Object ids must be numeric.");
    };
    let fwd = assoc_type_id(ty, to_ty);
    let back = assoc_type_id(to_ty, ty);
    let mut store = db.lock();
    link(&mut store, r.portal, (ty, from), (to_ty, to), fwd);
    link(&mut store, r.portal, (to_ty, to), (ty, from), back);
    let spec = |f: u64, t: u64, tid: i64| {
        json!({
            "from": { "id": f.to_string() },
            "to": { "id": t.to_string() },
            "associationSpec": { "associationCategory": "HUBSPOT_DEFINED", "associationTypeId": tid },
        })
    };
    Reply::json(
        200,
        json!({
            "status": "COMPLETE",
            "results": [spec(from, to, fwd), spec(to, from, back)],
            "startedAt": iso_ms(r.now_ms),
            "completedAt": iso_ms(r.now_ms),
        }),
    )
}

/// `PUT /crm/v4/objects/{type}/{id}/associations/{toType}/{toId}` with a body of
/// association types; the reverse direction gets the default type.
pub(super) fn associate_labeled(
    db: &Db,
    r: &Req<'_>,
    ty: &str,
    id: &str,
    to_ty: &str,
    to_id: &str,
) -> Reply {
    let (Some(from), Some(to)) = (parse_id(id), parse_id(to_id)) else {
        return Reply::validation(r.corr, "Object ids must be numeric.");
    };
    let body = match parse_body(r) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let types: Vec<i64> = body
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("associationTypeId").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    let types = if types.is_empty() {
        vec![assoc_type_id(ty, to_ty)]
    } else {
        types
    };
    let mut store = db.lock();
    for t in &types {
        link(&mut store, r.portal, (ty, from), (to_ty, to), *t);
    }
    link(
        &mut store,
        r.portal,
        (to_ty, to),
        (ty, from),
        assoc_type_id(to_ty, ty),
    );
    Reply::json(
        200,
        json!({
            "fromObjectTypeId": type_id_of(ty),
            "fromObjectId": from,
            "toObjectTypeId": type_id_of(to_ty),
            "toObjectId": to,
            "labels": [],
        }),
    )
}

/// Removes the link in both directions; like HubSpot, 204 whether or not it existed.
pub(super) fn unassociate(
    db: &Db,
    r: &Req<'_>,
    ty: &str,
    id: &str,
    to_ty: &str,
    to_id: &str,
) -> Reply {
    if let (Some(from), Some(to)) = (parse_id(id), parse_id(to_id)) {
        let mut store = db.lock();
        for (a, b) in [((ty, from), (to_ty, to)), ((to_ty, to), (ty, from))] {
            if let Some(m) = store.assoc.get_mut(&(r.portal, a.0.to_string(), a.1)) {
                m.remove(&(b.0.to_string(), b.1));
            }
        }
    }
    Reply::empty(204)
}

/// `GET /crm/v4/objects/{type}/{id}/associations/{toType}`, offset-paged.
pub(super) fn list_associations(db: &Db, r: &Req<'_>, ty: &str, id: &str, to_ty: &str) -> Reply {
    let q = parse_query(r.query);
    let limit = query_limit(&q, 500, 500);
    let offset = q
        .iter()
        .find(|(k, _)| k == "after")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let Some(from) = parse_id(id) else {
        return Reply::validation(r.corr, "Object ids must be numeric.");
    };
    let store = db.lock();
    let all: Vec<Value> = store
        .assoc
        .get(&(r.portal, ty.to_string(), from))
        .map(|m| {
            m.iter()
                .filter(|((t, _), _)| t == to_ty)
                .map(|((_, to), types)| {
                    let types: Vec<Value> = types
                        .iter()
                        .map(|t| json!({ "category": "HUBSPOT_DEFINED", "typeId": t, "label": Value::Null }))
                        .collect();
                    json!({ "toObjectId": to, "associationTypes": types })
                })
                .collect()
        })
        .unwrap_or_default();
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let mut out = json!({ "results": page });
    if offset + limit < total {
        out["paging"] = json!({ "next": { "after": (offset + limit).to_string() } });
    }
    Reply::json(200, out)
}
