//! `[[apps]]` as an operator meets it in the binary: `check-config` warns about a literal
//! client secret and about the v1 lookup HubSpot switches off on 2027-02-16, the gateway
//! warns at start-up, and a secret is read from the environment variable an entry names (a
//! missing one stops the start, naming the variable).

use std::process::Command;

use http::StatusCode;
use hubgate_sim::{SimConfig, Simulator};

use crate::support::*;

const SECRET_VAR: &str = "HUBGATE_TEST_APP_3001_SECRET";

#[test]
fn check_config_warns_about_a_literal_secret_and_names_the_v1_sunset() {
    let file = config_file(
        "[identity]\nv1_introspection = true\n\n[[apps]]\napp_id = 3001\nclient_id = \"c\"\nclient_secret = \"literal\"\n",
    );
    let output = Command::new(BIN)
        .args(["check-config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    eprintln!("check-config said:\n{stderr}");
    assert!(output.status.success(), "warnings are not errors: {stderr}");
    let path = file.path().display().to_string();
    assert!(
        stderr.contains(&format!("warning: {path}:7: apps.0.client_secret:")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("warning: {path}:2: identity.v1_introspection:"))
            && stderr.contains("2027-02-16"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("literal"),
        "the secret is not repeated: {stderr}"
    );
}

fn config_with_app(sim: &Simulator, extra: &str) -> tempfile::NamedTempFile {
    config_file(&format!(
        "{EPHEMERAL_SERVER}[upstream]\nbase_url = \"{}\"\n[identity]\nv1_introspection = false\n{extra}\n[[apps]]\napp_id = 3001\nclient_id = \"sim-client-3001\"\nclient_secret_env = \"{SECRET_VAR}\"\n",
        sim.base_url()
    ))
}

#[tokio::test]
async fn the_secret_comes_from_the_named_environment_variable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut sim_config = SimConfig {
        generate_tokens: 1,
        ..SimConfig::default()
    };
    sim_config.oauth.v1_oauth = false;
    let sim = Simulator::start(sim_config, listener).await.unwrap();

    let config = config_with_app(&sim, "");
    let missing = hubgate()
        .env_remove(SECRET_VAR)
        .args(["--config", config.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success(), "{stderr}");
    assert!(stderr.contains(SECRET_VAR), "names the variable: {stderr}");

    let mut command = hubgate();
    command
        .env(SECRET_VAR, "sim-secret-3001")
        .args(["--config", config.path().to_str().unwrap()]);
    let child = HubgateProcess::start(command);
    let request = http::Request::get(child.url("/crm/v3/objects/contacts"))
        .header("authorization", "Bearer oauth-sim-1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(request).await.0, StatusCode::OK);
    let (status, _, _) = get(&child.admin_url("/admin/owners/3001:1001")).await;
    assert_eq!(status, StatusCode::OK, "billed to app 3001 in portal 1001");
    assert_eq!(sim.stats().introspection.token_introspect, 1);
    let (exit, logs) = child.terminate().await;
    assert!(exit.success());
    assert!(!logs.contains("sim-secret-3001"), "{logs}");
}

#[tokio::test]
async fn the_gateway_warns_at_start_up_while_v1_is_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(SimConfig::default(), listener)
        .await
        .unwrap();
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}[upstream]\nbase_url = \"{}\"\n",
        sim.base_url()
    ));
    let mut command = hubgate();
    command.args(["--config", config.path().to_str().unwrap()]);
    let child = HubgateProcess::start(command);
    let (_, logs) = child.terminate().await;
    assert!(
        logs.lines()
            .any(|l| l.contains("identity.v1_introspection") && l.contains("2027-02-16")),
        "{logs}"
    );
}
