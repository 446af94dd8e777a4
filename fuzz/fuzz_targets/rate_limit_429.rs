//! What HubSpot (or anything posing as it) answers: 429 bodies, `X-HubSpot-RateLimit-*`
//! headers and `Retry-After`, in any shape.
//!
//! Input: header lines (`name: value`), an empty line, then the body, so that seeds are
//! readable answers (fuzz/corpus/rate_limit_429).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use hubgate::hubspot::rate_limit::{classify_429, retry_after, RateLimitHeaders};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|answer: &[u8]| {
    let (head, body) = match answer.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&answer[..i], &answer[i + 2..]),
        None => (&answer[..0], answer),
    };
    let _ = classify_429(body);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let _ = RateLimitHeaders::parse(&headers);
    // A fixed "now" in 2026: dates before and after it are both exercised.
    let now = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let _ = retry_after(&headers, now);
});
