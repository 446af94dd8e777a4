//! The built binary with OAuth installs on disk: it loads them at start from the key in
//! `HUBGATE_SECRET_KEY`, finds them again after a restart, refuses to start without the
//! key or with another one, and no token or key reaches its output (debug logs on).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use hubgate::oauth::{
    EmbeddedInstallStore, Install, InstallKey, InstallStatus, InstallStore, Secret, SecretKey,
};

use crate::support::*;

const KEY: &str = "9e8d7c6b5a4938271605f4e3d2c1b0a99887766554433221100ffeeddccbbaa9";
const WRONG_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const REFRESH: &str = "bintest-refresh-4d3c2b1a0f9e8d";
const ACCESS: &str = "bintest-access-77665544332211";

fn install(hub_id: u64) -> Install {
    Install {
        key: InstallKey { app_id: 42, hub_id },
        scopes: vec!["oauth".into()],
        status: InstallStatus::Active,
        refresh_token: Secret::new(format!("{REFRESH}-{hub_id}")),
        access_token: Some(Secret::new(format!("{ACCESS}-{hub_id}"))),
        access_expires_at_unix_ms: 1_800_000_000_000,
        updated_at_unix_ms: 1_700_000_000_000,
        version: 0,
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [REFRESH, ACCESS, KEY, WRONG_KEY] {
        assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
    }
}

/// Runs `command` expecting it to exit by itself (a refused start): its exit code and
/// stderr. Killed and failed if still running after 20 s.
async fn refused(mut command: Command) -> (Option<i32>, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hubgate kept running instead of refusing to start");
        }
        // Polling a std child's exit, which offers no future to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_with(config: &Path, key: Option<&str>) -> Command {
    let mut command = hubgate();
    command.args(["--config", config.to_str().unwrap()]);
    command.env_remove("HUBGATE_SECRET_KEY");
    if let Some(key) = key {
        command.env("HUBGATE_SECRET_KEY", key);
    }
    command
}

#[tokio::test]
async fn installs_load_again_after_a_restart_and_no_key_or_a_wrong_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("installs.redb");
    {
        let store = EmbeddedInstallStore::open(&db, SecretKey::from_hex(KEY).unwrap()).unwrap();
        for hub in [1, 2, 3] {
            assert!(store.put_if(install(hub), None).await.unwrap());
        }
    }
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}[upstream]\nbase_url = \"http://127.0.0.1:9\"\n\
         [log]\nlevel = \"debug\"\nformat = \"json\"\n[oauth]\nstore_path = \"{}\"\n",
        db.display()
    ));

    let mut loaded = Vec::new();
    for life in 0..2 {
        let child = HubgateProcess::start(run_with(config.path(), Some(KEY)));
        let metrics = get(&child.admin_url("/metrics")).await.2;
        assert_no_secret("/metrics", &String::from_utf8_lossy(&metrics));
        let (_, logs) = child.terminate().await;
        assert_no_secret("the logs", &logs);
        let line = logs
            .lines()
            .find(|l| l.contains("OAuth installs loaded"))
            .unwrap_or_else(|| panic!("life {life}: no load line in\n{logs}"));
        let count: String = line
            .split("\"installs\":")
            .nth(1)
            .unwrap_or_else(|| panic!("life {life}: no count in {line}"))
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        loaded.push(count.parse::<usize>().unwrap());
    }
    println!("installs loaded at each start: {loaded:?}");
    assert_eq!(loaded, [3, 3]);

    let (code, stderr) = refused(run_with(config.path(), None)).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("3 OAuth installs are stored"), "{stderr}");
    assert!(stderr.contains("HUBGATE_SECRET_KEY"), "{stderr}");
    assert_no_secret("the no-key refusal", &stderr);

    let (code, stderr) = refused(run_with(config.path(), Some(WRONG_KEY))).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("is not the one its installs were written with"),
        "{stderr}"
    );
    assert_no_secret("the wrong-key refusal", &stderr);

    let (code, stderr) = refused(run_with(config.path(), Some("not-hex-at-all"))).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("HUBGATE_SECRET_KEY: the secret key must be 64 hex digits"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-hex-at-all"), "{stderr}");
}
