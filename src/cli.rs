//! The command line: what a user can ask of the binary.

use clap::Parser;

/// Puts a Kubernetes cluster back after a Telepresence session dies without cleaning up.
#[derive(Debug, Parser)]
#[command(name = "telepolice-agent", version, about, long_about = None)]
pub struct Cli {}

/// What `main` should do once the arguments are parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to run yet: say so and exit with this code.
    NotYetAvailable,
}

/// Decides what to do for parsed arguments.
pub fn run(_cli: Cli) -> Outcome {
    Outcome::NotYetAvailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
