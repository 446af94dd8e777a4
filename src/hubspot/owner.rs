//! Who a call's budgets belong to: HubSpot's quota owner (app, portal), or the stand-ins
//! hubgate uses when no owner can be named.

/// Who a call's budgets belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    App {
        app_id: u64,
        portal_id: u64,
    },
    /// HubSpot could not be asked (or the credential is a hapikey): keyed by the credential.
    Unidentified {
        credential_hash: u64,
    },
    /// No credential at all; such calls share one budget.
    Anonymous,
}

impl Owner {
    /// Where calls with credentials HubSpot has not accepted yet are budgeted, all of them
    /// together (a hapikey before its first 2xx, a token whose lookup failed): one small
    /// budget and one lane however many distinct credentials a flood brings.
    pub const UNPROVEN: Owner = Owner::Unidentified { credential_hash: 0 };

    /// `app_id:portal_id`, `unidentified:<16 hex>` or `anonymous`.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// Parses a label (the forms of `X-Hubgate-Owner` and `/admin/owners/{owner}`):
    /// `app_id:portal_id`, `anonymous` or `unidentified:<16 hex>`; strict, so a path holding
    /// anything else is not taken for an owner.
    pub fn parse(text: &str) -> Option<Owner> {
        if text == "anonymous" {
            return Some(Owner::Anonymous);
        }
        let (a, b) = text.split_once(':')?;
        if a == "unidentified" {
            return u64::from_str_radix(b, 16)
                .ok()
                .filter(|_| b.len() == 16)
                .map(|credential_hash| Owner::Unidentified { credential_hash });
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(Owner::App {
            app_id: a.parse().ok()?,
            portal_id: b.parse().ok()?,
        })
    }
}

/// The label, written where it is needed (a header's bytes) without a `String` first.
impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::App { app_id, portal_id } => write!(f, "{app_id}:{portal_id}"),
            Owner::Unidentified { credential_hash } => {
                write!(f, "unidentified:{credential_hash:016x}")
            }
            Owner::Anonymous => f.write_str("anonymous"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let app = Owner::App {
            app_id: 1,
            portal_id: 2,
        };
        assert_eq!(app.label(), "1:2");
        let u = Owner::Unidentified {
            credential_hash: 0xab,
        };
        assert_eq!(u.label(), "unidentified:00000000000000ab");
        assert_eq!(Owner::Anonymous.label(), "anonymous");
    }

    #[test]
    fn owner_labels_parse_strictly() {
        assert_eq!(
            Owner::parse("12:34"),
            Some(Owner::App {
                app_id: 12,
                portal_id: 34
            })
        );
        assert_eq!(Owner::parse("anonymous"), Some(Owner::Anonymous));
        assert_eq!(
            Owner::parse("unidentified:00000000000000ff"),
            Some(Owner::Unidentified {
                credential_hash: 255
            })
        );
        for bad in [
            "",
            "12",
            "12:",
            ":3",
            "+1:2",
            "1:2:3",
            "a:b",
            "unidentified:ff",
            "1:99999999999999999999",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }
}
