//! The `webhook-sink` binary: see `cli` for the subcommands.

fn main() -> std::process::ExitCode {
    webhook_sink::cli::main()
}
