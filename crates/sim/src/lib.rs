//! HubSpot API simulator: a local stand-in for `api.hubapi.com` that enforces HubSpot's rate
//! limits exactly as the project's `docs/hubspot.md` describes, so the gateway can be tested
//! against hard, observable budgets.
//!
//! # Tokens
//! Tokens come from `[[tokens]]` in the config and from `generate_tokens = N`, which adds for
//! each i in 1..=N:
//! - `pat-na1-sim-<i>`: private app, app id `2000 + i`, portal `1000 + i`;
//! - `oauth-sim-<i>`: OAuth token, app id `3000 + i`, portal `1000 + i`.
//!
//! Both tokens of one i share a portal (search and daily budgets are per portal) but are
//! different apps (so separate burst budgets). Configured tokens override generated ones.
//!
//! # Routes
//! - API routes need `Authorization: Bearer <token>` (or `?hapikey=` for `[[hapikeys]]`) and
//!   are rate limited: burst per (app, portal), CRM search per portal, daily per portal for
//!   private apps; `exempt` rules (config) lift the burst and optionally the daily window.
//! - `/oauth/*` (introspection, and HubSpot's 2026 OAuth server: the authorize stub, the token
//!   endpoint, dated introspection and revocation) needs no bearer token and is outside the
//!   API's rate limits; the token endpoint has a limit and failures of its own (`oauth`).
//! - `/__sim/echo/...`, `/__sim/bytes/{n}`, `/__sim/stats`, `/__sim/reset`,
//!   `/__sim/faults`, `/__sim/outside`, `/__sim/health` control and observe the simulator;
//!   they are exempt from auth, limits and faults.
//!
//! The echo route reports headers in `HeaderMap` order: names are lower-cased and repeated
//! names are grouped at the position of their first occurrence.
//!
//! # Where things are
//! - `simulator`: the [`Simulator`] handle; `cli`: `hubgate sim` ([`SimArgs`]).
//! - `config`, `faults`, `outside`, `stats`: the public data types (config file, injected
//!   faults, outside consumers, `/__sim/stats`).
//! - `limits`: HubSpot's windows and counters; `clock`: the one wall-clock read.
//! - `oauth`: the OAuth server's apps, settings, installs and tokens.
//! - `server`: accept loop and TLS, with one module per kind of answer (`routes`, `auth`,
//!   `rate_limit_answers`, `introspection`, `oauth`, `control`, `echo`, `outside`).
//! - `crm`: the in-memory CRM, one module per endpoint family.
//! - `http_util`: response builders, HubSpot error bodies and query parsing shared by both.

mod cli;
mod clock;
mod config;
mod crm;
mod faults;
mod http_util;
mod limits;
mod oauth;
mod outside;
mod server;
mod simulator;
mod stats;
mod tls;

pub use cli::{run_from_args, SimArgs};
pub use config::{
    default_exempt, generated_tokens, ExemptRule, HapiKeyConfig, SimConfig, TokenConfig, TokenKind,
};
pub use faults::Faults;
pub use oauth::{OauthGrant, OauthSettings, SimApp, GENERATED_REDIRECT_URI};
pub use outside::{OutsideConfig, OutsidePattern};
pub use simulator::Simulator;
pub use stats::{
    DailyStats, InstallStats, IntrospectionStats, OauthStats, OwnerStats, RateLimitedCounts,
    SearchStats, SimLimits, SimStats, TokenCalls, TokenErrors, Totals,
};
