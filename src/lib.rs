//! hubgate: a HubSpot API rate-limit gateway. Callers change only their base URL; hubgate
//! forwards every call to HubSpot and keeps them all within HubSpot's budgets.
//!
//! Where things are (docs/architecture.md draws the request path):
//! - `config`: every `config.toml` section, its defaults and validation (a leaf);
//! - `hubspot`: everything that knows HubSpot (owners, credentials, introspection, which
//!   budgets a call spends, 429s and rate-limit headers, error JSON);
//! - `proxy`: the request path's layers and the stack that assembles them;
//! - `pace`: the pacing layer, the pacer and its lanes, retries, the clock;
//! - `store`: where budget state lives (memory or Redis);
//! - `oauth`: OAuth installs and their tokens, where they live, encrypted at rest;
//! - `ops`: admin listener, metrics, budget views, reload, logging, redaction;
//! - `connection`: one caller connection around hyper (its cap and socket timeouts);
//! - `gateway`: runs all of it on two listeners; `workers`: the threads caller
//!   connections are served on when asked for; `cli` and `load` are the commands.
//!
//! The budget arithmetic itself is the `hubgate-engine` crate; the HubSpot simulator is
//! `hubgate-sim`.

pub mod cli;
pub mod config;
mod connection;
mod gateway;
pub mod hubspot;
pub mod load;
pub mod oauth;
pub mod ops;
pub mod pace;
pub mod proxy;
pub mod store;
mod workers;

pub use config::Config;
pub use gateway::{run, run_from_file, shutdown_signal, Listeners};
