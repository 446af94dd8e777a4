//! In-memory CRM: objects per (portal, object type), v4 associations, and the JSON shapes the
//! official HubSpot SDKs deserialize. This file owns the route table; each concern has its
//! own module.
//!
//! Fidelity is deliberately loose where the gateway does not care (filters, sorting, property
//! selection) and exact where SDKs would fail to parse (field names, string ids, timestamps).
//! Archived objects are removed outright; `associations` inside create inputs are ignored.

mod associations;
mod batch;
mod objects;
mod paths;
mod reply;
mod request;
mod search;
mod store;

pub(crate) use paths::normalize;
pub(crate) use reply::Reply;
pub(crate) use request::Req;

use paths::object_type;
use store::Db;

pub(crate) struct Crm {
    db: Db,
}

impl Crm {
    pub(crate) fn new() -> Self {
        Crm { db: Db::default() }
    }

    pub(crate) fn reset(&self) {
        self.db.reset();
    }

    /// Answers a CRM route, or None when the path is not one the simulator knows.
    pub(crate) fn handle(&self, r: &Req<'_>) -> Option<Reply> {
        let db = &self.db;
        let m = r.method;
        match r.segments {
            ["crm", "v3", "objects", ty] => match m {
                "GET" => Some(objects::list(db, r, &object_type(ty))),
                "POST" => Some(objects::create(db, r, &object_type(ty))),
                _ => None,
            },
            ["crm", "v3", "objects", ty, "search"] if m == "POST" => {
                Some(search::search(db, r, &object_type(ty)))
            }
            ["crm", "v3", "objects", ty, "batch", op] if m == "POST" => {
                Some(batch::batch(db, r, &object_type(ty), op))
            }
            ["crm", "v3", "objects", ty, id] => {
                let ty = object_type(ty);
                match m {
                    "GET" => Some(objects::get(db, r, &ty, id)),
                    "PATCH" => Some(objects::update(db, r, &ty, id)),
                    "DELETE" => Some(objects::archive(db, r, &ty, id)),
                    _ => None,
                }
            }
            ["crm", "v4", "objects", ty, id, "associations", "default", to_ty, to_id]
                if m == "PUT" =>
            {
                Some(associations::associate_default(
                    db,
                    r,
                    &object_type(ty),
                    id,
                    &object_type(to_ty),
                    to_id,
                ))
            }
            ["crm", "v4", "objects", ty, id, "associations", to_ty, to_id] => match m {
                "PUT" => Some(associations::associate_labeled(
                    db,
                    r,
                    &object_type(ty),
                    id,
                    &object_type(to_ty),
                    to_id,
                )),
                "DELETE" => Some(associations::unassociate(
                    db,
                    r,
                    &object_type(ty),
                    id,
                    &object_type(to_ty),
                    to_id,
                )),
                _ => None,
            },
            ["crm", "v4", "objects", ty, id, "associations", to_ty] if m == "GET" => Some(
                associations::list_associations(db, r, &object_type(ty), id, &object_type(to_ty)),
            ),
            _ => None,
        }
    }
}
