//! Logging set-up: human-readable lines on stderr (journald and Console keep them), level
//! from `TELEPOLICE_LOG` (an `EnvFilter` directive, default `info`).

use tracing_subscriber::EnvFilter;

/// Logs to stderr. Safe to call once per process.
pub fn init_stderr() {
    let filter =
        EnvFilter::try_from_env("TELEPOLICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
