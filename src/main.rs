//! The `webhook-sink` binary: see `cli` for the subcommands.

/// jemalloc instead of glibc's malloc. Events arrive in batches of hundreds and are freed
/// one by one later, and each delivery allocates a few blocks of 1-8 KB (its future, the
/// exchange, hyper's read buffer): glibc serves those from its per-thread cache only up to
/// 1 KB and 7 blocks per size, so most went through its locked, consolidating slow path
/// (13k of 64k instructions per event). jemalloc's thread caches take both patterns.
/// Measured in docs/performance.md (round 4); mimalloc was tried before and raised RSS
/// past the memory targets.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    webhook_sink::cli::main()
}
