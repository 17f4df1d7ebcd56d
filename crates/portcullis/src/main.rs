//! The `portcullis` binary: parses the command line and hands over to `cli::Cli::run`.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: measured faster than the system allocator on the proxy path (docs/adr/0003).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    portcullis::cli::Cli::parse().run()
}
