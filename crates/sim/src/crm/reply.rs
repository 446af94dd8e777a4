//! What a CRM handler answers: a status and an optional JSON body (the server turns it into
//! HTTP), and the HubSpot-shaped errors the handlers share.

use serde_json::{json, Value};

use crate::http_util::{hs_error, route_not_found};

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
        }
    }

    pub(super) fn empty(status: u16) -> Self {
        Reply { status, body: None }
    }

    pub(crate) fn route_not_found(corr: &str, method: &str, segments: &[&str]) -> Self {
        Reply::json(404, route_not_found(corr, method, segments))
    }

    pub(super) fn not_found(corr: &str, id: &str) -> Self {
        let mut body = hs_error(
            corr,
            "Object not found.  objectId are usually numeric.",
            "OBJECT_NOT_FOUND",
        );
        body["context"] = json!({ "id": [id] });
        Reply::json(404, body)
    }

    /// HubSpot's 404 for a single-object GET of an id that names nothing.
    pub(super) fn resource_not_found(corr: &str) -> Self {
        Reply::json(
            404,
            json!({ "status": "error", "message": "resource not found", "correlationId": corr }),
        )
    }

    pub(super) fn validation(corr: &str, message: &str) -> Self {
        Reply::json(400, hs_error(corr, message, "VALIDATION_ERROR"))
    }
}
