//! Logging set-up: human-readable lines on stderr (journald and Console keep them) and a
//! daily rolling file in the log dir (seven kept). The level comes from `TELEPOLICE_LOG`
//! (an `EnvFilter` directive such as `debug`), default `info`.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("TELEPOLICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logs to stderr and to daily files `telepolice-agent.<date>.log` in `dir`. Returns the
/// guard that flushes the file writer when dropped (keep it for the life of the daemon),
/// and the reason the file could not be set up, if so (stderr logging works regardless).
pub fn init(dir: &Path) -> (Option<WorkerGuard>, Option<String>) {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    let appender = b.create(dir).map_err(|e| e.to_string()).and_then(|()| {
        Builder::new()
            .rotation(Rotation::DAILY)
            .filename_prefix("telepolice-agent")
            .filename_suffix("log")
            .max_log_files(7)
            .build(dir)
            .map_err(|e| e.to_string())
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    match appender {
        Ok(a) => {
            let (writer, guard) = tracing_appender::non_blocking(a);
            let file = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false);
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(stderr)
                .with(file)
                .try_init();
            (Some(guard), None)
        }
        Err(e) => {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(stderr)
                .try_init();
            (
                None,
                Some(format!(
                    "cannot log to {}: {e}; logging to stderr only",
                    dir.display()
                )),
            )
        }
    }
}
