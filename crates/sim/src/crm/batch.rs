//! Batch object endpoints: `/crm/v3/objects/{type}/batch/{read,create,update,upsert,archive}`,
//! with HubSpot's input cap (50 for a read with property history) and its 207 answer for
//! partly missing objects. Reads answer in shuffled order, as HubSpot does not keep the
//! order of the inputs.

use rand::seq::SliceRandom as _;
use serde_json::{json, Value};

use super::paths::display_name;
use super::reply::Reply;
use super::request::{body_props, id_string, input_props, parse_body, Req};
use super::store::{apply, find, insert, object_json, parse_id, with_history, Db};
use crate::clock::iso_ms;

/// HubSpot's cap on `inputs` per batch call.
const MAX_BATCH: usize = 100;
/// HubSpot's cap on `inputs` of a batch read asking for `propertiesWithHistory`.
const MAX_BATCH_WITH_HISTORY: usize = 50;

pub(super) fn batch(db: &Db, r: &Req<'_>, ty: &str, op: &str) -> Reply {
    if !matches!(op, "read" | "create" | "update" | "upsert" | "archive") {
        return Reply::route_not_found(r.corr, r.method, r.segments);
    }
    let body = match parse_body(r) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
        return Reply::validation(r.corr, "Request body must contain an `inputs` array.");
    };
    let history = body_list(&body, "propertiesWithHistory");
    let cap = if op == "read" && history.is_some() {
        MAX_BATCH_WITH_HISTORY
    } else {
        MAX_BATCH
    };
    if inputs.len() > cap {
        return Reply::validation(
            r.corr,
            &format!(
                "The maximum number of inputs supported in a batch is {cap}. Please split the request into batches of {cap} or fewer inputs. Received {}.",
                inputs.len()
            ),
        );
    }
    let started = r.now_ms;
    let mut store = db.lock();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    let mut created_any = false;
    match op {
        "read" => {
            let wanted = body_props(&body);
            let id_prop = body.get("idProperty").and_then(Value::as_str);
            let table = store.table(r.portal, ty);
            for input in inputs {
                let key = id_string(input.get("id"));
                match find(table, id_prop, &key) {
                    Some(n) => {
                        if let Some(o) = table.get(&n) {
                            let mut j = object_json(n, o, wanted.as_deref());
                            if let Some(history) = &history {
                                with_history(&mut j, o, history);
                            }
                            results.push(j);
                        }
                    }
                    None => missing.push(key),
                }
            }
            results.shuffle(&mut rand::rng());
        }
        "create" => {
            for input in inputs {
                let props = match input_props(input, r.corr) {
                    Ok(p) => p,
                    Err(e) => return e,
                };
                let (id, obj) = insert(&mut store, r.portal, ty, props, r.now_ms);
                results.push(object_json(id, obj, None));
            }
            created_any = true;
        }
        "update" | "upsert" => {
            for input in inputs {
                let props = match input_props(input, r.corr) {
                    Ok(p) => p,
                    Err(e) => return e,
                };
                let key = id_string(input.get("id"));
                let id_prop = input.get("idProperty").and_then(Value::as_str);
                let existing = find(store.table(r.portal, ty), id_prop, &key);
                match (existing, op) {
                    (Some(n), _) => {
                        if let Some(o) = store.table(r.portal, ty).get_mut(&n) {
                            apply(o, props, r.now_ms);
                            let mut j = object_json(n, o, None);
                            if op == "upsert" {
                                j["new"] = Value::Bool(false);
                            }
                            results.push(j);
                        }
                    }
                    (None, "upsert") => {
                        let mut props = props;
                        // The new object must be findable by the unique property it was named by.
                        if let Some(p) = id_prop {
                            props.insert(p.to_string(), Some(key.clone()));
                        }
                        let (id, obj) = insert(&mut store, r.portal, ty, props, r.now_ms);
                        let mut j = object_json(id, obj, None);
                        j["new"] = Value::Bool(true);
                        results.push(j);
                    }
                    (None, _) => missing.push(key),
                }
            }
        }
        _ => {
            let table = store.table(r.portal, ty);
            for input in inputs {
                if let Some(n) = parse_id(&id_string(input.get("id"))) {
                    table.remove(&n);
                }
            }
            return Reply::empty(204);
        }
    }
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso_ms(started),
        "completedAt": iso_ms(r.now_ms),
    });
    if !missing.is_empty() {
        out["numErrors"] = json!(1);
        out["errors"] = json!([{
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                display_name(ty)
            ),
            "context": { "ids": missing },
        }]);
        return Reply::json(207, out);
    }
    Reply::json(if created_any { 201 } else { 200 }, out)
}

/// A list of property names in a batch body (`properties`, `propertiesWithHistory`).
fn body_list(body: &Value, field: &str) -> Option<Vec<String>> {
    body.get(field).and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}
