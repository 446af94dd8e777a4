//! SIGHUP on the real binary: the config file is read again and applied in place (the
//! `[log]` level included), a bad file changes nothing, and the process keeps running.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

const TOKEN: &str = "pat-na1-reload-test";

/// A file for `upstream` with `TOKEN` owned by app 1 in portal 10, plus `rest`.
fn config_text(upstream: SocketAddr, rest: &str) -> String {
    format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n\n\
         [[credentials]]\ntoken = \"{TOKEN}\"\napp_id = 1\nportal_id = 10\n\n{rest}"
    )
}

#[tokio::test]
async fn sighup_reloads_the_real_binary_and_it_keeps_running() {
    let upstream =
        upstream(|_| async { Response::new(Full::new(Bytes::from_static(b"{}"))) }).await;
    let text = |burst_limit: u32, level: &str| {
        format!(
            "{EPHEMERAL_SERVER}\n[log]\nlevel = \"{level}\"\n\n{}",
            config_text(
                upstream,
                &format!("[budgets]\nburst_limit = {burst_limit}\n")
            )
        )
    };
    // Warnings only at first; the reload turns info logs on, and says so at info. (So the
    // start-up line, at info, is not there to say which ports it took.)
    let file = ConfigFile::new(&text(3, "warn"));
    let mut command = hubgate();
    command.args(["--config", file.path().to_str().unwrap()]);
    let mut child = HubgateProcess::start_quiet(command);
    let reloads = |metrics: &str, result: &str| {
        metric_value(
            metrics,
            &format!("hubgate_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    let within = Duration::from_secs(20);
    wait_until("the binary serves", within, || async {
        try_scrape(child.admin).await.is_some()
    })
    .await;

    file.write(&text(9, "info"));
    child.hangup();
    wait_until("a successful reload", within, || async {
        try_scrape(child.admin)
            .await
            .is_some_and(|m| reloads(&m, "success") == Some(1.0))
    })
    .await;
    assert!(child.is_running(), "SIGHUP did not end the process");
    let (status, _, _) = get_with_token(&child).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = get(&child.admin_url("/admin/owners/1:10")).await;
    assert_eq!(json(&body)["budgets"]["burst"]["limit"], 9);

    file.write("[budgets]\nburst_limit = 0\n");
    child.hangup();
    wait_until("a refused reload", within, || async {
        try_scrape(child.admin)
            .await
            .is_some_and(|m| reloads(&m, "failure") == Some(1.0))
    })
    .await;
    let metrics = scrape(child.admin).await;
    assert_eq!(
        metric_value(&metrics, "hubgate_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(child.is_running(), "still running after a bad reload");
    let (status, _, _) = get_with_token(&child).await;
    assert_eq!(status, StatusCode::OK, "the old config still serves");

    let (exit, logs) = child.terminate().await;
    assert!(exit.success(), "exit status {exit:?}");
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

async fn get_with_token(child: &HubgateProcess) -> (StatusCode, http::HeaderMap, Bytes) {
    send(
        Request::get(child.url("/crm/v3/objects/contacts"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}
