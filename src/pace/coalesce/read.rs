//! Which calls are single-record CRM reads a batch read can answer, what makes two of them
//! share one batch, and the batch read that carries them.

use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::{json, Value};

use crate::hubspot::Owner;

/// One read a batch can carry: the batch it fits and the record it asks for.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) key: BatchKey,
    pub(crate) id: String,
}

/// What reads must share to ride one batch read: HubSpot answers a batch with one
/// credential, one object type and one query, so only reads that agree on all of them
/// can be answered from it exactly as their own GET would have been.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub(crate) owner: Owner,
    /// The credential exactly as sent; never printed.
    authorization: Option<HeaderValue>,
    hapikey: Option<String>,
    /// `v3`, or the dated version such as `2026-03`.
    version: String,
    object_type: String,
    archived: bool,
    /// Sorted and deduplicated; `None` asks for HubSpot's default set. Reads are grouped by
    /// identical lists rather than merged: HubSpot adds properties nobody asked for (the
    /// defaults of a selection), and a merged answer cannot tell those apart from another
    /// caller's choice.
    properties: Option<Vec<String>>,
    history: Vec<String>,
}

impl std::fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchKey")
            .field("owner", &self.owner)
            .field("object_type", &self.object_type)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl BatchKey {
    /// HubSpot takes 100 inputs per batch read, 50 when it also answers property history.
    pub(crate) fn cap(&self, max_batch: usize) -> usize {
        if self.history.is_empty() {
            max_batch
        } else {
            max_batch.min(50)
        }
    }

    /// The batch read carrying `ids` (each once): target, and body.
    pub(crate) fn batch_request(&self, ids: &[&str]) -> (Uri, Vec<u8>) {
        let mut target = match self.version.as_str() {
            "v3" => format!("/crm/v3/objects/{}/batch/read", self.object_type),
            dated => format!("/crm/objects/{dated}/{}/batch/read", self.object_type),
        };
        target.push_str(if self.archived {
            "?archived=true"
        } else {
            "?archived=false"
        });
        if let Some(key) = &self.hapikey {
            target.push_str("&hapikey=");
            target.push_str(key);
        }
        let inputs: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        let mut body = json!({ "inputs": inputs });
        if let Some(properties) = &self.properties {
            body["properties"] = json!(properties);
        }
        if !self.history.is_empty() {
            body["propertiesWithHistory"] = json!(self.history);
        }
        let uri = target
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/crm/v3/objects/contacts/batch/read"));
        (uri, serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The headers a batch read goes out with: the credential and client of the reads it
    /// carries, JSON both ways, and no compression (hubgate reads the answer).
    pub(crate) fn batch_headers(&self, first: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(authorization) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, authorization.clone());
        }
        if let Some(agent) = first.get(http::header::USER_AGENT) {
            headers.insert(http::header::USER_AGENT, agent.clone());
        }
        let json = HeaderValue::from_static("application/json");
        headers.insert(http::header::CONTENT_TYPE, json.clone());
        headers.insert(http::header::ACCEPT, json);
        headers
    }
}

/// The read `method uri` asks for, when a batch read can answer it exactly; `None` for
/// everything else, which is forwarded as it came. Strict on purpose: only plain ids and
/// property names (letters, digits, `_`, `-`, `.`), so what the batch names is exactly
/// what the GET named.
pub(crate) fn single_read(
    owner: Owner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<Read> {
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0");
    if method != Method::GET || has_body {
        return None;
    }
    let mut segments = uri.path().strip_prefix('/')?.split('/');
    let (version, object_type, id) = match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("crm"), Some("v3"), Some("objects"), Some(ty), Some(id), None) => ("v3", ty, id),
        (Some("crm"), Some("objects"), Some(version), Some(ty), Some(id), None)
            if is_date_version(version) =>
        {
            (version, ty, id)
        }
        _ => return None,
    };
    if !plain(object_type) || !plain(id) {
        return None;
    }
    let mut key = BatchKey {
        owner,
        authorization: headers.get(http::header::AUTHORIZATION).cloned(),
        hapikey: None,
        version: version.to_string(),
        object_type: object_type.to_string(),
        archived: false,
        properties: None,
        history: Vec::new(),
    };
    let mut properties: Vec<String> = Vec::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace("%2C", ",").replace("%2c", ",");
        let names = || {
            value
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
        };
        if !value.split(',').all(|p| p.is_empty() || plain(p)) {
            return None;
        }
        match name {
            "properties" => properties.extend(names()),
            "propertiesWithHistory" => key.history.extend(names()),
            "archived" => match value.as_str() {
                "true" => key.archived = true,
                "false" => key.archived = false,
                _ => return None,
            },
            "hapikey" if key.hapikey.is_none() && !value.is_empty() => key.hapikey = Some(value),
            // `associations` has no batch equivalent; `idProperty` answers with record ids
            // that cannot be matched back to the values asked for; anything else is
            // something a batch read would not honour.
            _ => return None,
        }
    }
    if !properties.is_empty() {
        properties.sort_unstable();
        properties.dedup();
        key.properties = Some(properties);
    }
    key.history.sort_unstable();
    key.history.dedup();
    Some(Read {
        key,
        id: id.to_string(),
    })
}

fn plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `YYYY-MM` and `YYYY-MM-beta`, HubSpot's dated API versions.
fn is_date_version(segment: &str) -> bool {
    let core = segment.strip_suffix("-beta").unwrap_or(segment).as_bytes();
    core.len() == 7
        && core[4] == b'-'
        && core[..4].iter().all(u8::is_ascii_digit)
        && core[5..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(target: &str) -> Option<Read> {
        single_read(
            Owner::Anonymous,
            &Method::GET,
            &target.parse().unwrap(),
            &HeaderMap::new(),
        )
    }

    #[test]
    fn only_reads_a_batch_answers_exactly() {
        assert_eq!(read("/crm/v3/objects/contacts/101").unwrap().id, "101");
        assert!(read("/crm/objects/2026-03/contacts/101?properties=email").is_some());
        assert!(read("/crm/v3/objects/contacts/101?associations=companies").is_none());
        assert!(read("/crm/v3/objects/contacts/a@b.com?idProperty=email").is_none());
        assert!(read("/crm/v3/objects/contacts/101?limit=3").is_none());
        assert!(read("/crm/v3/objects/contacts").is_none());
        assert!(read("/crm/v3/objects/contacts/101/").is_none());
        assert!(read("/crm/v3/objects/contacts/%31").is_none());
        let a = read("/crm/v3/objects/contacts/1?properties=b,a&properties=a").unwrap();
        let b = read("/crm/v3/objects/contacts/2?properties=a%2Cb").unwrap();
        assert!(a.key == b.key);
        let c = read("/crm/v3/objects/contacts/2?properties=a").unwrap();
        assert!(a.key != c.key);
        let h = read("/crm/v3/objects/contacts/2?propertiesWithHistory=a").unwrap();
        assert_eq!(h.key.cap(100), 50);
    }
}
