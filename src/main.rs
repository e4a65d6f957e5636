//! The `telepolice-agent` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use telepolice_agent::cli::{self, Cli, Outcome};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Outcome::NotYetAvailable => {
            eprintln!(
                "telepolice-agent: the watchdog is not built yet; this release only ships its test foundation"
            );
            ExitCode::from(2)
        }
    }
}
