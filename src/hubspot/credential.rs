//! What a call presents as its credential: a bearer token (and which kind, which says how
//! HubSpot is asked about it) or a legacy `?hapikey=`.

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
            if percent_decode(key) == "hapikey" {
                let value = percent_decode(value);
                if !value.is_empty() {
                    return Credential::HapiKey(value);
                }
            }
        }
    }
    Credential::None
}

/// Decodes `application/x-www-form-urlencoded` text; malformed escapes stay as they are,
/// because a query is the caller's and must never make resolution fail.
fn percent_decode(s: &str) -> String {
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
