//! The `telepolice-agent` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use telepolice_agent::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
