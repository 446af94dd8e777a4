//! The `hubgate` binary as an operator uses it: help, check-config, a real run with
//! logs, and SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;
use http::StatusCode;

#[test]
fn help_documents_every_command() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for word in [
        "run",
        "check-config",
        "sim",
        "healthcheck",
        "hash-key",
        "load",
        "demo",
        "--config",
    ] {
        assert!(help.contains(word), "--help mentions {word}: {help}");
    }
    let output = Command::new(BIN)
        .args(["check-config", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8(output.stdout).unwrap().contains("exit 0"));
}

#[test]
fn the_shipped_config_toml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let output = Command::new(BIN)
        .args(["check-config", path])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_config_lists_every_problem_with_file_line_and_key() {
    let file = config_file(
        "[server]\n\
         listen = \"not-an-address\"\n\
         max_body_bytes = 0\n\
         \n\
         [upstream]\n\
         base_url = \"ftp://api.hubapi.com\"\n\
         respons_timeout_ms = 10\n\
         [log]\n\
         format = \"xml\"\n",
    );
    let output = Command::new(BIN)
        .args(["check-config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let path = file.path().display().to_string();
    for expected in [
        format!("{path}:2: server.listen:"),
        format!("{path}:3: server.max_body_bytes:"),
        format!("{path}:6: upstream.base_url:"),
        format!("{path}:7: upstream.respons_timeout_ms: unknown key"),
        format!("{path}:9: log.format:"),
    ] {
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_config_names_the_line_of_a_syntax_or_type_error() {
    let file = config_file(
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[upstream]\nconnect_timeout_ms = \"fast\"\n",
    );
    let output = Command::new(BIN)
        .args(["check-config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(":5: upstream.connect_timeout_ms:"),
        "{stderr}"
    );

    let file = config_file("[server\nlisten = 1\n");
    let output = Command::new(BIN)
        .args(["check-config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains(":1:"));
}

#[test]
fn running_with_a_missing_explicit_config_fails_clearly() {
    let output = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/hubgate.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("cannot read"));
}

#[tokio::test]
async fn the_binary_serves_logs_without_secrets_and_exits_0_on_sigterm() {
    let upstream = crate::support::echo::start().await;
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}[upstream]\nbase_url = \"http://{upstream}\"\n[log]\nformat = \"json\"\n"
    ));
    let mut command = hubgate();
    command.args(["--config", config.path().to_str().unwrap()]);
    let child = HubgateProcess::start(command);
    let first = child.logs();
    assert!(first.contains("hubgate listening"), "{first}");

    let secret_token = "pat-na1-aaaabbbb-cccc-dddd-eeee-ffff00001111";
    let (status, _, _) = get(&child.url(
        "/oauth/v1/access-tokens/CJSP5qf1KhICAQEYs-gDIIGOBii1?hapikey=legacy-secret-key&limit=5",
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    // A second call for the bearer token: one call may carry only one credential.
    let request = http::Request::get(child.url("/crm/v3/objects/contacts"))
        .header("authorization", format!("Bearer {secret_token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, _, _) = send(request).await;
    assert_eq!(status, StatusCode::OK);

    let (exit, logs) = child.terminate().await;
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        logs.contains("/oauth/v1/access-tokens/<redacted>?hapikey=<redacted>&limit=5"),
        "{logs}"
    );
    assert!(logs.contains("\"status\":200"), "{logs}");
    for secret in [secret_token, "CJSP5qf1KhICAQEYs", "legacy-secret-key"] {
        assert!(!logs.contains(secret), "{secret} leaked into logs:\n{logs}");
    }
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "JSON logs"
    );
}

#[test]
fn the_commented_examples_in_config_toml_are_valid_too() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let mut in_example = false;
    let mut uncommented = Vec::new();
    let mut examples = 0;
    for line in shipped.lines() {
        let header = line.starts_with("# [[");
        in_example = header || (in_example && line.starts_with("# ") && line.contains(" = "));
        examples += usize::from(header);
        uncommented.push(if in_example { &line[2..] } else { line });
    }
    assert!(
        examples >= 3,
        "config.toml shows examples of its arrays of tables"
    );
    for table in [
        "[[budgets.owners]]",
        "[[budgets.exempt]]",
        "[[credentials]]",
    ] {
        assert!(
            uncommented.contains(&table),
            "{table} example is uncommented"
        );
    }
    let file = config_file(&uncommented.join("\n"));
    let output = Command::new(BIN)
        .args(["check-config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        uncommented.join("\n")
    );
}

#[test]
fn hash_key_prints_the_sha256_from_an_argument_or_standard_input() {
    let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    let output = Command::new(BIN)
        .args(["hash-key", "abc"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);

    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);

    let output = Command::new(BIN).args(["hash-key", "  "]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "an empty key is refused");
}

#[test]
fn healthcheck_exits_0_only_while_the_admin_listener_answers() {
    // Upstream and admin port both refuse connections, and no one can take them meanwhile.
    let (upstream, closed_admin) = (ClosedPort::new(), ClosedPort::new());
    // The admin listener on every address, as in a container: the probe uses loopback.
    let config_text = |admin_port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"0.0.0.0:{admin_port}\"\n\
             [upstream]\nbase_url = \"{}\"\n",
            upstream.url()
        )
    };
    let config = ConfigFile::new(&config_text(closed_admin.port()));
    let healthcheck = || {
        Command::new(BIN)
            .arg("healthcheck")
            .env("HUBGATE_CONFIG", config.path())
            .output()
            .unwrap()
    };
    let down = healthcheck();
    assert_eq!(down.status.code(), Some(1), "nothing listens yet");
    assert!(String::from_utf8_lossy(&down.stderr).contains("could not be reached"));

    // The gateway picks its ports; then the file names the admin port it took, as a
    // container's config names the one it publishes.
    config.write(&config_text(0));
    let mut command = hubgate();
    command.env("HUBGATE_CONFIG", config.path());
    let child = HubgateProcess::start(command);
    let admin_port = child.admin.port();
    config.write(&config_text(admin_port));

    // An explicit URL wins over the config, and a non-200 answer fails the check (the
    // proxy port answers 502: its upstream is down).
    let url = child.url("/healthz");
    let not_health = Command::new(BIN)
        .args(["healthcheck", "--url", &url])
        .output()
        .unwrap();
    let up = healthcheck();
    drop(child);
    assert_eq!(not_health.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_health.stderr).contains("502"));
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stdout)
        .contains(&format!("http://127.0.0.1:{admin_port}/healthz: ok")));
}
