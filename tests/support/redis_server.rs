//! A `redis-server` of a test's own on 127.0.0.1. It cannot be handed a socket, so it is
//! started on a candidate port and, should that port be taken, on another.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{candidate_port, wait_until_blocking};

/// How long redis-server may take to answer after it starts.
const PATIENCE: Duration = Duration::from_secs(10);

/// A `redis-server` of this test's own on 127.0.0.1, without persistence, killed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    /// The TLS-only port, when started with `start_tls`.
    pub(crate) tls_port: Option<u16>,
    tls: Option<Tls>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The files of a TLS port.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

/// Why a start did not give a running server.
enum Failed {
    /// The port (or the TLS port) was in use: try others.
    PortTaken,
}

impl RedisServer {
    /// Starts on a free port and waits until it answers.
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_on_free_ports(None)
    }

    /// Also listens for TLS on a second port, with these files; the plain port stays the
    /// test's own view into Redis.
    pub(crate) fn start_tls(tls: Tls) -> RedisServer {
        RedisServer::start_on_free_ports(Some(tls))
    }

    fn start_on_free_ports(tls: Option<Tls>) -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            tls_port: None,
            tls,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..20 {
            server.port = candidate_port();
            server.tls_port = server.tls.as_ref().map(|_| candidate_port());
            if server.tls_port == Some(server.port) {
                continue;
            }
            match server.run() {
                Ok(()) => return server,
                Err(Failed::PortTaken) => continue,
            }
        }
        panic!("redis-server found no free port in 20 tries");
    }

    /// Starts again, empty, on the same port(s) after `kill`; while the old process's port
    /// is not yet free, tries again until it is.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let what = format!("redis-server starts again on port {}", self.port);
        wait_until_blocking(&what, PATIENCE, || match self.run() {
            Ok(()) => true,
            Err(Failed::PortTaken) => false,
        });
    }

    /// One redis-server process on `self.port` (and `self.tls_port`), answering `PING`.
    fn run(&mut self) -> Result<(), Failed> {
        let log = self.dir.path().join("redis.log");
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &self.dir.path().to_string_lossy()])
            .args(["--logfile", &log.to_string_lossy()]);
        if let (Some(tls_port), Some(tls)) = (self.tls_port, &self.tls) {
            command
                .args(["--tls-port", &tls_port.to_string()])
                .args(["--tls-cert-file", &tls.cert.to_string_lossy()])
                .args(["--tls-key-file", &tls.key.to_string_lossy()])
                .args(["--tls-ca-cert-file", &tls.ca.to_string_lossy()])
                .args(["--tls-auth-clients", "no"]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need a real Redis; run \
                     scripts/test.sh, which installs it (apt-get install -y redis-server)"
                )
            });
        let pid = child.id();
        let mut exited = None;
        wait_until_blocking(
            &format!("redis-server on port {} answers", self.port),
            PATIENCE,
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    exited = Some(status);
                    return true;
                }
                // Ours, not another server that had the port: INFO names the process.
                self.command(&["INFO", "server"])
                    .is_some_and(|info| info.contains(&format!("process_id:{pid}\r\n")))
            },
        );
        if let Some(status) = exited {
            let log = read_log(&log);
            if log.contains("Address already in use") {
                return Err(Failed::PortTaken);
            }
            panic!("redis-server exited ({status}):\n{log}");
        }
        self.child = Some(child);
        Ok(())
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}",
            self.tls_port.expect("started with TLS")
        )
    }

    /// One command over a fresh connection; the raw RESP reply.
    pub(crate) fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes()).ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// SIGKILL: no goodbye to clients, state gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}
