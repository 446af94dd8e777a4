//! Who may call the admin endpoints that change the running gateway: never a browser page
//! (a form or `fetch()` from any site the operator visits can reach a loopback port), and,
//! when `[admin] token_sha256` is set, only a caller presenting that token.

use http::{header, HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a mutating admin call is refused: its status and HubSpot-shaped JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminRefusal {
    /// A browser sent it on behalf of a page.
    FromBrowser,
    /// `[admin] token_sha256` is set and the call lacks the token, or has another.
    Unauthenticated,
}

impl AdminRefusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            AdminRefusal::FromBrowser => StatusCode::FORBIDDEN,
            AdminRefusal::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }

    pub(crate) fn body(self) -> &'static str {
        match self {
            AdminRefusal::FromBrowser => {
                r#"{"status":"error","message":"a browser sent this call (it carries Origin or Sec-Fetch-Site): the admin endpoints that change hubgate refuse web pages; call them from a script or curl, which send neither","category":"FORBIDDEN"}"#
            }
            AdminRefusal::Unauthenticated => {
                r#"{"status":"error","message":"this admin endpoint changes hubgate and admin.token_sha256 is set: send the admin token as Authorization: Bearer <token> (the token whose SHA-256 the config holds)","category":"INVALID_AUTHENTICATION"}"#
            }
        }
    }

    /// `WWW-Authenticate` for a missing or wrong token, as RFC 6750 asks of a 401.
    pub(crate) fn challenge(self) -> Option<HeaderValue> {
        (self == AdminRefusal::Unauthenticated).then(|| HeaderValue::from_static("Bearer"))
    }
}

/// Whether a call with `headers` may change the gateway, given the digest of the admin
/// token (`None`: no token configured).
pub(crate) fn authorize(headers: &HeaderMap, token: Option<&[u8; 32]>) -> Result<(), AdminRefusal> {
    if from_browser(headers) {
        return Err(AdminRefusal::FromBrowser);
    }
    let Some(expected) = token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if bool::from(Sha256::digest(token.as_bytes()).ct_eq(expected)) => Ok(()),
        _ => Err(AdminRefusal::Unauthenticated),
    }
}

/// Browsers add `Origin` to every POST a page makes and `Sec-Fetch-Site` to every request;
/// scripts and curl send neither unless told to. `Sec-Fetch-Site: none` is the user typing
/// the URL, which cannot make a POST.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() != b"none")
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_checked_against_its_digest_and_browsers_are_refused() {
        let digest: [u8; 32] = Sha256::digest(b"secret").into();
        let token = Some(&digest);
        assert_eq!(authorize(&headers(&[]), None), Ok(()));
        assert_eq!(
            authorize(&headers(&[("authorization", "bearer secret")]), token),
            Ok(())
        );
        for wrong in ["Bearer secreT", "Basic secret", "Bearer", "Bearer  "] {
            assert_eq!(
                authorize(&headers(&[("authorization", wrong)]), token),
                Err(AdminRefusal::Unauthenticated),
                "{wrong}"
            );
        }
        assert_eq!(
            authorize(&headers(&[]), token),
            Err(AdminRefusal::Unauthenticated)
        );
        let browser = headers(&[("authorization", "Bearer secret"), ("origin", "null")]);
        assert_eq!(authorize(&browser, token), Err(AdminRefusal::FromBrowser));
        assert_eq!(
            authorize(&headers(&[("sec-fetch-site", "same-origin")]), None),
            Err(AdminRefusal::FromBrowser)
        );
        assert_eq!(
            authorize(&headers(&[("sec-fetch-site", "none")]), None),
            Ok(())
        );
    }
}
