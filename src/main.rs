//! The `hubgate` binary: all behaviour lives in the library so tests can start it in-process.
#![forbid(unsafe_code)]

// A call allocates and frees some hundred small blocks (headers, bodies, futures) across
// threads; mimalloc's per-thread free lists serve them in a fraction of glibc malloc's
// instructions (measured in BENCHMARKS.md, "Proxy cost with 200 owners").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hubgate::cli::main()
}
