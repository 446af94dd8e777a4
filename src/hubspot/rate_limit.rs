//! What HubSpot says about its limits: 429 bodies (which policy said no), the
//! `X-HubSpot-RateLimit-*` headers, and `Retry-After`. Parsing only; every field optional.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Which HubSpot limit a 429 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `TEN_SECONDLY_ROLLING`: the (app, portal) burst window.
    TenSecondly,
    /// `SECONDLY`: the portal's search window.
    Secondly,
    /// `DAILY`: the portal's daily budget.
    Daily,
    /// No policy could be read; treated as burst.
    Unknown,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::TenSecondly,
        Policy::Secondly,
        Policy::Daily,
        Policy::Unknown,
    ];

    /// The `policy` label value (HubSpot's own names).
    pub fn as_label(self) -> &'static str {
        match self {
            Policy::TenSecondly => "TEN_SECONDLY_ROLLING",
            Policy::Secondly => "SECONDLY",
            Policy::Daily => "DAILY",
            Policy::Unknown => "UNKNOWN",
        }
    }
}

/// Classifies a 429 body by `policyName`, falling back to the message's wording.
pub fn classify_429(body: &[u8]) -> Policy {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        policy_name: Option<String>,
        message: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return Policy::Unknown;
    };
    let by_name = |name: &str| match name.to_ascii_uppercase().as_str() {
        "TEN_SECONDLY_ROLLING" | "TEN_SECONDLY" => Some(Policy::TenSecondly),
        "SECONDLY" => Some(Policy::Secondly),
        "DAILY" => Some(Policy::Daily),
        _ => None,
    };
    if let Some(policy) = parsed.policy_name.as_deref().and_then(by_name) {
        return policy;
    }
    let message = parsed.message.unwrap_or_default().to_ascii_lowercase();
    if message.contains("ten_secondly") || message.contains("ten secondly") {
        Policy::TenSecondly
    } else if message.contains("secondly") {
        Policy::Secondly
    } else if message.contains("daily") {
        Policy::Daily
    } else {
        Policy::Unknown
    }
}

/// The `X-HubSpot-RateLimit-*` headers of one response; absent or unparsable ones are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub max: Option<u64>,
    pub remaining: Option<u64>,
    pub interval_ms: Option<u64>,
    pub daily: Option<u64>,
    pub daily_remaining: Option<u64>,
}

impl RateLimitHeaders {
    /// Reads each header's first value, as `HeaderMap::get` would. One pass over the
    /// answer's names, matched by text: every answer is read, and five hashed lookups of
    /// custom names cost several times that.
    pub fn parse(headers: &HeaderMap) -> RateLimitHeaders {
        let mut found = RateLimitHeaders::default();
        let mut seen = [false; 5];
        for (name, value) in headers {
            let Some(which) = name.as_str().strip_prefix("x-hubspot-ratelimit-") else {
                continue;
            };
            let (index, slot) = match which {
                "max" => (0, &mut found.max),
                "remaining" => (1, &mut found.remaining),
                "interval-milliseconds" => (2, &mut found.interval_ms),
                "daily" => (3, &mut found.daily),
                "daily-remaining" => (4, &mut found.daily_remaining),
                _ => continue,
            };
            if std::mem::replace(&mut seen[index], true) {
                continue;
            }
            *slot = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        found
    }
}

/// The longest `Retry-After` believed: a day, HubSpot's longest limit. Longer values (up
/// to `u64::MAX` seconds, or a date in year 9999) are read as this, so that no arithmetic
/// on the wait can overflow; a call told to wait that long is answered at once instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date (RFC 9110 §10.2.3),
/// at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a `u64` is still a number of seconds: a very long one.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_from_names_and_messages() {
        let body = br#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#;
        assert_eq!(classify_429(body), Policy::TenSecondly);
        assert_eq!(
            classify_429(br#"{"policyName":"SECONDLY"}"#),
            Policy::Secondly
        );
        assert_eq!(
            classify_429(br#"{"policyName":"DAILY","message":"x"}"#),
            Policy::Daily
        );
        assert_eq!(
            classify_429(br#"{"message":"You have reached your secondly limit."}"#),
            Policy::Secondly
        );
        assert_eq!(
            classify_429(br#"{"message":"You have reached your daily limit."}"#),
            Policy::Daily
        );
        assert_eq!(classify_429(b"<html>busy</html>"), Policy::Unknown);
        assert_eq!(
            classify_429(br#"{"policyName":"NEW_THING"}"#),
            Policy::Unknown
        );
        assert_eq!(classify_429(br#"{"policyName":7}"#), Policy::Unknown);
    }

    #[test]
    fn headers_and_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert("x-hubspot-ratelimit-max", "110".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-remaining", " 7".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-daily", "lots".parse().unwrap());
        let parsed = RateLimitHeaders::parse(&headers);
        assert_eq!(
            (parsed.max, parsed.remaining, parsed.daily),
            (Some(110), Some(7), None)
        );
        headers.append("x-hubspot-ratelimit-max", "999".parse().unwrap());
        headers.append(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            "10000".parse().unwrap(),
        );
        let parsed = RateLimitHeaders::parse(&headers);
        assert_eq!(parsed.max, Some(110), "the first value, as `get` reads it");
        assert_eq!(
            parsed.interval_ms,
            Some(10_000),
            "names are case-insensitive"
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        headers.insert("retry-after", later.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
        for absurd in [
            "18446744073709551615",
            "99999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            headers.insert("retry-after", absurd.parse().unwrap());
            assert_eq!(
                retry_after(&headers, now),
                Some(MAX_RETRY_AFTER),
                "{absurd}"
            );
        }
    }
}
