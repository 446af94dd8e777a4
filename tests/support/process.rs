//! The built `hubgate` binary as a child process: started on ports it picks itself and
//! reads back, its stderr collected as it goes, stopped with SIGTERM.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::wait_until_blocking;

/// The `hubgate` binary Cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hubgate");

/// A `[server]` table that lets the binary pick both ports (it binds `127.0.0.1:0`); they
/// are read back from its start-up line. The admin address is written `127.0.0.1:00`, the
/// same address spelled differently, because `check-config` refuses an `admin_listen`
/// written exactly like `listen` (it compares the text, which is right for every port but
/// 0).
pub(crate) const EPHEMERAL_SERVER: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:00\"\n";

/// How long the binary may take to start, or to exit after SIGTERM (a debug build on a
/// busy 2-core machine).
const PATIENCE: Duration = Duration::from_secs(15);

/// `hubgate` with `RUST_LOG` removed, so the config's `[log]` decides what it logs.
pub(crate) fn hubgate() -> Command {
    let mut command = Command::new(BIN);
    command.env_remove("RUST_LOG");
    command
}

/// A running `hubgate` (the gateway, `hubgate run`), killed when dropped.
#[derive(Debug)]
pub(crate) struct HubgateProcess {
    child: Option<Child>,
    pub(crate) proxy: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// Everything it wrote to stderr so far.
    logs: Arc<Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl HubgateProcess {
    /// Spawns `command` (a `hubgate` run; stderr is taken over) and waits for its start-up
    /// line, `hubgate listening proxy=... admin=...` (text or JSON logs), which gives the
    /// addresses it bound.
    pub(crate) fn start(command: Command) -> HubgateProcess {
        let (mut process, lines) = HubgateProcess::spawn(command);
        let deadline = Instant::now() + PATIENCE;
        let (proxy, admin) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addresses) = listening_line(&line) {
                        break addresses;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no start-up line within {PATIENCE:?}:\n{}", process.logs())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let exit = process.child.as_mut().unwrap().wait().unwrap();
                    panic!(
                        "hubgate exited ({exit}) before listening:\n{}",
                        process.logs()
                    )
                }
            }
        };
        process.proxy = proxy;
        process.admin = admin;
        process
    }

    /// `start` for a run whose `[log] level` hides the start-up line: its two listeners
    /// are found in /proc instead (the sockets it holds that listen), the proxy's being the
    /// one it bound first; the admin one must answer `/healthz` as the admin listener does.
    pub(crate) fn start_quiet(command: Command) -> HubgateProcess {
        let (mut process, _lines) = HubgateProcess::spawn(command);
        let pid = process.pid();
        let mut found = Vec::new();
        wait_until_blocking("hubgate listens on two ports", PATIENCE, || {
            if let Some(exit) = process.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "hubgate exited ({exit}) before listening:\n{}",
                    process.logs()
                );
            }
            found = listening_sockets(pid);
            found.len() == 2
        });
        // Both are bound by one function, proxy then admin, so the proxy has the lower fd.
        found.sort_unstable();
        let (proxy, admin) = (found[0].1, found[1].1);
        assert!(
            admin_healthz(admin),
            "{admin} (taken for the admin listener) does not answer /healthz like one"
        );
        process.proxy = proxy;
        process.admin = admin;
        process
    }

    fn spawn(mut command: Command) -> (HubgateProcess, mpsc::Receiver<String>) {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hubgate starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let kept = logs.clone();
        // Read as it comes, so a chatty process never blocks on a full pipe.
        let drain = std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                kept.lock().unwrap().push_str(&line);
                let _ = tx.send(std::mem::take(&mut line));
            }
        });
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let process = HubgateProcess {
            child: Some(child),
            proxy: unbound,
            admin: unbound,
            logs,
            drain: Some(drain),
        };
        (process, lines)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// `http://<proxy listener><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `http://<admin listener><path>`.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// What it wrote to stderr so far.
    pub(crate) fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub(crate) fn hangup(&self) {
        signal(self.pid(), "HUP");
    }

    /// SIGTERM, then waits for the exit (panics after 15 s); the exit status and all of
    /// stderr.
    pub(crate) async fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let pid = child.id();
        signal(pid, "TERM");
        let exit =
            tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || child.wait())).await;
        let Ok(exit) = exit else {
            signal(pid, "KILL");
            panic!(
                "hubgate did not exit within {PATIENCE:?} of SIGTERM:\n{}",
                self.logs()
            );
        };
        let exit = exit.unwrap().unwrap();
        // stderr ends with the process: the drain thread has read everything.
        let _ = self.drain.take().unwrap().join();
        (exit, self.logs())
    }
}

impl Drop for HubgateProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The proxy and admin addresses of a `hubgate listening` line, text or JSON.
fn listening_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = strip_ansi(line);
    if line.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(&line).ok()?;
        let fields = &value["fields"];
        if fields["message"] != "hubgate listening" {
            return None;
        }
        let addr = |name: &str| fields[name].as_str()?.parse().ok();
        return Some((addr("proxy")?, addr("admin")?));
    }
    let (_, rest) = line.split_once("hubgate listening")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((field("proxy")?, field("admin")?))
}

/// Text logs colour their fields (`tracing` writes ANSI escapes even into a pipe).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The IPv4 TCP sockets process `pid` holds that listen: (fd, address).
fn listening_sockets(pid: u32) -> Vec<(u32, SocketAddr)> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fd_of_inode = HashMap::new();
    for entry in fds.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'));
        let fd = entry.file_name().to_string_lossy().parse::<u32>();
        if let (Some(inode), Ok(fd)) = (inode, fd) {
            fd_of_inode.insert(inode.to_string(), fd);
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut found = Vec::new();
    for row in table.lines().skip(1) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        // local_address, st (0A: LISTEN), inode.
        let (Some(local), Some("0A"), Some(inode)) =
            (fields.get(1), fields.get(3).copied(), fields.get(9))
        else {
            continue;
        };
        let Some(&fd) = fd_of_inode.get(*inode) else {
            continue;
        };
        let Some((ip, port)) = local.split_once(':') else {
            continue;
        };
        let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16))
        else {
            continue;
        };
        // The kernel prints the address as a number in host byte order.
        let ip = Ipv4Addr::from(ip.to_ne_bytes());
        found.push((fd, SocketAddr::V4(SocketAddrV4::new(ip, port))));
    }
    found
}

/// Whether `addr` answers `GET /healthz` with `{"status":"ok"}`, as the admin listener does.
fn admin_healthz(addr: SocketAddr) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let request = b"GET /healthz HTTP/1.1\r\nhost: hubgate\r\nconnection: close\r\n\r\n";
    let mut answer = String::new();
    if stream.write_all(request).is_err() || stream.read_to_string(&mut answer).is_err() {
        return false;
    }
    answer.starts_with("HTTP/1.1 200")
        && answer.split_once("\r\n\r\n").is_some_and(|(_, body)| {
            serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["status"] == "ok")
        })
}
