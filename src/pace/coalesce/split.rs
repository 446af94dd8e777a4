//! A batch read's answer turned back into the answers of the single GETs it carried.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::proxy::body::{self, Body};

/// How many reads one batch read answered, on each of their answers.
pub(crate) const COALESCED_HEADER: HeaderName = HeaderName::from_static("x-hubgate-coalesced");

/// What a batch read's answer means for the reads it carried.
pub(crate) enum Answers {
    /// Each id's record (absent: HubSpot has no such object).
    Records(HashMap<String, Bytes>),
    /// The batch was refused as a whole for a reason a single GET would not meet (a 400):
    /// each read asks for itself.
    EachAlone,
    /// An answer for every read alike (a 401, a 5xx or 429 after retries): each gets a copy.
    Same,
}

/// Reads `status` and `body` of a batch read. HubSpot does not keep input order, so
/// records are matched by `id`; missing ids come as a 207 with `OBJECT_NOT_FOUND` (or, all
/// of them missing, as a 404 or a 207 with no results).
pub(crate) fn answers(status: StatusCode, body: &[u8]) -> Answers {
    match status.as_u16() {
        200 | 207 => {}
        404 => return Answers::Records(HashMap::new()),
        400 => return Answers::EachAlone,
        _ => return Answers::Same,
    }
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return Answers::EachAlone;
    };
    let Some(Value::Array(results)) = answer.remove("results") else {
        return Answers::EachAlone;
    };
    let mut records = HashMap::with_capacity(results.len());
    for record in results {
        let Some(id) = record.get("id").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        if let Ok(json) = serde_json::to_vec(&record) {
            records.insert(id, Bytes::from(json));
        }
    }
    Answers::Records(records)
}

/// The answer a single GET of a found record gets: the record alone, as JSON.
pub(crate) fn found(record: Bytes, from: &HeaderMap, batch_size: usize) -> Response<Body> {
    answer(StatusCode::OK, record, from, batch_size)
}

/// The answer a single GET of a missing record gets: HubSpot's 404.
pub(crate) fn missing(from: &HeaderMap, batch_size: usize) -> Response<Body> {
    let correlation = from
        .get("x-hubspot-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = serde_json::json!({
        "status": "error",
        "message": "resource not found",
        "correlationId": correlation,
    });
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    answer(StatusCode::NOT_FOUND, body, from, batch_size)
}

/// A copy of the batch's own answer, for an answer every read gets alike.
pub(crate) fn same(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    batch_size: usize,
) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    response
        .headers_mut()
        .insert(COALESCED_HEADER, HeaderValue::from(batch_size));
    response
}

fn answer(status: StatusCode, body: Bytes, from: &HeaderMap, batch_size: usize) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // HubSpot's own headers (rate-limit counts, correlation id) are as true of each read
    // as of the batch; the body's framing is not.
    for (name, value) in from {
        if !is_framing(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(COALESCED_HEADER, HeaderValue::from(batch_size));
    response
}

fn is_framing(name: &HeaderName) -> bool {
    use http::header::*;
    [
        CONTENT_LENGTH,
        CONTENT_TYPE,
        CONTENT_ENCODING,
        TRANSFER_ENCODING,
        CONNECTION,
        ETAG,
    ]
    .contains(name)
        || name.as_str().starts_with("x-hubgate-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_matched_by_id_whatever_their_order() {
        let body = br#"{"status":"COMPLETE","results":[{"id":"2","properties":{}},{"id":"1","properties":{}}],"numErrors":1,"errors":[{"category":"OBJECT_NOT_FOUND","context":{"ids":["3"]}}]}"#;
        let Answers::Records(records) = answers(StatusCode::MULTI_STATUS, body) else {
            panic!("a 207 names records");
        };
        assert_eq!(records.len(), 2);
        assert!(records["1"].starts_with(br#"{"id":"1""#));
        assert!(!records.contains_key("3"));
        assert!(matches!(
            answers(StatusCode::BAD_REQUEST, b"{}"),
            Answers::EachAlone
        ));
        assert!(matches!(
            answers(StatusCode::NOT_FOUND, b""),
            Answers::Records(r) if r.is_empty()
        ));
    }
}
