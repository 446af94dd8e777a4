//! Integration tests of gateways running in this process: each test starts its own on
//! 127.0.0.1:0 (with upstreams, a simulator or Redis as it needs) and talks to it over real
//! sockets. One binary for all of them: each test binary links the whole crate.

#[path = "../support/mod.rs"]
mod support;

mod admin_and_counters;
mod anonymous_and_priority;
mod bad_input;
mod bounds;
mod coalescing;
mod connections;
mod dated_introspection;
mod fairness;
mod faults;
mod identity;
mod inbound_auth;
mod install_store;
mod junk_credentials;
mod lifecycle;
mod oauth_broker;
mod oauth_replicas;
mod observability;
mod outside_use;
mod pacing;
mod paths_and_secrets;
mod proxy_fidelity;
mod redis;
mod reload;
mod retries;
mod tls_upstream;
mod upstream_and_store_faults;
mod upstream_pool;
