//! Who is calling: the caller's key when `[inbound] require_caller_key` is on, its name
//! (the key's caller, else `X-Hubgate-Caller`, else its IP address), its priority
//! (`X-Hubgate-Priority`, within what its entry allows when keys are on), its weight among
//! the owner's callers, and its optional rate cap — everything `[[callers]]` and `[inbound]`
//! configure, in one registry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderName, Request};
use hubgate_engine::{Priority, Seat};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::body::Body;
use super::peer::PeerAddr;
use crate::config::{caller_name_problem, key_digest, CallerConfig, InboundConfig};
use crate::hubspot::Owner;
use crate::ops::redact;

const CALLER_HEADER: HeaderName = HeaderName::from_static("x-hubgate-caller");
const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-hubgate-priority");

/// Why a call was refused for who it says it is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallerRefusal {
    /// No known caller key (`[inbound] require_caller_key`). The key itself is never echoed.
    #[error("{}", unauthorized_message(header, *problem))]
    Unauthorized {
        /// The key header as configured (`[inbound] key_header`).
        header: String,
        problem: KeyProblem,
    },
    /// A hubgate header (`X-Hubgate-Caller`, `X-Hubgate-Priority`) hubgate cannot use.
    #[error("{0}")]
    BadHeader(String),
    /// A keyed caller asked for a priority its `[[callers]]` entry does not list.
    #[error("caller {caller:?} may not send X-Hubgate-Priority: {asked}; its [[callers]] entry allows {}; send one of those, or ask the gateway's operator to add {asked:?} to the entry's priorities", allowed.join(", "))]
    PriorityNotAllowed {
        caller: String,
        asked: &'static str,
        allowed: Vec<&'static str>,
    },
}

/// What a caller refused for its key must do about it.
fn unauthorized_message(header: &str, problem: KeyProblem) -> String {
    let what = match problem {
        KeyProblem::Missing => format!("this call has no {header} header"),
        KeyProblem::Repeated => format!("this call has more than one {header} header"),
        KeyProblem::Unknown => format!("the key in {header} is not one this hubgate knows"),
    };
    format!("{what}: this hubgate requires a caller key ([inbound] require_caller_key); send exactly one {header} header with your caller key, or ask the gateway's operator to add the key's SHA-256 (hubgate hash-key) to your [[callers]] entry as key_sha256")
}

/// The configured callers: keys, weights and caps, built whole from `[[callers]]` and
/// `[inbound]` so that a new configuration replaces it in one piece.
#[derive(Debug)]
pub struct Callers {
    weights: HashMap<String, u32>,
    /// GCRA per capped caller: a cap really is a rate (unlike HubSpot's rolling windows).
    /// Shared, so a reload keeps the limiter (and what it has counted) of an unchanged cap.
    caps: HashMap<String, Cap>,
    /// `Some` when every call must present a key.
    keys: Option<CallerKeys>,
    /// The priorities each caller may ask for; consulted only when keys are required,
    /// since without a key any call can claim any name.
    priorities: HashMap<String, Vec<Priority>>,
    /// The portals whose brokered installs each caller may use, when keys are required.
    portals: HashMap<String, Vec<u64>>,
}

/// What `[inbound] require_caller_key` checks.
#[derive(Debug)]
struct CallerKeys {
    header: HeaderName,
    /// The header as configured, for messages.
    header_display: String,
    /// (SHA-256 of the key, caller name). Searched whole, in constant time per entry, so
    /// the time taken says nothing about which hash came close.
    known: Vec<([u8; 32], String)>,
}

/// The caller a valid key named; set by the auth layer, read by `Callers::identify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthenticatedCaller(pub(crate) String);

/// Why a call without a valid caller key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    Missing,
    Repeated,
    Unknown,
}

#[derive(Debug)]
struct Cap {
    per_second: NonZeroU32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// The name and seat of one call.
#[derive(Debug, Clone)]
pub(crate) struct Identified {
    pub(crate) name: Arc<str>,
    pub(crate) seat: Seat,
}

impl Callers {
    pub fn new(config: &[CallerConfig], inbound: &InboundConfig) -> Callers {
        let weights = config
            .iter()
            .map(|c| (c.name.clone(), c.weight.max(1)))
            .collect();
        let caps = config
            .iter()
            .filter_map(|c| {
                let per_second = NonZeroU32::new(c.max_rps?)?;
                let limiter = Arc::new(RateLimiter::direct(Quota::per_second(per_second)));
                Some((
                    c.name.clone(),
                    Cap {
                        per_second,
                        limiter,
                    },
                ))
            })
            .collect();
        let priorities = config
            .iter()
            .map(|c| {
                let allowed = Priority::ALL
                    .into_iter()
                    .filter(|p| c.priorities.iter().any(|name| name == p.as_label()))
                    .collect();
                (c.name.clone(), allowed)
            })
            .collect();
        let portals = config
            .iter()
            .map(|c| (c.name.clone(), c.portals.clone()))
            .collect();
        let keys = inbound.require_caller_key.then(|| CallerKeys {
            header: HeaderName::from_bytes(inbound.key_header.as_bytes())
                .unwrap_or_else(|_| HeaderName::from_static("x-hubgate-key")),
            header_display: inbound.key_header.clone(),
            known: config
                .iter()
                .filter_map(|c| Some((key_digest(c.key_sha256.as_deref()?)?, c.name.clone())))
                .collect(),
        });
        Callers {
            weights,
            caps,
            keys,
            priorities,
            portals,
        }
    }

