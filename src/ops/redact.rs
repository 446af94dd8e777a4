//! Keeps credentials out of logs: paths and queries as they may be printed.

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

/// The path and query of a call as safe to log: token path segments and secret query
/// values replaced by `<redacted>`.
pub fn path_and_query(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    let mut redact_next = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if redact_next && !segment.is_empty() {
            out.push_str("<redacted>");
        } else {
            out.push_str(segment);
        }
        redact_next = TOKEN_PATH_PREFIXES.contains(&segment);
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _))
                    if SECRET_QUERY_KEYS
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(key)) =>
                {
                    out.push_str(key);
                    out.push_str("=<redacted>");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
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
}
