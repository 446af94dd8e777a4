//! What the end-to-end benches share: they run only under `cargo bench`, on a
//! multi-threaded runtime.

use std::future::Future;

/// Runs `work` when started by `cargo bench` (which passes `--bench`); anything else, such
/// as `cargo test --all-targets`, gets a pointer instead of a run of a minute or more.
pub fn run_under_cargo_bench(name: &str, duration: &str, work: impl Future<Output = ()>) {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benches/{name}.rs measures for {duration}: run it with `cargo bench --bench {name}`"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(work);
}
