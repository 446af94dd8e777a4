//! In-memory CRM: objects per (portal, object type), v4 associations, and the JSON shapes the
//! official HubSpot SDKs deserialize.
//!
//! Fidelity is deliberately loose where the gateway does not care (filters, sorting, property
//! selection) and exact where SDKs would fail to parse (field names, string ids, timestamps).
//! Archived objects are removed outright; `associations` inside create inputs are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use super::clock::iso_ms;
use super::http_util::{self, hs_error, parse_query};

const MAX_BATCH: usize = 100;

pub(crate) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
        }
    }

    fn empty(status: u16) -> Self {
        Reply { status, body: None }
    }
}

struct Obj {
    props: BTreeMap<String, Option<String>>,
    created: i64,
    updated: i64,
}

type AssocKey = (u64, String, u64);

#[derive(Default)]
struct Store {
    next_id: u64,
    tables: HashMap<(u64, String), BTreeMap<u64, Obj>>,
    /// (portal, fromType, fromId) -> (toType, toId) -> association type ids.
    assoc: HashMap<AssocKey, BTreeMap<(String, u64), BTreeSet<i64>>>,
}

impl Store {
    fn table(&mut self, portal: u64, ty: &str) -> &mut BTreeMap<u64, Obj> {
        self.tables.entry((portal, ty.to_string())).or_default()
    }

    fn new_id(&mut self) -> u64 {
        // HubSpot ids are large numbers; starting high makes accidental index-like use obvious.
        self.next_id += 1;
        100_000 + self.next_id
    }
}

pub(crate) struct Crm {
    store: Mutex<Store>,
}

/// Request facts the CRM handlers need.
pub(crate) struct Req<'a> {
    pub portal: u64,
    pub method: &'a str,
    pub segments: &'a [&'a str],
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub corr: &'a str,
    pub now_ms: i64,
}

impl Crm {
    pub fn new() -> Self {
        Crm {
            store: Mutex::new(Store::default()),
        }
    }

