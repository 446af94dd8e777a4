//! The CRM's data: objects per (portal, object type), v4 association links, and the object
//! JSON shape the SDKs deserialize.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use crate::clock::iso_ms;

pub(super) struct Obj {
    pub(super) props: BTreeMap<String, Option<String>>,
    created: i64,
    updated: i64,
}

/// The objects of one (portal, object type), by id; ordered so that paging is stable.
pub(super) type Table = BTreeMap<u64, Obj>;

type AssocKey = (u64, String, u64);

#[derive(Default)]
pub(super) struct Store {
    next_id: u64,
    pub(super) tables: HashMap<(u64, String), Table>,
    /// (portal, fromType, fromId) -> (toType, toId) -> association type ids.
    pub(super) assoc: HashMap<AssocKey, BTreeMap<(String, u64), BTreeSet<i64>>>,
}

impl Store {
    pub(super) fn table(&mut self, portal: u64, ty: &str) -> &mut Table {
        self.tables.entry((portal, ty.to_string())).or_default()
    }

    /// Read-only lookup that, unlike `table`, does not create an empty table.
    pub(super) fn existing_table(&self, portal: u64, ty: &str) -> Option<&Table> {
        self.tables.get(&(portal, ty.to_string()))
    }

    fn new_id(&mut self) -> u64 {
        // HubSpot ids are large numbers; starting high makes accidental index-like use obvious.
        self.next_id += 1;
        100_000 + self.next_id
    }
}

/// The store behind one lock: every handler touches few objects and holds it briefly.
#[derive(Default)]
pub(super) struct Db(Mutex<Store>);

impl Db {
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic in one handler must not turn every later request into a panic too.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn reset(&self) {
        *self.lock() = Store::default();
    }
}

/// Object ids are numeric; anything else names no object.
pub(super) fn parse_id(s: &str) -> Option<u64> {
    s.parse().ok()
}

pub(super) fn insert<'s>(
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

pub(super) fn apply(o: &mut Obj, props: BTreeMap<String, Option<String>>, now_ms: i64) {
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

/// The object `key` names: its id, or the value of a unique property (`idProperty`).
pub(super) fn find(table: &Table, id_prop: Option<&str>, key: &str) -> Option<u64> {
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

/// Adds one directed association; callers link both directions, as HubSpot does.
pub(super) fn link(
    store: &mut Store,
    portal: u64,
    from: (&str, u64),
    to: (&str, u64),
    type_id: i64,
) {
    store
        .assoc
        .entry((portal, from.0.to_string(), from.1))
        .or_default()
        .entry((to.0.to_string(), to.1))
        .or_default()
        .insert(type_id);
}

/// `SimplePublicObject`: string id, string properties, ISO timestamps. With a property
/// selection, the three base properties are always present and unknown ones are null.
pub(super) fn object_json(id: u64, o: &Obj, wanted: Option<&[String]>) -> Value {
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

/// Adds `propertiesWithHistory`: each named property's current value as its one version
/// (the simulator keeps no older ones), stamped when the object last changed.
pub(super) fn with_history(j: &mut Value, o: &Obj, names: &[String]) {
    let mut history = Map::new();
    for name in names {
        let versions: Vec<Value> = o
            .props
            .get(name)
            .cloned()
            .flatten()
            .map(|value| {
                json!({
                    "value": value,
                    "timestamp": iso_ms(o.updated),
                    "sourceType": "API",
                })
            })
            .into_iter()
            .collect();
        history.insert(name.clone(), Value::Array(versions));
    }
    j["propertiesWithHistory"] = Value::Object(history);
}
