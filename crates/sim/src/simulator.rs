//! The `Simulator` handle: starting a simulator on a listener, observing and steering it
//! while it runs, and shutting it down.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::unix_ms;
use crate::config::SimConfig;
use crate::faults::Faults;
use crate::oauth::{OauthGrant, OauthSettings};
use crate::outside::OutsideConfig;
use crate::server::{self, Shared};
use crate::stats::SimStats;
use crate::tls;

/// Handle to a running simulator.
pub struct Simulator {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    // The shared state holds the whole CRM store; the address is what identifies a simulator.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("running", &self.task.is_some())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Serves on the given listener until shutdown; spawns onto the current tokio runtime.
    pub async fn start(config: SimConfig, listener: TcpListener) -> anyhow::Result<Simulator> {
        config.validate()?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let addr = listener.local_addr()?;
        let outside = config.outside.clone();
        let shared = Arc::new(Shared::new(config, tokio::runtime::Handle::current()));
        for o in outside {
            server::set_outside(&shared, o);
        }
        let (stop, stop_rx) = watch::channel(false);
        let is_tls = tls.is_some();
        let task = tokio::spawn(server::accept_loop(listener, shared.clone(), tls, stop_rx));
        Ok(Simulator {
            addr,
            tls: is_tls,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, or `https://…` when serving TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Same data as `GET /__sim/stats`.
    pub fn stats(&self) -> SimStats {
        self.shared.stats(unix_ms())
    }

    /// Same as `POST /__sim/reset`: clears counters, windows and the CRM store.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Same as `GET /__sim/oauth`.
    pub fn oauth_settings(&self) -> OauthSettings {
        self.shared.oauth.settings()
    }

    /// Replaces the OAuth settings whole (`POST /__sim/oauth` changes only the keys it names).
    ///
    /// # Panics
    /// If `settings` is invalid: that is a mistake in the calling test.
    pub fn set_oauth(&self, settings: OauthSettings) {
        if let Err(e) = settings.validate() {
            panic!("invalid OAuth settings {settings:?}: {e}");
        }
        self.shared.oauth.set_settings(settings);
    }

    /// Same as `POST /__sim/oauth/install`: installs `app_id` in `hub_id` as a finished
    /// authorize flow would and returns the grant; `Err` names an unknown app.
    pub fn oauth_install(
        &self,
        app_id: u64,
        hub_id: u64,
        scopes: &[&str],
    ) -> anyhow::Result<OauthGrant> {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.shared
            .oauth
            .install(app_id, hub_id, scopes, tokio::time::Instant::now())
            .map_err(anyhow::Error::msg)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Spends `per_window` arrivals of the owner's burst window, evenly spread, as traffic that
    /// never passes through the gateway would. 0 stops it. Shorthand for [`Self::set_outside`]
    /// with the steady pattern.
    pub fn set_outside_consumer(&self, app_id: u64, portal_id: u64, per_window: u32) {
        self.set_outside(OutsideConfig::steady(app_id, portal_id, per_window));
    }

    /// Same as `POST /__sim/outside`: starts, replaces or (`per_window == 0`) stops the outside
    /// consumer of (`app_id`, `portal_id`), following its pattern.
    ///
    /// # Panics
    /// If `config` is invalid (see [`OutsideConfig::validate`]): a bursty consumer with
    /// `every_ms == 0` or a ramp with `ramp_ms == 0` is a mistake in the calling test, and
    /// quietly doing something else would hide it.
    pub fn set_outside(&self, config: OutsideConfig) {
        if let Err(e) = config.validate() {
            panic!("invalid outside consumer {config:?}: {e}");
        }
        server::set_outside(&self.shared, config);
    }

    /// Stops accepting, gives open connections a moment to finish, then ends them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.shared.stop_outside();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // A handle dropped without `shutdown` must not leave a listener or consumers behind.
        let _ = self.stop.send(true);
        self.shared.stop_outside();
    }
}
