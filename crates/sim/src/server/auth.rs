//! Authentication: resolves `Authorization: Bearer <token>` or `?hapikey=` to the budget
//! owner it bills, with that owner's effective limits.

use hyper::body::Incoming;
use hyper::Request;

use super::state::Shared;
use crate::config::TokenKind;
use crate::http_util::parse_query;
use crate::limits::Caller;
use crate::oauth::AccessLookup;

/// What a call's credential is.
pub(super) enum Authenticated {
    Caller(Caller),
    /// Missing or unknown.
    Unknown,
    /// An access token the OAuth server issued, expired this long ago.
    Expired(std::time::Duration),
}

/// A bearer header wins over a hapikey, so a request carrying an unknown bearer token is
/// rejected even if its hapikey is valid.
pub(super) fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Authenticated {
    if let Some(token) = bearer(req) {
        if shared.tokens.contains_key(token) {
            return known(shared, req).map_or(Authenticated::Unknown, Authenticated::Caller);
        }
        return match shared.oauth.access(token, tokio::time::Instant::now()) {
            AccessLookup::Valid { app_id, hub_id, .. } => Authenticated::Caller(Caller {
                app_id,
                portal_id: hub_id,
                kind: TokenKind::Oauth,
                burst_limit: shared.burst_limit_for(app_id, hub_id),
                daily_limit: shared.config.daily_limit,
            }),
            AccessLookup::Expired { ago } => Authenticated::Expired(ago),
            AccessLookup::Unknown => Authenticated::Unknown,
        };
    }
    known(shared, req).map_or(Authenticated::Unknown, Authenticated::Caller)
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
}

/// A configured token or hapikey; None for a missing or unknown one.
fn known(shared: &Shared, req: &Request<Incoming>) -> Option<Caller> {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    if let Some(token) = bearer {
        let t = shared.tokens.get(token)?;
        return Some(Caller {
            app_id: t.app_id,
            portal_id: t.portal_id,
            kind: t.kind,
            burst_limit: t.burst_limit.unwrap_or(shared.config.burst_limit),
            daily_limit: t.daily_limit.unwrap_or(shared.config.daily_limit),
        });
    }
    let key = parse_query(req.uri().query())
        .into_iter()
        .find(|(k, _)| k == "hapikey")
        .map(|(_, v)| v)?;
    let h = shared.hapikeys.get(&key)?;
    Some(Caller {
        app_id: h.app_id,
        portal_id: h.portal_id,
        kind: TokenKind::Private,
        burst_limit: shared.burst_limit_for(h.app_id, h.portal_id),
        daily_limit: shared.config.daily_limit,
    })
}
