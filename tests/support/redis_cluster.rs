//! A Redis Cluster of a test's own on 127.0.0.1: `redis-server --cluster-enabled yes` per
//! node on candidate ports (client and bus port both chosen, so neither falls in the
//! kernel's ephemeral range), joined by `redis-cli --cluster create`, killed on drop.
//! Failure detection is quick (`cluster-node-timeout` 1 s) and a master's loss leaves the
//! other masters serving (`cluster-require-full-coverage no`), as docs/redis.md advises.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{candidate_port, wait_until_blocking};

/// How long the cluster may take to agree on its slots after it is created, and a replica
/// to take over after its master is killed.
const PATIENCE: Duration = Duration::from_secs(20);

/// `cluster-node-timeout`: how long a master may be silent before its replica takes over.
const NODE_TIMEOUT_MS: u64 = 1_000;

/// One node's process and ports.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A cluster of `masters` masters with `replicas` replicas each, on loopback.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node says
    /// `cluster_state:ok`.
    pub(crate) fn start(masters: usize, replicas: usize) -> RedisCluster {
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..masters * (1 + replicas) {
            let node = cluster.start_node();
            cluster.nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}): these tests build a real cluster; run \
                     scripts/test.sh, which installs it (apt-get install -y redis-tools)"
                )
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        wait_until_blocking("every cluster node says cluster_state:ok", PATIENCE, || {
            cluster.live_ports().iter().all(|port| {
                cli(*port, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
            })
        });
        // Every replica has synced, so a killed master has a replica able to take over.
        wait_until_blocking("every replica is in sync", PATIENCE, || {
            cluster.live_ports().iter().all(|port| {
                cli(*port, &["INFO", "replication"]).is_some_and(|info| {
                    !info.contains("role:slave") || info.contains("master_link_status:up")
                })
            })
        });
        cluster
    }

    /// One node on fresh candidate ports, answering `PING`.
    fn start_node(&self) -> Node {
        for _ in 0..20 {
            let (port, bus) = (candidate_port(), candidate_port());
            if port == bus || self.nodes.iter().any(|n| n.port == port) {
                continue;
            }
            let log = self.dir.path().join(format!("{port}.log"));
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args([
                    "--cluster-config-file",
                    &self
                        .dir
                        .path()
                        .join(format!("{port}.conf"))
                        .to_string_lossy(),
                ])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args(["--dir", &self.dir.path().to_string_lossy()])
                .args(["--logfile", &log.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start redis-server ({e}): apt-get install -y redis-server")
                });
            let pid = child.id();
            let mut exited = false;
            wait_until_blocking(
                &format!("cluster node on port {port} answers"),
                PATIENCE,
                || {
                    if child.try_wait().unwrap().is_some() {
                        exited = true;
                        return true;
                    }
                    cli(port, &["INFO", "server"])
                        .is_some_and(|info| info.contains(&format!("process_id:{pid}")))
                },
            );
            if !exited {
                return Node {
                    port,
                    child: Some(child),
                };
            }
            let log = read_log(&log);
            assert!(
                log.contains("Address already in use"),
                "redis-server exited:\n{log}"
            );
        }
        panic!("no free ports for a cluster node in 20 tries");
    }

    /// Every node as a seed URL for `[store] redis_urls`.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `args` on every live node; each node's answer.
    pub(crate) fn on_every_node(&self, args: &[&str]) -> Vec<Option<String>> {
        self.live_ports()
            .iter()
            .map(|port| cli(*port, args))
            .collect()
    }

    /// The slot Redis puts `key` in (`CLUSTER KEYSLOT`).
    pub(crate) fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The port of the master serving `key`'s slot now, from a live node's
    /// `CLUSTER NODES`.
    pub(crate) fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key);
        self.masters()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
            .map(|(port, _)| port)
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    /// Each live master's port and slot ranges, as a live node sees them.
    pub(crate) fn masters(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let port = self.live_ports()[0];
        let nodes = cli(port, &["CLUSTER", "NODES"]).unwrap_or_default();
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let address = fields.get(1)?.split('@').next()?;
                let port: u16 = address.rsplit(':').next()?.parse().ok()?;
                let ranges = fields
                    .iter()
                    .skip(8)
                    .filter_map(|range| {
                        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                        Some((lo.parse().ok()?, hi.parse().ok()?))
                    })
                    .collect::<Vec<_>>();
                (!ranges.is_empty()).then_some((port, ranges))
            })
            .collect()
    }

    /// SIGKILL the node on `port`: no goodbye to clients or to the cluster.
    pub(crate) fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until a live master serves `key`'s slot again (its replica promoted) and
    /// every live node says `cluster_state:ok`; returns that master's port.
    pub(crate) fn wait_for_takeover(&self, key: &str, dead: u16) -> u16 {
        let slot = self.slot_of(key);
        let mut promoted = 0;
        wait_until_blocking(
            &format!("a replica takes over slot {slot}"),
            PATIENCE,
            || {
                let found = self.masters().into_iter().find(|(port, ranges)| {
                    *port != dead && ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot))
                });
                match found {
                    Some((port, _)) => {
                        promoted = port;
                        cli(port, &["CLUSTER", "INFO"])
                            .is_some_and(|i| i.contains("cluster_state:ok"))
                    }
                    None => false,
                }
            },
        );
        promoted
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `redis-cli -p port args...`: its output, or `None` when it fails (node down).
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}
