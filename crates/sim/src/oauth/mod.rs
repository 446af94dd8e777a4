//! The simulated OAuth server of HubSpot's 2026 auth: apps and settings (`settings`), what
//! it answers (`answers`), and codes, installs, refresh and access tokens with their
//! counters (`registry`). The HTTP answers live in `server::oauth`.

mod answers;
mod registry;
mod settings;

pub use answers::OauthGrant;
pub(crate) use answers::{user_id, AccessLookup, Refusal};
pub(crate) use registry::{Registry, TokenRequest};
pub use settings::{OauthSettings, SimApp, GENERATED_REDIRECT_URI};