    /// Whether the keyed caller `name` may use the brokered install in `portal`: only the
    /// portals its `[[callers]]` entry lists, since a key is what stands for the caller.
    pub(crate) fn may_use_portal(&self, name: &str, portal: u64) -> bool {
        self.portals
            .get(name)
            .is_some_and(|portals| portals.contains(&portal))
    }

    /// When keys are required: the caller whose key the call presents, with the key header
    /// removed (a caller's key is for hubgate, never for HubSpot). `Ok(None)` when keys are
    /// not required: the call is left exactly as it came.
    pub(crate) fn authenticate(
        &self,
        headers: &mut HeaderMap,
    ) -> Result<Option<AuthenticatedCaller>, CallerRefusal> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let refuse = |problem| CallerRefusal::Unauthorized {
            header: keys.header_display.clone(),
            problem,
        };
        let mut presented = headers.get_all(&keys.header).iter();
        let key = match (presented.next(), presented.next()) {
            (None, _) => return Err(refuse(KeyProblem::Missing)),
            (Some(_), Some(_)) => return Err(refuse(KeyProblem::Repeated)),
            (Some(key), None) => key,
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes().trim_ascii()).into();
        let mut found: Option<&str> = None;
        for (known, name) in &keys.known {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(name);
            }
        }
        let Some(name) = found else {
            tracing::debug!(
                key = %redact::short_digest(&digest),
                "refused a call with an unknown caller key"
            );
            return Err(refuse(KeyProblem::Unknown));
        };
        // The key names the caller: a different X-Hubgate-Caller would let one caller
        // spend another's share and cap.
        if let Some(claimed) = headers.get(CALLER_HEADER) {
            let claimed = String::from_utf8_lossy(claimed.as_bytes());
            if claimed.trim() != name {
                return Err(CallerRefusal::BadHeader(format!(
                    "X-Hubgate-Caller {:?} does not match the caller of the key in {} ({name:?}); leave X-Hubgate-Caller out or send that caller's own key",
                    claimed.trim(),
                    keys.header_display
                )));
            }
        }
        headers.remove(&keys.header);
        Ok(Some(AuthenticatedCaller(name.to_string())))
    }

    /// The callers `config` describes, for a reload: built whole like `new`, except that a
    /// caller whose cap is unchanged keeps its limiter, so a reload hands no caller a fresh
    /// burst.
    pub(crate) fn reconfigured(&self, config: &[CallerConfig], inbound: &InboundConfig) -> Callers {
        let mut next = Callers::new(config, inbound);
        for (name, cap) in &mut next.caps {
            if let Some(old) = self.caps.get(name) {
                if old.per_second == cap.per_second {
                    cap.limiter = old.limiter.clone();
                }
            }
        }
        next
    }

    /// Names the caller of a call by `owner` and reads its priority; malformed hubgate
    /// headers, and priorities a keyed caller may not ask for, are refused with a message
    /// saying what to send instead.
    pub(crate) fn identify(
        &self,
        request: &Request<Body>,
        owner: Owner,
    ) -> Result<Identified, CallerRefusal> {
        let name = match named_caller(request)? {
            // Calls without a credential, and calls with one HubSpot has not accepted yet,
            // share one small budget each, and a name per call would buy a share per call:
            // there, only the names of [[callers]] count, and any other stands for its peer
            // address.
            (name, NamedBy::Header)
                if (owner == Owner::Anonymous || owner == Owner::UNPROVEN)
                    && !self.weights.contains_key(&*name) =>
            {
                peer_name(request)
            }
            (name, _) => name,
        };
        let priority = self.priority(request, &name)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let seat = Seat {
            priority,
            caller: hasher.finish(),
            weight: self.weights.get(&*name).copied().unwrap_or(1),
        };
        Ok(Identified { name, seat })
    }

    /// The priority `X-Hubgate-Priority` asks for (`normal` without it), within what the
    /// caller's entry allows when keys are required: a call without the header then gets
    /// `normal`, or the entry's highest priority when it lists no `normal`.
    fn priority(&self, request: &Request<Body>, name: &str) -> Result<Priority, CallerRefusal> {
        let asked = match request.headers().get(PRIORITY_HEADER) {
            None => None,
            Some(value) => match value
                .to_str()
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                Ok("high") => Some(Priority::High),
                Ok("normal") => Some(Priority::Normal),
                Ok("low") => Some(Priority::Low),
                _ => {
                    return Err(CallerRefusal::BadHeader(format!(
                        "X-Hubgate-Priority must be high, normal or low, not {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    )))
                }
            },
        };
        let allowed = match (&self.keys, self.priorities.get(name)) {
            (Some(_), Some(allowed)) => allowed,
            _ => return Ok(asked.unwrap_or(Priority::Normal)),
        };
        match asked {
            Some(priority) if allowed.contains(&priority) => Ok(priority),
            Some(priority) => Err(CallerRefusal::PriorityNotAllowed {
                caller: name.to_string(),
                asked: priority.as_label(),
                allowed: allowed.iter().map(|p| p.as_label()).collect(),
            }),
            None if allowed.contains(&Priority::Normal) => Ok(Priority::Normal),
            None => Ok(allowed.first().copied().unwrap_or(Priority::Normal)),
        }
    }

    /// Spends one call of the caller's cap; `Err` holds how long until one is free.
    pub(crate) fn check_cap(&self, name: &str) -> Result<(), Duration> {
        let Some(cap) = self.caps.get(name) else {
            return Ok(());
        };
        cap.limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

/// How a caller's name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamedBy {
    Key,
    Header,
    Peer,
}

/// The caller's name: the one its key gives, else `X-Hubgate-Caller`, else its IP address;
/// a malformed `X-Hubgate-Caller` is refused.
fn named_caller(request: &Request<Body>) -> Result<(Arc<str>, NamedBy), CallerRefusal> {
    // A key names its caller; X-Hubgate-Caller was checked against it already.
    if let Some(AuthenticatedCaller(name)) = request.extensions().get() {
        return Ok((Arc::from(name.as_str()), NamedBy::Key));
    }
    if let Some(value) = request.headers().get(CALLER_HEADER) {
        // Lossy, so a refusal shows what was sent; non-ASCII never passes the check.
        let sent = String::from_utf8_lossy(value.as_bytes());
        let name = sent.trim();
        if let Some(e) = caller_name_problem(name) {
            return Err(CallerRefusal::BadHeader(format!("X-Hubgate-Caller: {e}")));
        }
        return Ok((Arc::from(name), NamedBy::Header));
    }
    Ok((peer_name(request), NamedBy::Peer))
}

fn peer_name(request: &Request<Body>) -> Arc<str> {
    request
        .extensions()
        .get::<PeerAddr>()
        .map_or_else(|| Arc::from("unknown"), |peer| peer.ip.clone())
}

/// The name a call's caller goes by before pacing checks it (a malformed header still
/// names a caller here; pacing refuses it later), and the peer address it only claims that
/// name from: what introspection takes turns by.
pub(crate) fn claimed_caller(request: &Request<Body>) -> (Arc<str>, Option<Arc<str>>) {
    match named_caller(request) {
        Ok((name, NamedBy::Header)) => (name, Some(peer_name(request))),
        Ok((name, NamedBy::Key | NamedBy::Peer)) => (name, None),
        Err(_) => (peer_name(request), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::key_sha256;

    fn capped(name: &str, max_rps: u32) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            weight: 1,
            max_rps: Some(max_rps),
            key_sha256: None,
            priorities: crate::config::default_priorities(),
            portals: Vec::new(),
        }
    }

    fn caller(name: &str, key: Option<&str>) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            weight: 1,
            max_rps: None,
            key_sha256: key.map(key_sha256),
            priorities: crate::config::default_priorities(),
            portals: Vec::new(),
        }
    }

    fn required() -> InboundConfig {
        InboundConfig {
            require_caller_key: true,
            ..InboundConfig::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn problem(result: Result<Option<AuthenticatedCaller>, CallerRefusal>) -> Option<KeyProblem> {
        match result {
            Err(CallerRefusal::Unauthorized { problem, .. }) => Some(problem),
            _ => None,
        }
    }

    #[test]
    fn a_reload_keeps_the_limiter_of_an_unchanged_cap_only() {
        let callers = Callers::new(
            &[capped("same", 1), capped("raised", 1)],
            &InboundConfig::default(),
        );
        assert!(callers.check_cap("same").is_ok());
        assert!(callers.check_cap("raised").is_ok());
        let reloaded = callers.reconfigured(
            &[capped("same", 1), capped("raised", 5)],
            &InboundConfig::default(),
        );
        assert!(
            reloaded.check_cap("same").is_err(),
            "an unchanged cap keeps what it counted: no fresh burst"
        );
        assert!(
            reloaded.check_cap("raised").is_ok(),
            "a new cap starts anew"
        );
        let uncapped = reloaded.reconfigured(&[], &InboundConfig::default());
        assert!(uncapped.check_cap("same").is_ok(), "a removed cap is gone");
    }

    #[test]
    fn a_known_key_names_its_caller_and_is_removed() {
        let callers = Callers::new(
            &[
                caller("sync", Some("key-one")),
                caller("web", Some("key-two")),
            ],
            &required(),
        );
        let mut map = headers(&[("x-hubgate-key", " key-two "), ("accept", "*/*")]);
        let found = callers.authenticate(&mut map).unwrap();
        assert_eq!(found, Some(AuthenticatedCaller("web".into())));
        assert!(map.get("x-hubgate-key").is_none(), "key not sent on");
        assert!(map.get("accept").is_some());
    }

    #[test]
    fn missing_repeated_and_unknown_keys_are_refused() {
        let callers = Callers::new(&[caller("sync", Some("key-one"))], &required());
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[]))),
            Some(KeyProblem::Missing)
        );
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[
                ("x-hubgate-key", "key-one"),
                ("x-hubgate-key", "key-one")
            ]))),
            Some(KeyProblem::Repeated)
        );
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[("x-hubgate-key", "key-on")]))),
            Some(KeyProblem::Unknown)
        );
        // A caller without a key cannot be named by one.
        let callers = Callers::new(
            &[caller("sync", Some("key-one")), caller("open", None)],
            &required(),
        );
        assert_eq!(
            problem(callers.authenticate(&mut headers(&[("x-hubgate-key", "")]))),
            Some(KeyProblem::Unknown)
        );
    }

    #[test]
    fn the_key_decides_the_caller_name() {
        let callers = Callers::new(
            &[
                caller("sync", Some("key-one")),
                caller("web", Some("key-two")),
            ],
            &required(),
        );
        let mut same = headers(&[
            ("x-hubgate-key", "key-one"),
            (CALLER_HEADER.as_str(), "sync"),
        ]);
        assert!(callers.authenticate(&mut same).is_ok());
        let mut other = headers(&[
            ("x-hubgate-key", "key-one"),
            (CALLER_HEADER.as_str(), "web"),
        ]);
        assert!(matches!(
            callers.authenticate(&mut other),
            Err(CallerRefusal::BadHeader(m)) if m.contains("does not match")
        ));
        let mut request = Request::new(crate::proxy::body::empty());
        request
            .headers_mut()
            .insert(CALLER_HEADER, "web".parse().unwrap());
        request
            .extensions_mut()
            .insert(AuthenticatedCaller("sync".into()));
        assert_eq!(
            &*callers.identify(&request, Owner::Anonymous).unwrap().name,
            "sync"
        );
    }

    #[test]
    fn invented_names_count_as_their_peer_only_without_a_credential() {
        let callers = Callers::new(&[caller("billing", None)], &InboundConfig::default());
        let named = |name: &str| {
            let mut request = Request::new(crate::proxy::body::empty());
            request
                .headers_mut()
                .insert(CALLER_HEADER, name.parse().unwrap());
            request
                .extensions_mut()
                .insert(PeerAddr::new("127.0.0.1:4000".parse().unwrap()));
            request
        };
        let app = Owner::App {
            app_id: 1,
            portal_id: 2,
        };
        let name_of = |name, owner| callers.identify(&named(name), owner).unwrap().name;
        assert_eq!(&*name_of("junk-1", Owner::Anonymous), "127.0.0.1");
        assert_eq!(&*name_of("billing", Owner::Anonymous), "billing");
        assert_eq!(&*name_of("junk-1", app), "junk-1");
    }

    #[test]
    fn without_require_caller_key_nothing_is_checked_or_removed() {
        let callers = Callers::new(
            &[caller("sync", Some("key-one"))],
            &InboundConfig::default(),
        );
        let mut map = headers(&[("x-hubgate-key", "anything")]);
        assert_eq!(callers.authenticate(&mut map).unwrap(), None);
        assert_eq!(map["x-hubgate-key"], "anything");
        assert_eq!(callers.authenticate(&mut headers(&[])).unwrap(), None);
    }
}
