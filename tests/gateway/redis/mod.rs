//! Shared budgets on a real `redis-server` (started here on loopback ports of its own): the
//! script's semantics against the in-memory engine, three gateways saturating one budget
//! through one Redis, and what happens when Redis dies and comes back.
//!
//! `store`: the store itself against the engine (reservations, late sends, TLS, reloads,
//! daily budgets, lessons); `replicas`: gateways sharing one budget through Redis, and
//! Redis dying and coming back under them; `cluster`: the same through a Redis Cluster,
//! and one of its masters dying under them.

mod cluster;
mod replicas;
mod store;