    pub fn reset(&self) {
        *self.lock() = Store::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a CRM route, or None when the path is not one the simulator knows.
    pub fn handle(&self, r: &Req<'_>) -> Option<Reply> {
        let s = r.segments;
        let m = r.method;
        match s {
            ["crm", "v3", "objects", ty] => match m {
                "GET" => Some(self.list(r, &object_type(ty))),
                "POST" => Some(self.create(r, &object_type(ty))),
                _ => None,
            },
            ["crm", "v3", "objects", ty, "search"] if m == "POST" => {
                Some(self.search(r, &object_type(ty)))
            }
            ["crm", "v3", "objects", ty, "batch", op] if m == "POST" => {
                Some(self.batch(r, &object_type(ty), op))
            }
            ["crm", "v3", "objects", ty, id] => {
                let ty = object_type(ty);
                match m {
                    "GET" => Some(self.get(r, &ty, id)),
                    "PATCH" => Some(self.update(r, &ty, id)),
                    "DELETE" => Some(self.archive(r, &ty, id)),
                    _ => None,
                }
            }
            ["crm", "v4", "objects", ty, id, "associations", "default", to_ty, to_id]
                if m == "PUT" =>
            {
                Some(self.associate_default(r, &object_type(ty), id, &object_type(to_ty), to_id))
            }
            ["crm", "v4", "objects", ty, id, "associations", to_ty, to_id] => match m {
                "PUT" => Some(self.associate_labeled(
                    r,
                    &object_type(ty),
                    id,
                    &object_type(to_ty),
                    to_id,
                )),
                "DELETE" => {
                    Some(self.unassociate(r, &object_type(ty), id, &object_type(to_ty), to_id))
                }
                _ => None,
            },
            ["crm", "v4", "objects", ty, id, "associations", to_ty] if m == "GET" => {
                Some(self.list_associations(r, &object_type(ty), id, &object_type(to_ty)))
            }
            _ => None,
        }
    }

    fn create(&self, r: &Req<'_>, ty: &str) -> Reply {
        let body = match parse_body(r) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let props = match input_props(&body, r.corr) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let mut store = self.lock();
        let (id, obj) = insert(&mut store, r.portal, ty, props, r.now_ms);
        Reply::json(201, object_json(id, obj, None))
    }

    fn get(&self, r: &Req<'_>, ty: &str, id: &str) -> Reply {
        let wanted = requested_props(r.query);
        let store = self.lock();
        let found = parse_id(id).and_then(|n| {
            store
                .tables
                .get(&(r.portal, ty.to_string()))
                .and_then(|t| t.get(&n).map(|o| (n, o)))
        });
        match found {
            Some((n, o)) => Reply::json(200, object_json(n, o, wanted.as_deref())),
            None => not_found(r.corr, id),
        }
    }

    fn update(&self, r: &Req<'_>, ty: &str, id: &str) -> Reply {
        let body = match parse_body(r) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let props = match input_props(&body, r.corr) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let mut store = self.lock();
        let Some(n) = parse_id(id) else {
            return not_found(r.corr, id);
        };
        match store.table(r.portal, ty).get_mut(&n) {
            Some(o) => {
                apply(o, props, r.now_ms);
                Reply::json(200, object_json(n, o, None))
            }
            None => not_found(r.corr, id),
        }
    }

    fn archive(&self, r: &Req<'_>, ty: &str, id: &str) -> Reply {
        let mut store = self.lock();
        // HubSpot answers 204 even when the object is already gone.
        if let Some(n) = parse_id(id) {
            store.table(r.portal, ty).remove(&n);
        }
        Reply::empty(204)
    }

    fn list(&self, r: &Req<'_>, ty: &str) -> Reply {
        let q = parse_query(r.query);
        let limit = query_limit(&q, 10, 100);
        let after = q
            .iter()
            .find(|(k, _)| k == "after")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        let wanted = requested_props(r.query);
        let store = self.lock();
        let mut results = Vec::new();
        let mut next = None;
        if let Some(t) = store.tables.get(&(r.portal, ty.to_string())) {
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

    fn search(&self, r: &Req<'_>, ty: &str) -> Reply {
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
        let wanted: Option<Vec<String>> =
            body.get("properties").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            });
        let groups = body
            .get("filterGroups")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let text = body
            .get("query")
            .and_then(Value::as_str)
            .map(str::to_lowercase);
        let store = self.lock();
        let mut hits: Vec<(u64, &Obj)> = store
            .tables
            .get(&(r.portal, ty.to_string()))
            .map(|t| {
                t.iter()
                    .filter(|(_, o)| {
                        groups.is_empty() || groups.iter().any(|g| group_matches(g, o))
                    })
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

    fn batch(&self, r: &Req<'_>, ty: &str, op: &str) -> Reply {
        if !matches!(op, "read" | "create" | "update" | "upsert" | "archive") {
            return route_not_found(r.corr, r.method, r.segments);
        }
        let body = match parse_body(r) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
            return validation(r.corr, "Request body must contain an `inputs` array.");
        };
        if inputs.len() > MAX_BATCH {
            return validation(
                r.corr,
                &format!(
                    "Batch input is limited to {MAX_BATCH} inputs, got {}.",
                    inputs.len()
                ),
            );
        }
        let started = r.now_ms;
        let mut store = self.lock();
        let mut results = Vec::new();
        let mut missing = Vec::new();
        let mut created_any = false;
        match op {
            "read" => {
                let wanted: Option<Vec<String>> =
                    body.get("properties").and_then(Value::as_array).map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    });
                let id_prop = body.get("idProperty").and_then(Value::as_str);
                let table = store.table(r.portal, ty);
                for input in inputs {
                    let key = id_string(input.get("id"));
                    match find(table, id_prop, &key) {
                        Some(n) => {
                            if let Some(o) = table.get(&n) {
                                results.push(object_json(n, o, wanted.as_deref()));
                            }
                        }
                        None => missing.push(key),
                    }
                }
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
            out["numErrors"] = json!(missing.len());
            out["errors"] = json!([{
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some objects, they may be deleted or not exist.",
                "context": { "ids": missing },
            }]);
            return Reply::json(207, out);
        }
        Reply::json(if created_any { 201 } else { 200 }, out)
    }

    fn associate_default(
        &self,
        r: &Req<'_>,
        ty: &str,
        id: &str,
        to_ty: &str,
        to_id: &str,
    ) -> Reply {
        let (Some(from), Some(to)) = (parse_id(id), parse_id(to_id)) else {
            return validation(r.corr, "Object ids must be numeric.");
        };
        let fwd = assoc_type_id(ty, to_ty);
        let back = assoc_type_id(to_ty, ty);
        let mut store = self.lock();
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

    fn associate_labeled(
        &self,
        r: &Req<'_>,
        ty: &str,
        id: &str,
        to_ty: &str,
        to_id: &str,
    ) -> Reply {
        let (Some(from), Some(to)) = (parse_id(id), parse_id(to_id)) else {
            return validation(r.corr, "Object ids must be numeric.");
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
        let mut store = self.lock();
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

    fn unassociate(&self, r: &Req<'_>, ty: &str, id: &str, to_ty: &str, to_id: &str) -> Reply {
        if let (Some(from), Some(to)) = (parse_id(id), parse_id(to_id)) {
            let mut store = self.lock();
            for (a, b) in [((ty, from), (to_ty, to)), ((to_ty, to), (ty, from))] {
                if let Some(m) = store.assoc.get_mut(&(r.portal, a.0.to_string(), a.1)) {
                    m.remove(&(b.0.to_string(), b.1));
                }
            }
        }
        Reply::empty(204)
    }

    fn list_associations(&self, r: &Req<'_>, ty: &str, id: &str, to_ty: &str) -> Reply {
        let q = parse_query(r.query);
        let limit = query_limit(&q, 500, 500);
        let offset = q
            .iter()
            .find(|(k, _)| k == "after")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let Some(from) = parse_id(id) else {
            return validation(r.corr, "Object ids must be numeric.");
        };
        let store = self.lock();
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
}

fn link(store: &mut Store, portal: u64, from: (&str, u64), to: (&str, u64), type_id: i64) {
    store
        .assoc
        .entry((portal, from.0.to_string(), from.1))
        .or_default()
        .entry((to.0.to_string(), to.1))
        .or_default()
        .insert(type_id);
}

fn insert<'s>(
    store: &'s mut Store,
    portal: u64,
    ty: &str,
    props: BTreeMap<String, Option<String>>,
    now_ms: i64,
) -> (u64, &'s Obj) {
    let id = store.new_id();
    let mut obj = Obj {
        props: BTreeMap::new(),
        created: now_ms,
        updated: now_ms,
    };
    obj.props
        .insert("createdate".to_string(), Some(iso_ms(now_ms)));
    obj.props
        .insert("hs_object_id".to_string(), Some(id.to_string()));
    apply(&mut obj, props, now_ms);
    let table = store.table(portal, ty);
    let entry = table.entry(id).or_insert(obj);
    (id, entry)
}

fn apply(o: &mut Obj, props: BTreeMap<String, Option<String>>, now_ms: i64) {
    for (k, v) in props {
        // Callers cannot overwrite the identity of an object.
        if k != "hs_object_id" {
            o.props.insert(k, v);
        }
    }
    o.updated = now_ms;
    o.props
        .insert("lastmodifieddate".to_string(), Some(iso_ms(now_ms)));
}

fn find(table: &BTreeMap<u64, Obj>, id_prop: Option<&str>, key: &str) -> Option<u64> {
    match id_prop {
        Some(p) if p != "hs_object_id" => table
            .iter()
            .find(|(_, o)| {
                o.props
                    .get(p)
                    .and_then(|v| v.as_deref())
                    .is_some_and(|v| v.eq_ignore_ascii_case(key))
            })
            .map(|(id, _)| *id),
        _ => parse_id(key).filter(|n| table.contains_key(n)),
    }
}

fn object_json(id: u64, o: &Obj, wanted: Option<&[String]>) -> Value {
    let mut props = Map::new();
    match wanted {
        Some(list) => {
            for base in ["createdate", "hs_object_id", "lastmodifieddate"] {
                props.insert(base.to_string(), prop_value(o, base));
            }
            for p in list {
                props.insert(p.clone(), prop_value(o, p));
            }
        }
        None => {
            for (k, v) in &o.props {
                props.insert(k.clone(), v.clone().map_or(Value::Null, Value::String));
            }
        }
    }
    json!({
        "id": id.to_string(),
        "properties": props,
        "createdAt": iso_ms(o.created),
        "updatedAt": iso_ms(o.updated),
        "archived": false,
    })
}

fn prop_value(o: &Obj, name: &str) -> Value {
    o.props
        .get(name)
        .cloned()
        .flatten()
        .map_or(Value::Null, Value::String)
}

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

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn id_string(v: Option<&Value>) -> String {
    v.map(scalar_string).unwrap_or_default()
}

fn parse_id(s: &str) -> Option<u64> {
    s.parse().ok()
}

fn parse_body(r: &Req<'_>) -> Result<Value, Reply> {
    if r.body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(r.body).map_err(|e| {
        validation(
            r.corr,
            &format!(
                "Invalid input JSON on line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

fn input_props(v: &Value, corr: &str) -> Result<BTreeMap<String, Option<String>>, Reply> {
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
        Some(_) => return Err(validation(corr, "`properties` must be an object.")),
    }
    Ok(out)
}

fn requested_props(query: Option<&str>) -> Option<Vec<String>> {
    let props: Vec<String> = parse_query(query)
        .into_iter()
        .filter(|(k, _)| k == "properties")
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

fn query_limit(q: &[(String, String)], default: usize, max: usize) -> usize {
    q.iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// Accepts names, singular names and HubSpot's numeric object type ids.
fn object_type(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "0-1" | "contact" => "contacts".into(),
        "0-2" | "company" => "companies".into(),
        "0-3" | "deal" => "deals".into(),
        "0-5" | "ticket" => "tickets".into(),
        "0-7" | "product" => "products".into(),
        "0-8" | "line_item" => "line_items".into(),
        "0-14" | "quote" => "quotes".into(),
        _ => lower,
    }
}

fn type_id_of(ty: &str) -> String {
    match ty {
        "contacts" => "0-1",
        "companies" => "0-2",
        "deals" => "0-3",
        "tickets" => "0-5",
        "products" => "0-7",
        "line_items" => "0-8",
        "quotes" => "0-14",
        other => other,
    }
    .to_string()
}

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

fn not_found(corr: &str, id: &str) -> Reply {
    let mut body = hs_error(
        corr,
        "Object not found.  objectId are usually numeric.",
        "OBJECT_NOT_FOUND",
    );
    body["context"] = json!({ "id": [id] });
    Reply::json(404, body)
}

fn validation(corr: &str, message: &str) -> Reply {
    Reply::json(400, hs_error(corr, message, "VALIDATION_ERROR"))
}

pub(crate) fn route_not_found(corr: &str, method: &str, segments: &[&str]) -> Reply {
    Reply::json(404, http_util::route_not_found(corr, method, segments))
}

/// True for `YYYY-MM` and `YYYY-MM-beta`, HubSpot's date-versioned API segments.
pub(crate) fn is_date_version(s: &str) -> bool {
    let core = s.strip_suffix("-beta").unwrap_or(s);
    let b = core.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

/// Maps date-versioned object paths onto their v3 equivalents.
pub(crate) fn normalize<'a>(segments: &[&'a str]) -> Vec<&'a str> {
    match segments {
        ["crm", "objects", ver, rest @ ..] if is_date_version(ver) => {
            let mut v = vec!["crm", "v3", "objects"];
            v.extend_from_slice(rest);
            v
        }
        _ => segments.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_versions() {
        assert!(is_date_version("2025-09"));
        assert!(is_date_version("2026-03-beta"));
        assert!(!is_date_version("v3"));
        assert_eq!(
            normalize(&["crm", "objects", "2025-09", "contacts", "search"]),
            vec!["crm", "v3", "objects", "contacts", "search"]
        );
    }
}
