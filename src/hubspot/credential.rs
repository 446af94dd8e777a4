//! What a call presents as its credential: a bearer token (and which kind, which says how
//! HubSpot is asked about it) or a legacy `?hapikey=`, and never more than one.

use http::{header, HeaderMap, Uri};

/// What a call presents as its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
    HapiKey(String),
    None,
}

/// Reads `Authorization: Bearer <token>` (scheme case-insensitive), else a `hapikey` query
/// parameter, else None.
pub fn credential_of(headers: &HeaderMap, uri: &Uri) -> Credential {
    for value in headers.get_all(header::AUTHORIZATION) {
        // Lossy, not rejected: a token with non-UTF-8 bytes is HubSpot's to refuse, and the
        // caller must still get HubSpot's 401 rather than one of ours.
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = value.trim();
        let Some((scheme, token)) = value.split_once([' ', '\t']) else {
            continue;
        };
        let token = token.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
            return Credential::Bearer(token.to_string());
        }
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if form_decode(key) == "hapikey" {
                let value = form_decode(value);
                if !value.is_empty() {
                    return Credential::HapiKey(value);
                }
            }
        }
    }
    Credential::None
}

/// A call presenting more than one credential: HubSpot would receive them all, so hubgate
/// could not know whose budget the call spends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this call presents {0}; hubgate paces a call under the one credential HubSpot reads, and cannot tell which of these that is. Send exactly one credential: one `Authorization: Bearer` header or one `hapikey` query parameter")]
pub struct TwoCredentials(&'static str);

/// Refuses a call with more than one `Authorization` header or `hapikey` query parameter
/// (its name read as [`credential_of`] reads it), or with one of each.
pub fn single_credential(headers: &HeaderMap, uri: &Uri) -> Result<(), TwoCredentials> {
    let authorizations = headers.get_all(header::AUTHORIZATION).iter().count();
    let hapikeys = uri.query().map_or(0, |query| {
        query
            .split('&')
            .filter(|pair| form_decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) == "hapikey")
            .count()
    });
    match (authorizations, hapikeys) {
        (0, 0) | (1, 0) | (0, 1) => Ok(()),
        (0, _) => Err(TwoCredentials("more than one `hapikey` query parameter")),
        (_, 0) => Err(TwoCredentials("more than one `Authorization` header")),
        _ => Err(TwoCredentials(
            "both an `Authorization` header and a `hapikey` query parameter",
        )),
    }
}

/// Decodes `application/x-www-form-urlencoded` text; malformed escapes stay as they are,
/// because a query is the caller's and must never make resolution fail. Whatever reads a
/// query parameter's name (extraction, redaction) reads it through this.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which introspection endpoint can name a bearer token's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `pat-…`: a private app's access token, looked up with
    /// `POST /oauth/v2/private-apps/get/access-token-info`.
    PrivateApp,
    /// Anything else: an OAuth access token, looked up with
    /// `GET /oauth/v1/access-tokens/{token}`.
    OAuth,
}

impl TokenKind {
    pub fn of(token: &str) -> TokenKind {
        if token.starts_with("pat-") {
            TokenKind::PrivateApp
        } else {
            TokenKind::OAuth
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(authorizations: &[&str], uri: &str) -> Result<(), TwoCredentials> {
        let mut headers = HeaderMap::new();
        for value in authorizations {
            headers.append(header::AUTHORIZATION, value.parse().unwrap());
        }
        single_credential(&headers, &uri.parse().unwrap())
    }

    #[test]
    fn one_credential_at_most() {
        assert!(presented(&[], "/x").is_ok());
        assert!(presented(&["Bearer a"], "/x?hapikeys=1&xhapikey=2").is_ok());
        assert!(presented(&[], "/x?hapikey=k&limit=1").is_ok());
        for (authorizations, uri) in [
            (&["Bearer a", "Bearer b"][..], "/x"),
            (&["Bearer a"][..], "/x?hapikey=k"),
            (&["Basic dXNlcjpwYXNz"][..], "/x?hapi%6Bey=k"),
            (&[][..], "/x?hapikey=a&hapikey"),
        ] {
            assert!(
                presented(authorizations, uri).is_err(),
                "{authorizations:?} {uri}"
            );
        }
    }
}
