//! The command line: `run`, `check` and `schema`, parsed with clap and dispatched by `Cli::run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigErrors};

/// The version and the commit it was built from (`-dirty` with local changes; `unknown`
/// outside a git checkout): `0.1.0 (3f2c1ab)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PORTCULLIS_COMMIT"),
    ")"
);

/// portcullis: an API gateway and L7 reverse proxy focused on traffic protection.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version = VERSION, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a config and serve until SIGTERM or SIGINT, then drain and exit.
    Run {
        /// The config file (YAML).
        #[arg(short, long, value_name = "FILE", env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Check config files and print every problem; exits 1 if any file has one.
    Check {
        /// Config files to check.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the config file format (for editors).
    Schema,
}

/// Exit status of `run` when the config is refused (as for a usage error).
const EXIT_CONFIG_REFUSED: u8 = 2;

impl Cli {
    /// Runs the chosen command and returns the process exit status.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Run { config } => run(&config),
            Command::Check { files } => check(&files),
            Command::Schema => schema(),
        }
    }
}

fn run(path: &Path) -> ExitCode {
    init_tracing();
    let config = match config::load_file(path) {
        Ok(config) => config,
        Err(errors) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "portcullis: refusing config {}", path.display());
            let _ = write_errors(&mut stderr, path, &errors);
            return ExitCode::from(EXIT_CONFIG_REFUSED);
        }
    };
    let runtime = match crate::app::runtime_builder(config.server.worker_threads).build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("portcullis: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = VERSION,
        config = %path.display(),
        listeners = %config
            .listeners
            .iter()
            .map(|l| format!("{}={}", l.name, l.address))
            .collect::<Vec<_>>()
            .join(","),
        routes = config.routes.len(),
        upstreams = config.upstreams.len(),
        "starting portcullis"
    );
    // One line on stderr for a failure, whether the gateway never started (a port in use)
    // or stopped with an error; the error says which.
    match runtime.block_on(crate::app::run_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which is then the one to use.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints `FILE: ok` or one `FILE: path: message` line per problem, on stdout.
fn check(files: &[PathBuf]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let mut failed = false;
    for file in files {
        let written = match config::load_file(file) {
            Ok(_) => writeln!(stdout, "{}: ok", file.display()),
            Err(errors) => {
                failed = true;
                write_errors(&mut stdout, file, &errors)
            }
        };
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn write_errors(out: &mut impl Write, file: &Path, errors: &ConfigErrors) -> std::io::Result<()> {
    for error in &errors.0 {
        writeln!(out, "{}: {error}", file.display())?;
    }
    Ok(())
}

/// Prints the JSON Schema of `Config`, pretty, on stdout.
fn schema() -> ExitCode {
    let schema = schemars::schema_for!(Config);
    match serde_json::to_string_pretty(&schema) {
        Ok(json) => {
            if writeln!(std::io::stdout().lock(), "{json}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: cannot render the schema: {e}");
            ExitCode::FAILURE
        }
    }
}
