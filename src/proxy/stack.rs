//! The request path, assembled in one place: which layer wraps which, and why.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use tower::util::{BoxCloneService, BoxCloneSyncService};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use super::auth::AuthLayer;
use super::body::Body;
use super::callers::Callers;
use super::forward::Forward;
use super::guard::{GuardLayer, InboundLimits};
use super::identify::{IdentifyLayer, IdentityResolver};
use super::respond::RespondLayer;
use super::upstream;
use crate::config::Config;
use crate::hubspot::Classifier;
use crate::oauth::broker::Broker;
use crate::oauth::brokered::BrokerLayer;
use crate::oauth::install_flow::{InstallFlow, InstallFlowLayer};
use crate::oauth::setup as oauth_setup;
use crate::oauth::InstallStore;
use crate::ops::metrics::Metrics;
use crate::pace::clock::Clock;
use crate::pace::pacer::{FairWindows, HighReserve, Pacer, PacerConfig};
use crate::pace::{LastSend, PaceLayer, PacePolicy, PaceShared, ReplayBuffer};
use crate::store::{self, RedisStore};

/// The whole request path as one cloneable service that never fails: every call gets a
/// response, errors included.
pub(crate) type ProxyService = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// The request path and the handles other parts of the gateway (admin, metrics) read.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) service: ProxyService,
    pub(crate) pacer: Pacer,
    /// Set on shutdown: from then on no call is sent.
    pub(crate) last_send: LastSend,
    /// The Redis store when budgets are shared (`[store] kind = "redis"`), for `/readyz`.
    pub(crate) shared_store: Option<RedisStore>,
    /// What a reload changes in place.
    pub(crate) live: LiveSettings,
    /// The token broker, when `[[apps]]` configures any app: admin's `/admin/installs`
    /// and the background refresher use it.
    pub(crate) broker: Option<Broker>,
}

/// The settings of the running request path that a reload replaces, with nothing rebuilt:
/// limits, queues, lanes, retries, callers, credentials, identity TTLs, classification.
/// Listeners, the upstream client and the budget store stay as built.
#[derive(Debug, Clone)]
pub(crate) struct LiveSettings {
    pacer: Pacer,
    pacing: Arc<ArcSwap<PacePolicy>>,
    resolver: IdentityResolver,
}

impl LiveSettings {
    /// Applies `config` (valid: `Config::validate` is empty) to the running path. Calls
    /// already past a layer keep what they read; queued calls are judged by the new
    /// limits at once.
    pub(crate) fn apply(&self, config: &Config) -> anyhow::Result<()> {
        self.resolver
            .reconfigure(&config.identity, &config.credentials)?;
        self.pacer
            .reconfigure(pacer_config(config), config.budgets.limits());
        // The whole registry (keys included) is rebuilt from `[[callers]]` and `[inbound]`;
        // only unchanged caps keep their limiters.
        let callers = self
            .pacing
            .load()
            .callers
            .reconfigured(&config.callers, &config.inbound);
        self.pacing.store(Arc::new(pace_policy(config, callers)));
        Ok(())
    }
}

