//! Call paths: which budgets a call spends (search, exempt, daily) under HubSpot's default
//! exemptions and under any valid `[[budgets.exempt]]` list, how the call is logged (tokens
//! in paths redacted), and admin owner names.
//!
//! Input: a first line `METHOD PATH[?QUERY]`, then optional exemption rules, one per line:
//! `[METHOD] PATTERN [daily]` (fuzz/corpus/classify_path).
#![no_main]

use http::Method;
use hubgate::config::{default_exemptions, ExemptRule};
use hubgate::hubspot::{budgets_for, Classifier};
use hubgate::hubspot::Owner;
use hubgate::ops::redact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let mut lines = input.lines();
    let request_line = lines.next().unwrap_or("");
    let (method, target) = request_line
        .split_once(' ')
        .unwrap_or(("GET", request_line));
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };

    let class = Classifier::new(&default_exemptions()).classify(&method, path);
    assert!(
        !class.search || method == Method::POST,
        "searches are POSTs"
    );
    assert!(
        !class.exempt_daily || class.exempt_burst,
        "daily exemption implies burst"
    );

    // Only rules that config validation accepts reach the classifier.
    let rules: Vec<ExemptRule> = lines
        .map(|line| {
            let mut words: Vec<&str> = line.split(' ').collect();
            let daily = words.last() == Some(&"daily");
            if daily {
                words.pop();
            }
            let (method, pattern) = match words.as_slice() {
                [method, pattern] => (Some(method.to_string()), pattern.to_string()),
                _ => (None, words.join(" ")),
            };
            ExemptRule {
                method,
                path: pattern,
                daily,
            }
        })
        .filter(|rule| {
            rule.problem().is_none()
                && rule
                    .method
                    .as_deref()
                    .is_none_or(|m| !m.is_empty() && m.parse::<Method>().is_ok())
        })
        .collect();
    let custom = Classifier::new(&rules).classify(&method, path);
    for owner in [
        Owner::App {
            app_id: 1,
            portal_id: 2,
        },
        Owner::Unidentified { credential_hash: 3 },
        Owner::Anonymous,
    ] {
        assert!(budgets_for(owner, class).len() <= 3);
        assert!(budgets_for(owner, custom).len() <= 3);
    }

    // Everything after a token segment (here spelled plainly; the redaction also reads
    // escaped spellings, which only hide more) is shown as one `<redacted>`.
    let logged = redact::path_and_query(path, query);
    let logged_path = logged.split('?').next().unwrap_or("");
    let original: Vec<&str> = path.split('/').collect();
    let first_token = (1..original.len())
        .find(|&i| matches!(original[i - 1], "access-tokens" | "refresh-tokens"));
    if let Some(i) = first_token {
        if !original[i..].join("/").is_empty() {
            let kept = logged_path
                .strip_suffix("<redacted>")
                .unwrap_or_else(|| panic!("a token shows: {logged}"));
            assert!(path.starts_with(kept), "{logged}");
            assert!(kept.len() <= original[..i].join("/").len() + 1, "{logged}");
        }
    }

    if let Some(owner) = Owner::parse(path.trim_start_matches("/admin/owners/")) {
        assert_eq!(Owner::parse(&owner.label()), Some(owner));
    }
});
