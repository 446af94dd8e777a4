//! hubgate: a HubSpot API rate-limit gateway. Callers change only their base URL; hubgate
//! forwards every call to HubSpot and keeps them all within HubSpot's budgets.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod callers;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod forward;
pub mod guard;
pub mod hop;
pub mod identify;
pub mod identity;
pub mod load;
pub mod metrics;
pub mod observe;
pub mod outcome;
pub mod pace;
pub mod pacer;
pub mod ratelimit;
pub mod redact;
pub mod redis_store;
pub mod reload;
pub mod replay;
pub mod respond;
pub mod retry;
pub mod server;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use server::{run, run_from_file, Listeners};
