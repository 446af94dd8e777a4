//! Who is calling: the caller's name (`X-Hubgate-Caller`, else its IP address), its
//! priority (`X-Hubgate-Priority`), its weight among the owner's callers, and its optional
//! rate cap — everything `[[callers]]` configures.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderName, Request};
use serde::Deserialize;

use crate::body::Body;
use crate::engine::{Priority, Seat};
use crate::error::GatewayError;
use crate::respond::PeerAddr;

pub const CALLER_HEADER: HeaderName = HeaderName::from_static("x-hubgate-caller");
pub const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-hubgate-priority");

/// One `[[callers]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct CallerConfig {
    /// The `X-Hubgate-Caller` value (or IP address) this entry applies to.
    pub name: String,
    /// Turns per round among the callers of one owner (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Calls per second this caller may send; above it hubgate answers 429 at once.
    #[serde(default)]
    pub max_rps: Option<u32>,
}

fn one() -> u32 {
    1
}

/// Every problem in `[[callers]]` as (dotted key, message).
pub fn validate(callers: &[CallerConfig]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    for (i, caller) in callers.iter().enumerate() {
        if let Err(e) = check_name(&caller.name) {
            problems.push((format!("callers.{i}.name"), e));
        }
        if let Some(first) = seen.insert(caller.name.as_str(), i) {
            problems.push((
                format!("callers.{i}.name"),
                format!("'{}' is already configured as callers.{first}", caller.name),
            ));
        }
        if !(1..=1000).contains(&caller.weight) {
            problems.push((
                format!("callers.{i}.weight"),
                "must be between 1 and 1000".into(),
            ));
        }
        if caller.max_rps == Some(0) {
            problems.push((
                format!("callers.{i}.max_rps"),
                "must be at least 1 (leave it out for no cap)".into(),
            ));
        }
    }
    problems
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "caller name {name:?} must be 1 to 128 visible ASCII characters without spaces, e.g. \"nightly-sync\""
        ));
    }
    Ok(())
}

/// The configured callers, their weights and caps.
pub struct Callers {
    weights: HashMap<String, u32>,
    /// GCRA per capped caller: a cap really is a rate (unlike HubSpot's rolling windows).
    caps: HashMap<String, DefaultDirectRateLimiter>,
}

/// The name and seat of one call.
#[derive(Debug, Clone)]
pub struct Identified {
    pub name: Arc<str>,
    pub seat: Seat,
}

impl Callers {
    pub fn new(config: &[CallerConfig]) -> Callers {
        let weights = config
            .iter()
            .map(|c| (c.name.clone(), c.weight.max(1)))
            .collect();
        let caps = config
            .iter()
            .filter_map(|c| {
                let rate = NonZeroU32::new(c.max_rps?)?;
                Some((c.name.clone(), RateLimiter::direct(Quota::per_second(rate))))
            })
            .collect();
        Callers { weights, caps }
    }

    /// Names the caller and reads its priority; malformed hubgate headers are refused
    /// with a message saying what to send instead.
    pub fn identify(&self, request: &Request<Body>) -> Result<Identified, GatewayError> {
        let name = match request.headers().get(CALLER_HEADER) {
            Some(value) => {
                let name = value.to_str().map(str::trim).unwrap_or("");
                check_name(name)
                    .map_err(|e| GatewayError::BadRequest(format!("X-Hubgate-Caller: {e}")))?;
                Arc::from(name)
            }
            None => request
                .extensions()
                .get::<PeerAddr>()
                .map_or_else(|| Arc::from("unknown"), |peer| peer.ip.clone()),
        };
        let priority = match request.headers().get(PRIORITY_HEADER) {
            None => Priority::Normal,
            Some(value) => match value
                .to_str()
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                Ok("high") => Priority::High,
                Ok("normal") => Priority::Normal,
                Ok("low") => Priority::Low,
                _ => {
                    return Err(GatewayError::BadRequest(format!(
                        "X-Hubgate-Priority must be high, normal or low, not {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    )))
                }
            },
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let seat = Seat {
            priority,
            caller: hasher.finish(),
            weight: self.weights.get(&*name).copied().unwrap_or(1),
        };
        Ok(Identified { name, seat })
    }

    /// Spends one call of the caller's cap; `Err` holds how long until one is free.
    pub fn check_cap(&self, name: &str) -> Result<(), Duration> {
        let Some(limiter) = self.caps.get(name) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}
