//! Hop-by-hop headers (RFC 9110 §7.6.1): what a proxy must not pass on.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// Headers that describe one connection, never the message: RFC 9110 §7.6.1 (`Connection`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) plus the non-standard
/// `Keep-Alive` and `Proxy-Connection` that old clients still send. Matched by name text,
/// which costs a few comparisons per header rather than building the list on every call.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes every hop-by-hop header, including those the `Connection` header names.
pub(crate) fn strip(headers: &mut HeaderMap) {
    // One pass over the names present instead of a hashed removal per listed header:
    // most messages carry one or none of them.
    let present: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    let connection: SmallVec<[HeaderValue; 2]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    for value in &connection {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',') {
            // By `&str`: a name that is not a valid header name removes nothing.
            headers.remove(name.trim());
        }
    }
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_connection_named_headers_but_keeps_end_to_end_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("x-other-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        for name in [
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
        ] {
            headers.insert(name, HeaderValue::from_static("x"));
        }
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["authorization", "content-type"]);
    }
}
