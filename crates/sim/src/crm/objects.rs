//! Single-object CRUD and listing: `/crm/v3/objects/{type}[/{id}]`.

use serde_json::json;

use super::reply::Reply;
use super::request::{input_props, parse_body, query_limit, requested_list, requested_props, Req};
use super::store::{apply, insert, object_json, parse_id, with_history, Db};
use crate::http_util::parse_query;

pub(super) fn create(db: &Db, r: &Req<'_>, ty: &str) -> Reply {
    let body = match parse_body(r) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let props = match input_props(&body, r.corr) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut store = db.lock();
    let (id, obj) = insert(&mut store, r.portal, ty, props, r.now_ms);
    Reply::json(201, object_json(id, obj, None))
}

pub(super) fn get(db: &Db, r: &Req<'_>, ty: &str, id: &str) -> Reply {
    let wanted = requested_props(r.query);
    let store = db.lock();
    let found = parse_id(id).and_then(|n| {
        store
            .existing_table(r.portal, ty)
            .and_then(|t| t.get(&n).map(|o| (n, o)))
    });
    match found {
        Some((n, o)) => {
            let mut j = object_json(n, o, wanted.as_deref());
            if let Some(history) = requested_list(r.query, "propertiesWithHistory") {
                with_history(&mut j, o, &history);
            }
            Reply::json(200, j)
        }
        None => Reply::resource_not_found(r.corr),
    }
}

pub(super) fn update(db: &Db, r: &Req<'_>, ty: &str, id: &str) -> Reply {
    let body = match parse_body(r) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let props = match input_props(&body, r.corr) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut store = db.lock();
    let Some(n) = parse_id(id) else {
        return Reply::not_found(r.corr, id);
    };
    match store.table(r.portal, ty).get_mut(&n) {
        Some(o) => {
            apply(o, props, r.now_ms);
            Reply::json(200, object_json(n, o, None))
        }
        None => Reply::not_found(r.corr, id),
    }
}

/// Archived objects are removed outright: nothing in the simulator reads them back.
pub(super) fn archive(db: &Db, r: &Req<'_>, ty: &str, id: &str) -> Reply {
    let mut store = db.lock();
    // HubSpot answers 204 even when the object is already gone.
    if let Some(n) = parse_id(id) {
        store.table(r.portal, ty).remove(&n);
    }
    Reply::empty(204)
}

/// Pages by id: `after` is the last id of the previous page, as HubSpot's cursors are.
pub(super) fn list(db: &Db, r: &Req<'_>, ty: &str) -> Reply {
    let q = parse_query(r.query);
    let limit = query_limit(&q, 10, 100);
    let after = q
        .iter()
        .find(|(k, _)| k == "after")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let wanted = requested_props(r.query);
    let store = db.lock();
    let mut results = Vec::new();
    let mut next = None;
    if let Some(t) = store.existing_table(r.portal, ty) {
        let start = after.map_or(0, |a| a.saturating_add(1));
        for (id, o) in t.range(start..) {
            if results.len() == limit {
                next = Some(*id - 1);
                break;
            }
            results.push(object_json(*id, o, wanted.as_deref()));
        }
    }
    let mut body = json!({ "results": results });
    if let Some(n) = next {
        body["paging"] = json!({ "next": { "after": n.to_string() } });
    }
    Reply::json(200, body)
}
