//! Builds the token broker from the config: the apps with their client secrets, the
//! opened install store, the paced path for its token calls, and its metrics.

use std::sync::Arc;
use std::time::Duration;

use super::broker::{Broker, BrokerApp, BrokerMetrics};
use super::token_endpoint::{ClientCredentials, PacedService, TokenEndpoint};
use super::InstallStore;
use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::pace::clock::Clock;

/// The longest one of hubgate's token calls may take, queueing in the token budget
/// included; a refresh lock is held a little longer than this.
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker, or `None` when `[[apps]]` is empty (brokered calls are then refused).
pub(crate) fn build_broker(
    config: &Config,
    store: Arc<dyn InstallStore>,
    paced: PacedService,
    clock: Clock,
    metrics: &Metrics,
) -> anyhow::Result<Option<Broker>> {
    if config.apps.is_empty() {
        return Ok(None);
    }
    let apps = config
        .apps
        .iter()
        .map(|app| {
            let client_secret = app
                .client_secret()
                .map_err(|e| anyhow::anyhow!("[[apps]] app {}: {e}", app.app_id))?;
            Ok(BrokerApp {
                app_id: app.app_id,
                credentials: ClientCredentials {
                    client_id: app.client_id.clone(),
                    client_secret,
                },
                redirect_uri: app.redirect_uri.clone(),
                scopes: app.scopes.clone(),
                optional_scopes: app.optional_scopes.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tokens = TokenEndpoint::new(paced, TOKEN_CALL_TIMEOUT);
    let broker_metrics = BrokerMetrics::register(metrics)?;
    Ok(Some(Broker::new(
        store,
        apps,
        tokens,
        clock,
        broker_metrics,
    )))
}
