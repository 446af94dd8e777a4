//! Which HubSpot budgets a call spends: burst, search, the OAuth token budget or neither,
//! and daily or not, from its method and path, with the exemptions (`[[budgets.exempt]]`,
//! HubSpot's list by default) kept as data.

use hubgate_engine::BudgetKey;

use super::Owner;
use crate::config::ExemptRule;

/// What kind of call this is, as far as budgets are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallClass {
    /// A CRM search: spends the portal's search window instead of the burst window.
    pub search: bool,
    /// Skips the burst window.
    pub exempt_burst: bool,
    /// Skips the daily budget.
    pub exempt_daily: bool,
    /// An OAuth token call (refresh or code exchange): spends the token budget only.
    pub token: bool,
}

/// The budgets one call spends; at most three, so they live inline.
pub type Keys = smallvec::SmallVec<[BudgetKey; 3]>;

/// Classifies calls by method and path.
#[derive(Debug, Clone)]
pub struct Classifier {
    exempt: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    method: Option<http::Method>,
    segments: Vec<String>,
    daily: bool,
}

impl CompiledRule {
    fn matches(&self, method: &http::Method, path: &[&str]) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let mut i = 0;
        for pattern in &self.segments {
            match pattern.as_str() {
                "**" => return true,
                "*" if i < path.len() => {}
                literal if i < path.len() && path[i] == literal => {}
                _ => return false,
            }
            i += 1;
        }
        i == path.len()
    }
}

impl Classifier {
    /// Rules must be valid (`ExemptRule::problem` is `None`); config validation checks that.
    pub fn new(rules: &[ExemptRule]) -> Classifier {
        let exempt = rules
            .iter()
            .map(|rule| CompiledRule {
                method: rule.method.as_deref().and_then(|m| m.parse().ok()),
                segments: rule.path[1..].split('/').map(str::to_string).collect(),
                daily: rule.daily,
            })
            .collect();
        Classifier { exempt }
    }

