//! Pacing: the layer that holds each call until every HubSpot budget it spends has room
//! (`layer`), what HubSpot's answers teach about those budgets (`learn`), the per-owner
//! lanes that queue and release calls (`pacer`), when a failed call goes again (`retry`,
//! with `replay` keeping small bodies for it), the reads merged into batch reads and the
//! GETs shared while in flight (`coalesce`), and the clock all of it reads (`clock`).

pub mod clock;
mod closing;
mod coalesce;
mod layer;
mod learn;
pub mod pacer;
pub(crate) mod replay;
mod retry;

pub use closing::LastSend;
pub(crate) use layer::{PaceError, PaceLayer, PacePolicy, PaceShared};
pub use pacer::Refusal;
pub(crate) use replay::ReplayBuffer;
