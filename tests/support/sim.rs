//! The simulator (the tests' HubSpot) on 127.0.0.1:0, and gateways in front of it whose
//! budgets are the simulator's own limits.

use hubgate::Config;
use hubgate_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

use super::Gateway;

/// A simulator started with `config` on 127.0.0.1:0.
pub(crate) async fn simulator(config: SimConfig) -> Simulator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(config, listener).await.unwrap()
}

/// A simulator config from TOML text (the simulator's file format).
pub(crate) fn sim_config(toml: &str) -> SimConfig {
    SimConfig::from_toml_str(toml).unwrap_or_else(|e| panic!("simulator config ({e}): {toml}"))
}

/// A simulator that remembers the limits it enforces, so gateways in front of it can be
/// given the same budgets. Derefs to the [`Simulator`] (stats, faults, base URL).
pub(crate) struct Hubspot {
    sim: Simulator,
    limits: Limits,
}

/// The limits of a [`SimConfig`] a gateway's `[budgets]` mirror.
#[derive(Debug, Clone, Copy)]
struct Limits {
    burst_limit: u32,
    burst_window_ms: u64,
    search_limit: u32,
    search_window_ms: u64,
    daily_limit: u64,
}

impl Hubspot {
    pub(crate) async fn start(config: SimConfig) -> Hubspot {
        let limits = Limits {
            burst_limit: config.burst_limit,
            burst_window_ms: config.burst_window_ms,
            search_limit: config.search_limit,
            search_window_ms: config.search_window_ms,
            daily_limit: config.daily_limit,
        };
        Hubspot {
            sim: simulator(config).await,
            limits,
        }
    }

    /// Sets the burst, search and daily budgets of `config` to this simulator's limits
    /// (a daily limit of 0 is "none" on both sides).
    pub(crate) fn mirror(&self, config: &mut Config) {
        let (limits, budgets) = (self.limits, &mut config.budgets);
        budgets.burst_limit = limits.burst_limit;
        budgets.burst_window_ms = limits.burst_window_ms;
        budgets.search_limit = limits.search_limit;
        budgets.search_window_ms = limits.search_window_ms;
        budgets.daily_limit = limits.daily_limit;
    }

    /// A gateway in front of this simulator with its limits as budgets, then `tune` (for
    /// margins, and for whatever a test sets apart from the simulator).
    pub(crate) async fn gateway(&self, tune: impl FnOnce(&mut Config)) -> Gateway {
        Gateway::start(&self.sim.base_url(), |config| {
            self.mirror(config);
            tune(config)
        })
        .await
    }
}

impl std::fmt::Debug for Hubspot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hubspot")
            .field("base_url", &self.sim.base_url())
            .field("limits", &self.limits)
            .finish()
    }
}

impl std::ops::Deref for Hubspot {
    type Target = Simulator;

    fn deref(&self) -> &Simulator {
        &self.sim
    }
}

/// A simulator started with `config` and a gateway in front of it with the same limits
/// (then `tune`), in one call.
pub(crate) async fn sim_and_gateway(
    config: SimConfig,
    tune: impl FnOnce(&mut Config),
) -> (Hubspot, Gateway) {
    let sim = Hubspot::start(config).await;
    let gateway = sim.gateway(tune).await;
    (sim, gateway)
}
