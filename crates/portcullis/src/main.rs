//! The `portcullis` binary: parses the command line and hands over to `cli::Cli::run`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    portcullis::cli::Cli::parse().run()
}
