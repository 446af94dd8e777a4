//! OAuth installs: the tokens hubgate holds for each app's installs, where they live (an
//! embedded database, Redis shared by replicas, or memory for tests), how they are kept
//! secret at rest, and the per-install lock that lets one refresh run at a time.
//!
//! The store's shape, which the broker builds on:
//! - [`InstallKey`] names an install (`app_id`, `hub_id`); [`Install`] is what is held for
//!   it, with its tokens wrapped in [`Secret`], which never prints or serializes in clear.
//! - [`InstallStore`] reads and writes installs. Writes are compare-and-swap on
//!   `Install::version`: `put_if(install, expected)` stores `install` as version
//!   `expected + 1` (1 when `expected` is `None`) only if the stored version is still
//!   `expected` (`None`: only if there is none), and answers `Ok(false)` when another
//!   writer got there first, so two replicas refreshing one install cannot both win.
//! - `try_lock(key, ttl)` takes a lock on one install for at most `ttl` (Redis: `SET NX
//!   PX` with a random token, released by compare-and-delete in Lua; the embedded and
//!   memory stores: a lock table in this process, which is all there is, since the
//!   embedded database's file admits one process). `None` when someone holds it.
//!   `unlock` with the [`LockToken`] releases it only if it is still ours.
//!
//! The broker, beside the store: `token_endpoint` (hubgate's own calls to HubSpot's dated
//! token endpoints), `broker` (fresh tokens and the refresh protocol), `brokered` (the
//! layer that serves calls naming an install), `install_flow` (the browser's install
//! routes) and `setup` (building it all from the config).
//!
//! Methods return [`StoreFuture`]s (boxed futures, as the budget store does) rather than
//! using `async-trait`: the trait stays object-safe as `Arc<dyn InstallStore>` with no
//! macro and no extra dependency, and the memory store answers without allocating a task.

pub(crate) mod broker;
pub(crate) mod brokered;
mod embedded;
mod install;
pub(crate) mod install_flow;
mod memory;
mod open;
mod record;
mod seal;
pub(crate) mod setup;
mod shared;
mod token_endpoint;

pub use embedded::EmbeddedInstallStore;
pub use install::{Install, InstallKey, InstallStatus, InstallStore, LockToken, Secret};
pub use memory::MemoryInstallStore;
pub use open::{open_installs, OpenedInstalls};
pub use seal::{SecretKey, WrongKey, SECRET_KEY_ENV};
pub use shared::SharedInstallStore;

pub use crate::store::StoreFuture;
