//! Running and watching a gateway: the admin listener (`admin`, who may change things
//! through it in `admin_auth`, its OAuth installs in `admin_installs`), Prometheus metrics
//! (`metrics`, with the scrape-time budget gauges in `budget_metrics`), the budget views
//! behind them and the admin API (`observe`), config reload (`reload`),
//! logging (`telemetry`) and keeping secrets out of all of them (`redact`).

pub mod admin;
pub(crate) mod admin_auth;
mod admin_installs;
pub(crate) mod budget_metrics;
pub mod metrics;
pub mod observe;
pub mod redact;
pub mod reload;
pub mod telemetry;
