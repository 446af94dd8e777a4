//! The pure budget engine: windows, daily counters, reservations, queues and wait estimates.
//!
//! Nothing here performs I/O, reads a clock or spawns a task: time comes in as `Tick`
//! (monotonic) and `unix_ms` (wall clock for daily resets), so the same code backs the
//! in-memory store and a shared store, and tests run thousands of virtual windows in
//! milliseconds. The proxy wraps it: it maps `Instant`s to ticks, arms a timer for each
//! `NotBefore` and `next_deadline`, and turns `Reservation`/`Rejected` into responses.
//!
//! # Cost (64-bit)
//! A live window budget is one map slot (`BudgetKey` 24 B + entry up to 200 B, about
//! 260 B with the hash table's spare room) plus its log, allocated on first send with
//! exactly `capacity` ticks of 8 B: 110 × 8 = 880 B for HubSpot's default burst. A daily
//! budget is the map slot alone. One active (app, portal) owner with burst + daily is
//! therefore about 1.4 KB, 10,000 of them about 14 MB; a waiting call adds its item plus
//! ~45 B in the queue. Idle budgets cost nothing once `evict_idle` has dropped them.

pub mod book;
pub mod daily;
pub mod fair;
pub mod queue;
pub mod time;
pub mod virtual_time;
pub mod window;

pub use book::{Budget, BudgetBook, BudgetKey, BudgetSpec, Limits, Reservation};
pub use daily::{DailyBudget, DailyExhausted, DailySpec};
pub use fair::{CallerId, FairQueue, Priority, Seat};
pub use queue::{OwnerQueue, QueueTicket, Queued, RejectReason, Rejected};
pub use time::Tick;
pub use window::{SlidingLog, WindowSpec};
