//! Keeps credentials out of logs: paths and queries as they may be printed.

use crate::hubspot::form_decode;
use crate::hubspot::path::decode_unreserved;

/// Query parameters whose values are secrets (HubSpot's legacy API key, OAuth codes,
/// client secrets, tokens).
const SECRET_QUERY_KEYS: [&str; 6] = [
    "hapikey",
    "access_token",
    "refresh_token",
    "client_secret",
    "code",
    "token",
];

/// Path segments after which HubSpot puts a token in the path itself.
const TOKEN_PATH_PREFIXES: [&str; 2] = ["access-tokens", "refresh-tokens"];

/// The most a log line, metric or admin answer may say about a secret: the first 4 bytes
/// of its SHA-256, in hex. Enough to tell two credentials apart, useless for finding one.
pub fn short_digest(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..4])
}

/// The path and query of a call as safe to log: whatever follows a token path segment,
/// and secret query values, replaced by `<redacted>`. Names are read in the decoded form
/// extraction and HubSpot read them (`hapi%6Bey` is `hapikey`, `access%2Dtokens` is
/// `access-tokens`), so no spelling of a name lets its secret through.
pub fn path_and_query(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    match token_starts_at(path) {
        Some(start) if start < path.len() => {
            out.push_str(&path[..start]);
            out.push_str("<redacted>");
        }
        _ => out.push_str(path),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_query_key(key) => {
                    out.push_str(key);
                    out.push_str("=<redacted>");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

fn is_secret_query_key(key: &str) -> bool {
    let key = if key.contains(['%', '+']) {
        std::borrow::Cow::Owned(form_decode(key))
    } else {
        std::borrow::Cow::Borrowed(key)
    };
    SECRET_QUERY_KEYS
        .iter()
        .any(|secret| secret.eq_ignore_ascii_case(&key))
}

fn is_token_prefix(name: &str) -> bool {
    TOKEN_PATH_PREFIXES
        .iter()
        .any(|prefix| prefix.eq_ignore_ascii_case(name))
}

/// Where the token part of `path` begins: everything after the first token path segment,
/// however many slashes or dot segments come between (a server may merge or resolve them),
/// or the segment itself when an escaped slash hides the prefix inside it.
fn token_starts_at(path: &str) -> Option<usize> {
    let mut offset = 0;
    for segment in path.split('/') {
        let end = offset + segment.len();
        let name = decode_unreserved(segment);
        let name = name.split(';').next().unwrap_or_default();
        if is_token_prefix(name) {
            return Some(end + 1);
        }
        if segment.contains(['%', '\\']) {
            let decoded = form_decode(segment);
            let mut inner: Vec<&str> = decoded.split(['/', '\\']).collect();
            inner.pop();
            if inner.into_iter().any(is_token_prefix) {
                return Some(offset);
            }
        }
        offset = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_tokens_in_paths_and_queries() {
        assert_eq!(
            path_and_query("/oauth/v1/access-tokens/CJSP5qf1KhICAQEY", None),
            "/oauth/v1/access-tokens/<redacted>"
        );
        assert_eq!(
            path_and_query("/contacts/v1/lists", Some("hapikey=abc&count=2&HAPIKEY=x")),
            "/contacts/v1/lists?hapikey=<redacted>&count=2&HAPIKEY=<redacted>"
        );
        assert_eq!(
            path_and_query(
                "/crm/v3/objects/contacts",
                Some("limit=10&properties=a&properties=b")
            ),
            "/crm/v3/objects/contacts?limit=10&properties=a&properties=b"
        );
    }

    #[test]
    fn reads_names_as_extraction_does() {
        for (path, query, shown) in [
            (
                "/x",
                Some("hapi%6Bey=s&%68apikey=s"),
                "/x?hapi%6Bey=<redacted>&%68apikey=<redacted>",
            ),
            (
                "/x",
                Some("refresh%5Ftoken=s&a=1"),
                "/x?refresh%5Ftoken=<redacted>&a=1",
            ),
            (
                "/oauth/v1/access-tokens//s",
                None,
                "/oauth/v1/access-tokens/<redacted>",
            ),
            (
                "/oauth/v1/access%2Dtokens/s",
                None,
                "/oauth/v1/access%2Dtokens/<redacted>",
            ),
            (
                "/oauth/v1/access-tokens/./s/x",
                None,
                "/oauth/v1/access-tokens/<redacted>",
            ),
            ("/oauth/v1/access-tokens%2Fs", None, "/oauth/v1/<redacted>"),
            ("/oauth/v1/access-tokens/", None, "/oauth/v1/access-tokens/"),
            ("/oauth/v1/access-tokens", None, "/oauth/v1/access-tokens"),
        ] {
            assert_eq!(path_and_query(path, query), shown, "{path} {query:?}");
        }
    }
}
