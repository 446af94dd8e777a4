//! The one place that knows HubSpot: who owns a budget and how a credential names it,
//! how HubSpot is asked about a token (v1 and dated introspection), how a path is read and which budgets a call spends,
//! what HubSpot's 429s and rate-limit headers say, and the shape of its error JSON. The facts and their
//! sources are in docs/hubspot.md.

pub mod classify;
mod credential;
pub mod dated_introspect;
pub(crate) mod error_body;
pub mod introspect;
mod owner;
pub mod path;
pub mod rate_limit;

pub use classify::{budgets_for, CallClass, Classifier, Keys};
pub(crate) use credential::form_decode;
pub use credential::{credential_of, single_credential, Credential, TokenKind, TwoCredentials};
pub use introspect::oauth_introspection_path;
pub use owner::Owner;
pub use rate_limit::{classify_429, retry_after, Policy, RateLimitHeaders};
