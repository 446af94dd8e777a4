//! Integration tests of what ships: the built `hubgate` binary run as a process (its
//! commands, logs, signals, `load` and `demo`), and the deployment files. One binary for
//! all of them: each test binary links the whole crate.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod deploy_files;
mod load;
mod no_secrets;
mod reload_signal;
