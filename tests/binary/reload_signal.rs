//! SIGHUP on the real binary: the config file is read again and applied in place (the
//! `[log]` level included), a bad file changes nothing, and the process keeps running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

const TOKEN: &str = "pat-na1-reload-test";

/// A config file in a directory of its own, rewritten between reloads.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hubgate.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { _dir: dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// A file for `upstream` with `TOKEN` owned by app 1 in portal 10, plus `rest`.
fn config_text(upstream: SocketAddr, rest: &str) -> String {
    format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n\n\
         [[credentials]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 10\n\n{rest}"
    )
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn sighup_reloads_the_real_binary_and_it_keeps_running() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let upstream =
        upstream(|_| async { Response::new(Full::new(Bytes::from_static(b"{}"))) }).await;
    let (proxy_port, admin_port) = (free_port(), free_port());
    let text = |burst_limit: u32, level: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{proxy_port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\n\
             [log]\nlevel = \"{level}\"\n\n{}",
            config_text(upstream, &format!("[budgets]\nburst_limit = {burst_limit}\n"))
        )
    };
    // Warnings only at first; the reload turns info logs on, and says so at info.
    let file = ConfigFile::new(&text(3, "warn"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["--config", file.path().to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let admin = format!("http://127.0.0.1:{admin_port}");
    let scrape = |admin: String| async move {
        let response = client()
            .get(format!("{admin}/metrics").parse().unwrap())
            .await;
        match response {
            Ok(response) => {
                use http_body_util::BodyExt;
                let body = response.into_body().collect().await.unwrap().to_bytes();
                Some(String::from_utf8(body.to_vec()).unwrap())
            }
            Err(_) => None,
        }
    };
    let reloads = |metrics: &str, result: &str| {
        metric_value(
            metrics,
            &format!("hubgate_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    wait_until("the binary serves", || {
        let admin = admin.clone();
        async move { scrape(admin).await.is_some() }
    })
    .await;
    let hangup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    file.write(&text(9, "info"));
    hangup(child.id());
    wait_until("a successful reload", || {
        let admin = admin.clone();
        async move {
            scrape(admin)
                .await
                .is_some_and(|m| reloads(&m, "success") == Some(1.0))
        }
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP did not end the process"
    );
    let (status, _, _) = get_with_token(proxy_port).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = get(&format!("{admin}/admin/owners/1:10")).await;
    assert_eq!(json(&body)["budgets"]["burst"]["limit"], 9);

    file.write("[budgets]\nburst_limit = 0\n");
    hangup(child.id());
    wait_until("a refused reload", || {
        let admin = admin.clone();
        async move {
            scrape(admin)
                .await
                .is_some_and(|m| reloads(&m, "failure") == Some(1.0))
        }
    })
    .await;
    let metrics = scrape(admin.clone()).await.unwrap();
    assert_eq!(
        metric_value(&metrics, "hubgate_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after a bad reload"
    );
    let (status, _, _) = get_with_token(proxy_port).await;
    assert_eq!(status, StatusCode::OK, "the old config still serves");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exits after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let logs = logs.join().unwrap();
    assert!(
        !logs.contains("hubgate listening"),
        "started at warn: {logs}"
    );
    assert!(
        logs.contains("config reloaded"),
        "the reloaded [log] level is in force: {logs}"
    );
    assert!(
        logs.contains("budgets.burst_limit: must be at least 1"),
        "the refused reload logs its problem: {logs}"
    );
}

async fn get_with_token(proxy_port: u16) -> (StatusCode, http::HeaderMap, Bytes) {
    send(
        Request::get(format!(
            "http://127.0.0.1:{proxy_port}/crm/v3/objects/contacts"
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap(),
    )
    .await
}