    /// Classifies `path` as HubSpot reads it (see [`super::path::segments`]); a path that
    /// servers read differently is refused before this, by [`super::path::check`].
    pub fn classify(&self, method: &http::Method, path: &str) -> CallClass {
        let read: smallvec::SmallVec<[std::borrow::Cow<'_, str>; 8]> =
            super::path::segments(path).collect();
        let segments: smallvec::SmallVec<[&str; 8]> = read.iter().map(|s| s.as_ref()).collect();
        let mut class = CallClass {
            search: *method == http::Method::POST && is_crm_search(&segments),
            token: *method == http::Method::POST && is_oauth_token(&segments),
            ..CallClass::default()
        };
        if let Some(rule) = self.exempt.iter().find(|r| r.matches(method, &segments)) {
            class.exempt_burst = true;
            class.exempt_daily = rule.daily;
        }
        class
    }
}

/// `/crm/v3/objects/{type}/search` and the date-versioned
/// `/crm/objects/{YYYY-MM}[-beta]/{type}/search`.
fn is_crm_search(segments: &[&str]) -> bool {
    match segments {
        ["crm", "v3", "objects", object, "search"] => !object.is_empty(),
        ["crm", "objects", version, object, "search"] => {
            is_date_version(version) && !object.is_empty()
        }
        _ => false,
    }
}

/// `/oauth/v1/token` and the date-versioned `/oauth/{YYYY-MM}/token`.
fn is_oauth_token(segments: &[&str]) -> bool {
    match segments {
        ["oauth", "v1", "token"] => true,
        ["oauth", version, "token"] => is_date_version(version),
        _ => false,
    }
}

fn is_date_version(segment: &str) -> bool {
    let date = segment.strip_suffix("-beta").unwrap_or(segment);
    let bytes = date.as_bytes();
    bytes.len() == 7
        && bytes[4] == b'-'
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[5..].iter().all(u8::is_ascii_digit)
}

/// The budgets a call of `class` by `owner` spends.
pub fn budgets_for(owner: Owner, class: CallClass) -> Keys {
    let mut keys = Keys::new();
    // HubSpot bills a token call to no app or portal, and whatever credential it carries
    // is not the one it asks about: one budget, whoever sends it.
    if class.token {
        keys.push(BudgetKey::Token);
        return keys;
    }
    match owner {
        Owner::App { app_id, portal_id } => {
            if class.search {
                keys.push(BudgetKey::Search { portal_id });
            } else if !class.exempt_burst {
                keys.push(BudgetKey::Burst { app_id, portal_id });
            }
            if !class.exempt_daily {
                keys.push(BudgetKey::Daily { portal_id });
            }
        }
        // Without a portal there is no search or daily budget to name; the credential's
        // own window stands in for all of them.
        Owner::Unidentified { credential_hash } => {
            if !(class.exempt_burst && class.exempt_daily) {
                keys.push(BudgetKey::Unidentified { credential_hash });
            }
        }
        Owner::Anonymous => keys.push(BudgetKey::Global),
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn classify(method: Method, path: &str) -> CallClass {
        Classifier::new(&crate::config::default_exemptions()).classify(&method, path)
    }

    #[test]
    fn search_paths_v3_and_date_versioned() {
        assert!(classify(Method::POST, "/crm/v3/objects/contacts/search").search);
        assert!(classify(Method::POST, "/crm/objects/2026-03/deals/search").search);
        assert!(classify(Method::POST, "/crm/objects/2025-09-beta/p_custom/search").search);
        assert!(!classify(Method::GET, "/crm/v3/objects/contacts/search").search);
        assert!(!classify(Method::POST, "/crm/v3/objects/contacts/123").search);
        assert!(!classify(Method::POST, "/crm/objects/latest/deals/search").search);
        assert!(!classify(Method::POST, "/crm/v3/objects/contacts/search/extra").search);
        assert!(classify(Method::POST, "/crm/v3/objects/contacts/search/").search);
        assert!(classify(Method::POST, "/crm/v3//objects/%63ontacts/search").search);
    }

    #[test]
    fn oauth_token_calls_spend_the_token_budget_only() {
        assert!(classify(Method::POST, "/oauth/v1/token").token);
        assert!(classify(Method::POST, "/oauth/2026-03/token").token);
        assert!(!classify(Method::GET, "/oauth/v1/token").token);
        assert!(!classify(Method::POST, "/oauth/v1/token/introspect").token);
        assert!(!classify(Method::POST, "/oauth/latest/token").token);
        let token = classify(Method::POST, "/oauth/v1/token");
        for owner in [
            Owner::Anonymous,
            Owner::App {
                app_id: 7,
                portal_id: 9,
            },
        ] {
            assert_eq!(budgets_for(owner, token).as_slice(), [BudgetKey::Token]);
        }
    }

    #[test]
    fn exemptions_follow_hubspots_list() {
        let batch = classify(
            Method::POST,
            "/crm/v4/associations/contacts/companies/batch/read",
        );
        assert!(batch.exempt_burst && !batch.exempt_daily);
        let events = classify(Method::POST, "/events/v3/send");
        assert!(events.exempt_burst && events.exempt_daily);
        let journal = classify(Method::GET, "/webhooks-journal/journal/2026-03/offset/1");
        assert!(journal.exempt_burst && journal.exempt_daily);
        assert!(classify(Method::POST, "/automation/v4/flows").exempt_burst);
        assert!(!classify(Method::GET, "/automation/v4/flows").exempt_burst);
        assert!(!classify(Method::GET, "/crm/v3/objects/contacts").exempt_burst);
        assert!(!classify(Method::POST, "/events/v3/send/other").exempt_burst);
    }

    #[test]
    fn budgets_per_owner_and_class() {
        let owner = Owner::App {
            app_id: 7,
            portal_id: 9,
        };
        let plain = budgets_for(owner, CallClass::default());
        assert_eq!(
            plain.as_slice(),
            [
                BudgetKey::Burst {
                    app_id: 7,
                    portal_id: 9
                },
                BudgetKey::Daily { portal_id: 9 }
            ]
        );
        let search = budgets_for(
            owner,
            CallClass {
                search: true,
                ..Default::default()
            },
        );
        assert_eq!(
            search.as_slice(),
            [
                BudgetKey::Search { portal_id: 9 },
                BudgetKey::Daily { portal_id: 9 }
            ]
        );
        let exempt = CallClass {
            exempt_burst: true,
            exempt_daily: true,
            ..Default::default()
        };
        assert!(budgets_for(owner, exempt).is_empty());
        assert_eq!(
            budgets_for(Owner::Anonymous, exempt).as_slice(),
            [BudgetKey::Global]
        );
    }
}
