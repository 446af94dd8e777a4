//! The `hubgate` binary: all behaviour lives in the library so tests can start it in-process.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hubgate::cli::main()
}