/// Builds the request path; must run inside the tokio runtime (the pacer starts its sweeper).
/// `installs` is the opened install store; without it the token broker is off. `workers`
/// is how many worker threads serve it (`crate::workers`): each gets an upstream pool.
pub(crate) fn build(
    config: &Config,
    metrics: &Metrics,
    installs: Option<Arc<dyn InstallStore>>,
    workers: usize,
) -> anyhow::Result<Stack> {
    let target = config
        .upstream_target()
        .map_err(|e| anyhow::anyhow!("[upstream] base_url: {e}"))?;
    let pools = upstream::build_pools(&config.upstream, &target, workers)?;
    let limits = InboundLimits {
        upstream_host: target.host().to_string(),
        max_header_bytes: config.server.max_header_bytes,
        max_body_bytes: config.server.max_body_bytes,
        body_idle_timeout: config.server.body_idle_timeout(),
        body_read_timeout: config.server.body_read_timeout(),
    };
    let resolver = IdentityResolver::with_apps(
        &config.identity,
        &config.credentials,
        &config.apps,
        upstream::build_client(&config.upstream)?,
        target.clone(),
        metrics.clone(),
    )?;
    let clock = Clock::new();
    let (store, shared_store) = store::build(
        &config.store,
        config.budgets.limits(),
        metrics.store_degraded_gauge(),
    )?;
    let pacer = Pacer::new(store, clock, pacer_config(config));
    let pacing = Arc::new(ArcSwap::from_pointee(pace_policy(
        config,
        Callers::new(&config.callers, &config.inbound),
    )));
    let last_send = LastSend::default();
    let replay_buffer = ReplayBuffer::new(config.retry.max_buffered_bytes);
    let pace = PaceLayer::new(PaceShared {
        pacer: pacer.clone(),
        last_send: last_send.clone(),
        replay_buffer: replay_buffer.clone(),
        policy: pacing.clone(),
        clock,
        metrics: metrics.clone(),
        batches: Default::default(),
        in_flight: Default::default(),
    });
    let live = LiveSettings {
        pacer: pacer.clone(),
        pacing: pacing.clone(),
        resolver: resolver.clone(),
    };
    let forward = Forward::new(
        pools,
        target,
        Duration::from_millis(config.upstream.response_timeout_ms),
        Duration::from_millis(config.upstream.body_idle_timeout_ms),
        metrics.clone(),
    )?;
    // hubgate's own token calls take the paced path, so they spend the token budget
    // callers' token calls spend.
    let paced = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(pace.clone())
            .service(forward.clone()),
    );
    let broker = match installs {
        Some(installs) => oauth_setup::build_broker(config, installs, paced, clock, metrics)?,
        None => None,
    };
    let install_flow = broker
        .clone()
        .map(|broker| InstallFlow::new(broker, config.oauth.authorize_url.clone(), clock));
    let service = ServiceBuilder::new()
        // Outermost: a call gets its id (the caller's X-Request-Id, or a new one) before
        // anything can answer it, so even hubgate's own errors carry it.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Sees the final answer of everything inside: turns errors into responses, logs
        // and counts each call exactly once.
        .layer(RespondLayer::new(metrics.clone()))
        // Cheap refusals first, before later layers (identity, budgets, retries) spend
        // lookups or budget on a call that cannot be served.
        .layer(GuardLayer::new(limits))
        // A browser in the install flow carries no caller key and calls no HubSpot API.
        .layer(InstallFlowLayer::new(install_flow))
        // Who may call at all, before identity: an unknown caller must not make hubgate
        // ask HubSpot about its token, nor spend any owner's budget.
        .layer(AuthLayer::new(pacing.clone()))
        // After the caller is known (its portals decide which installs it may use) and
        // before identity, which a brokered call skips: the broker names its owner.
        .layer(BrokerLayer::new(
            broker.clone(),
            pacing.clone(),
            replay_buffer,
        ))
        // Names the quota owner before pacing needs it; a lookup may wait on HubSpot, so it
        // comes after the cheap refusals.
        .layer(IdentifyLayer::new(resolver))
        // Last before the upstream: a call holds its budget slot only once nothing else
        // can refuse it, so every reserved slot is a call HubSpot really receives; its
        // retries loop back through the pacer, so they are paced like any call.
        .layer(pace)
        .service(forward);
    Ok(Stack {
        service: BoxCloneService::new(service),
        pacer,
        last_send,
        shared_store,
        live,
        broker,
    })
}

/// The pacer's settings from `[queue]`, `[budgets]`, `[retry]` and `[lanes]`.
fn pacer_config(config: &Config) -> PacerConfig {
    PacerConfig {
        max_depth_per_owner: config.queue.max_depth_per_owner,
        idle_ttl: Duration::from_millis(config.budgets.idle_ttl_ms),
        retry: config.retry.clone(),
        high_reserve: high_reserve(config),
        fair_windows: fair_windows(config),
    }
}

/// What the pacing layer reads per call, with `callers` built from `[[callers]]`.
fn pace_policy(config: &Config, callers: Callers) -> PacePolicy {
    PacePolicy {
        classifier: Classifier::new(&config.budgets.exempt),
        max_wait: Duration::from_millis(config.queue.max_wait_ms),
        search_pause: Duration::from_millis(config.budgets.search_window_ms),
        retry: config.retry.clone(),
        callers,
        coalesce: config.coalesce.clone(),
        still_out_every: config.budgets.limits().shortest_span() / 2,
    }
}

/// `[lanes] high_reserve_percent` of each window, in slots (rounded up, so a configured
/// reserve is never zero).
fn high_reserve(config: &Config) -> HighReserve {
    let share = |limit: u32| {
        (u64::from(limit) * u64::from(config.lanes.high_reserve_percent)).div_ceil(100) as usize
    };
    HighReserve {
        burst_slots: share(config.budgets.burst_limit),
        search_slots: share(config.budgets.search_limit),
        memory: Duration::from_millis(config.budgets.burst_window_ms),
    }
}

/// The windows an owner's callers split between them, as the pacer counts them.
fn fair_windows(config: &Config) -> FairWindows {
    let budgets = &config.budgets;
    let window = |limit: u32, ms: u64, margin_ms: u64| {
        (
            limit.saturating_sub(budgets.margin_slots),
            Duration::from_millis(ms + margin_ms),
        )
    };
    FairWindows {
        burst: window(
            budgets.burst_limit,
            budgets.burst_window_ms,
            budgets.burst_margin_ms,
        ),
        search: window(
            budgets.search_limit,
            budgets.search_window_ms,
            budgets.search_margin_ms,
        ),
        token: window(
            budgets.token_limit,
            budgets.token_window_ms,
            budgets.search_margin_ms,
        ),
    }
}
