//! The request path: every layer a call passes through on its way to HubSpot and back,
//! assembled in `stack` (which says why each sits where it does), and what they share —
//! the body type, the caller's connection, hop-by-hop headers, how a call ended.

mod auth;
pub mod body;
pub mod callers;
pub(crate) mod forward;
mod guard;
mod hop;
pub mod identify;
pub(crate) mod linger;
pub mod outcome;
pub mod peer;
mod respond;
pub(crate) mod stack;
#[cfg(test)]
mod tests;
pub mod upstream;
