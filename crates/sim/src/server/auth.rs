//! Authentication: resolves `Authorization: Bearer <token>` or `?hapikey=` to the budget
//! owner it bills, with that owner's effective limits.

use hyper::body::Incoming;
use hyper::Request;

use super::state::Shared;
use crate::config::TokenKind;
use crate::http_util::parse_query;
use crate::limits::Caller;

/// None for a missing or unknown credential. A bearer header wins over a hapikey, so a
/// request carrying an unknown bearer token is rejected even if its hapikey is valid.
pub(super) fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Option<Caller> {
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
