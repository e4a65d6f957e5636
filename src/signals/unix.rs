//! Shutdown on signals: the first SIGTERM or SIGINT asks for a graceful stop; a second one
//! forces the process out at once.

use std::future::Future;

/// Installs the handlers now (call it inside the runtime's context, before any other work,
/// so that an early SIGTERM is not lost to the default action) and returns a future that
/// completes at the first SIGTERM or SIGINT. After that, a second one exits with 130.
pub fn shutdown() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without handlers the default actions still stop the process.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            std::process::exit(130);
        });
    }
}

/// The SIGHUP stream, installed now (inside the runtime's context): from here on a SIGHUP
/// asks for a reload instead of ending the process. `None` if the handler cannot be set.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
