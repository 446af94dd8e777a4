//! Callers that open connections and never speak, trickle bodies, never read answers, or
//! are still waiting when hubgate is told to stop: bounded by hubgate's connection limits
//! and timeouts, and drained cleanly on SIGTERM. The gateway runs as a child process, so
//! thousands of sockets are counted against its own file descriptors and none of them
//! outlives it.

mod buffered;
mod flood;
mod idle;
mod shutdown;
mod slow_callers;
mod workers;

use crate::support::*;

/// A `hubgate` child process forwarding to `upstream` (an `http://` base URL) with
/// `[server]` keys `server` (TOML lines) besides its ephemeral ports, and `rest` after.
pub(super) fn hubgate_with(
    upstream: &str,
    server: &str,
    rest: &str,
) -> (HubgateProcess, tempfile::NamedTempFile) {
    let config = config_file(&format!(
        "{EPHEMERAL_SERVER}{server}\n[upstream]\nbase_url = \"{upstream}\"\n{rest}\n[log]\nlevel = \"info\"\n"
    ));
    let mut command = hubgate();
    command.args(["--config", config.path().to_str().unwrap()]);
    (HubgateProcess::start(command), config)
}
