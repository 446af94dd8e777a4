//! A gateway running in this process, on listeners bound to 127.0.0.1:0 and handed to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use hubgate::config::StaticCredential;
use hubgate::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{get, metric_sum, metric_value, scrape, wait_for, wait_until};

/// A gateway running in this process on ephemeral loopback ports.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    /// Starts a gateway forwarding to `upstream_base_url`, after `tune` adjusts the config.
    pub(crate) async fn start(upstream_base_url: &str, tune: impl FnOnce(&mut Config)) -> Gateway {
        let mut config = Config::default();
        config.upstream.base_url = upstream_base_url.to_string();
        tune(&mut config);
        let problems = config.validate();
        assert!(problems.is_empty(), "test config invalid: {problems:?}");
        Gateway::spawn(config, None).await
    }

    /// Starts a gateway from a config file, which reloads read again. Listens on
    /// ephemeral loopback ports whatever the file's `[server]` says.
    pub(crate) async fn start_from_file(path: &Path) -> Gateway {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        Gateway::spawn(config, Some(path.to_path_buf())).await
    }

    async fn spawn(config: Config, path: Option<PathBuf>) -> Gateway {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = hubgate::Listeners { proxy, admin };
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = match path {
            Some(path) => tokio::spawn(hubgate::run_from_file(path, config, listeners, shutdown)),
            None => tokio::spawn(hubgate::run(config, listeners, shutdown)),
        };
        wait_until_healthy(admin_addr).await;
        Gateway {
            proxy: proxy_addr,
            admin: admin_addr,
            shutdown: Some(tx),
            task,
        }
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.proxy, path_and_query)
    }

    /// `http://<admin listener><path>`.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Signals shutdown (like SIGTERM) without waiting.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub(crate) async fn metrics(&self) -> String {
        scrape(self.admin).await
    }

    /// Calls answered so far, over every outcome of `hubgate_requests_total`.
    pub(crate) async fn answered(&self) -> f64 {
        metric_sum(&self.metrics().await, "hubgate_requests_total{")
    }

    /// Calls waiting in any queue now (`hubgate_queue_depth`, every owner).
    pub(crate) async fn queued(&self) -> f64 {
        metric_sum(&self.metrics().await, "hubgate_queue_depth{")
    }

    /// Calls accepted and not yet answered (`hubgate_requests_in_flight`).
    pub(crate) async fn in_flight(&self) -> f64 {
        metric_value(&self.metrics().await, "hubgate_requests_in_flight")
            .expect("hubgate_requests_in_flight is exported")
    }

    /// Waits until `queued()` is `depth`.
    pub(crate) async fn wait_for_queue_depth(&self, depth: f64, within: Duration) {
        wait_for(&format!("{depth} calls queued"), within, || async {
            match self.queued().await {
                queued if queued == depth => Ok(()),
                queued => Err(format!("{queued} queued")),
            }
        })
        .await
    }

    /// Waits until nothing is left of past calls: no call in flight, no call queued, and
    /// (once the idle sweep ran; tests set a short `budgets.idle_ttl_ms`) no owner lane.
    /// Panics with the last metrics if that takes longer than `within`.
    pub(crate) async fn assert_settles(&self, within: Duration) {
        wait_for("the gateway settles", within, || async {
            let metrics = self.metrics().await;
            let in_flight = metric_value(&metrics, "hubgate_requests_in_flight");
            let queued = metric_sum(&metrics, "hubgate_queue_depth{");
            let owners = metric_value(&metrics, "hubgate_owners_active");
            if in_flight == Some(0.0) && queued == 0.0 && owners == Some(0.0) {
                Ok(())
            } else {
                Err(format!(
                    "in flight {in_flight:?}, queued {queued}, owners {owners:?}"
                ))
            }
        })
        .await
    }
}

/// Waits until the admin listener answers `/healthz`: by then the gateway has spawned every
/// task it keeps for its life (sweeper, SIGHUP handler), so task counts taken afterwards
/// measure only what calls leave behind.
async fn wait_until_healthy(admin: SocketAddr) {
    wait_until(
        "the gateway's /healthz answers 200",
        Duration::from_secs(10),
        || async {
            let Ok(mut stream) = TcpStream::connect(admin).await else {
                return false;
            };
            let request = b"GET /healthz HTTP/1.1\r\nhost: hubgate\r\nconnection: close\r\n\r\n";
            let mut answer = Vec::new();
            stream.write_all(request).await.is_ok()
                && stream.read_to_end(&mut answer).await.is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
        },
    )
    .await
}

/// A normal call on a new connection succeeds: the gateway keeps serving.
pub(crate) async fn still_serves(gateway: &Gateway) {
    let (status, _, _) = get(&gateway.url("/crm/v3/objects/contacts")).await;
    assert_eq!(status, StatusCode::OK, "the gateway keeps serving");
}

/// Tasks alive in this test's runtime (the gateway runs in it too), for leak checks.
pub(crate) fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until at most `baseline + slack` tasks are alive, or panics after `within`.
pub(crate) async fn assert_tasks_return_to(baseline: usize, slack: usize, within: Duration) {
    wait_for(
        &format!("at most {baseline} + {slack} tasks alive"),
        within,
        || async {
            match alive_tasks() {
                alive if alive <= baseline + slack => Ok(()),
                alive => Err(format!("{alive} tasks alive")),
            }
        },
    )
    .await
}

/// A `[[credentials]]` entry: `token` known in advance as (`app_id`, `portal_id`)'s, so no
/// introspection stands between its first call and its lane.
pub(crate) fn known_owner(token: &str, app_id: u64, portal_id: u64) -> StaticCredential {
    StaticCredential {
        token: Some(token.to_string()),
        token_sha256: None,
        app_id,
        portal_id,
    }
}
