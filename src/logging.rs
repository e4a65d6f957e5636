//! Logging set-up: lines on stderr (journald and Console keep them; under journald without
//! a timestamp of our own, as the journal stamps them) and a daily rolling file in the log
//! dir (`log_retention_days` kept), as plain text or JSON (`log_format`).
//! The level is `TELEPOLICE_LOG` if set (an `EnvFilter` directive such as `debug`), else
//! the config's `log_level`.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;

use crate::config::LogFormat;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How to log.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// The log dir.
    pub dir: &'a Path,
    /// The config's level, used when `TELEPOLICE_LOG` is not set.
    pub level: &'a str,
    /// Text or JSON.
    pub format: LogFormat,
    /// Daily files kept.
    pub keep_files: usize,
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_env("TELEPOLICE_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A formatting layer writing to `w`, in the chosen format; without timestamps when
/// whatever reads it stamps lines itself (journald).
fn layer<S, W>(format: LogFormat, w: W, ansi: bool, time: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'l> tracing_subscriber::registry::LookupSpan<'l>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let l = tracing_subscriber::fmt::layer()
        .with_writer(w)
        .with_ansi(ansi)
        .with_target(false);
    match (format, time) {
        (LogFormat::Text, true) => Box::new(l),
        (LogFormat::Text, false) => Box::new(l.without_time()),
        (LogFormat::Json, true) => Box::new(l.json()),
        (LogFormat::Json, false) => Box::new(l.json().without_time()),
    }
}

/// Logs to stderr and to daily files `telepolice-agent.<date>.log` in the log dir. Returns
/// the guard that flushes the file writer when dropped (keep it for the life of the
/// daemon), and the reason the file could not be set up, if so (stderr logging works
/// regardless).
pub fn init(s: &Settings<'_>) -> (Option<WorkerGuard>, Option<String>) {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    let appender = b.create(s.dir).map_err(|e| e.to_string()).and_then(|()| {
        Builder::new()
            .rotation(Rotation::DAILY)
            .filename_prefix("telepolice-agent")
            .filename_suffix("log")
            .max_log_files(s.keep_files.max(1))
            .build(s.dir)
            .map_err(|e| e.to_string())
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // systemd sets JOURNAL_STREAM when stderr goes to the journal, which stamps each line.
    let stamped = std::env::var_os("JOURNAL_STREAM").is_none();
    match appender {
        Ok(a) => {
            let (writer, guard) = tracing_appender::non_blocking(a);
            let _ = tracing_subscriber::registry()
                .with(filter(s.level))
                .with(layer(s.format, std::io::stderr, ansi, stamped))
                .with(layer(s.format, writer, false, true))
                .try_init();
            (Some(guard), None)
        }
        Err(e) => {
            let _ = tracing_subscriber::registry()
                .with(filter(s.level))
                .with(layer(s.format, std::io::stderr, ansi, stamped))
                .try_init();
            (
                None,
                Some(format!(
                    "cannot log to {}: {e}; logging to stderr only",
                    s.dir.display()
                )),
            )
        }
    }
}
