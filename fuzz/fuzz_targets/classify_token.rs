//! Credentials as callers send them: `Authorization` values and `hapikey` queries of any
//! bytes, the kind of token they hold, and the introspection path built from it.
//!
//! Input: lines `authorization: VALUE` (any number) and `target: PATH?QUERY`
//! (fuzz/corpus/classify_token).
#![no_main]

use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Uri};
use hubgate::hubspot::{credential_of, oauth_introspection_path, Credential, TokenKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut uri = Uri::default();
    for line in input.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"authorization: ") {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(AUTHORIZATION, value);
            }
        } else if let Some(target) = line.strip_prefix(b"target: ") {
            uri = Uri::try_from(target).unwrap_or_default();
        }
    }
    match credential_of(&headers, &uri) {
        Credential::Bearer(token) => {
            assert!(!token.is_empty());
            if TokenKind::of(&token) == TokenKind::OAuth {
                // Whatever the token holds, it is one segment of a valid request path.
                let path = oauth_introspection_path(&token);
                path.parse::<PathAndQuery>()
                    .expect("the introspection path is a valid URI path");
                assert_eq!(path.matches('/').count(), 4, "{path}");
                assert!(!path.contains('?') && !path.contains('#'), "{path}");
            }
        }
        Credential::HapiKey(key) => assert!(!key.is_empty()),
        Credential::None => {}
    }
});
