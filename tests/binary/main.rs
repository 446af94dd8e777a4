//! Integration tests of what ships: the built `hubgate` binary run as a process (its
//! commands, logs, signals, `load` and `demo`), and the repository's own files (deployment
//! files, the configuration docs against the schema, the source layout). One binary for
//! all of them: each test binary links the whole crate.

#[path = "../support/mod.rs"]
mod support;

mod apps_config;
mod cli;
mod config_docs;
mod deploy_files;
mod installs;
mod layout;
mod load;
mod no_secrets;
mod reload_signal;
