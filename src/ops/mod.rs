//! Running and watching a gateway: the admin listener (`admin`), Prometheus metrics
//! (`metrics`) and the scrape-time budget views (`observe`), config reload (`reload`),
//! logging (`telemetry`) and keeping secrets out of all of them (`redact`).

pub mod admin;
pub mod metrics;
pub mod observe;
pub mod redact;
pub mod reload;
pub mod telemetry;
