//! Reloading the configuration: on SIGHUP, and when the config file is saved.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::config::Config;

/// How the daemon reloads its configuration: on each SIGHUP, and when the config file is
/// saved, `load` is called; a config that loads replaces the running one, one that does not
/// is logged and ignored.
pub struct Reload {
    /// The SIGHUP stream (installed before the daemon starts, so that an early SIGHUP does
    /// not kill it).
    pub hangups: tokio::signal::unix::Signal,
    /// Reads the config file again (with the command line's overrides).
    pub load: Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reload")
    }
}

/// Watches the config file's directory (editors replace files rather than write them in
/// place); a change to the file itself is sent to the returned channel. `None`, with a
/// debug line, when the directory cannot be watched (it may not exist: no config file).
pub(super) fn watch_config_file(
    path: &Path,
) -> Option<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
    use notify::Watcher;
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_os_string();
    // Made if missing (private, as a config dir is), so that a file written there later is
    // seen too.
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    if let Err(e) = b.create(&dir) {
        info!(dir = %dir.display(), "cannot make the config file's directory ({e}); saving the file will not reload it, SIGHUP will");
        return None;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            debug!("not watching the config file: {e}");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        info!(dir = %dir.display(), "not watching the config file's directory ({e}); saving the file will not reload it, SIGHUP will");
        return None;
    }
    Some((watcher, rx))
}

/// The next request to reload: a SIGHUP, or the config file changed (a burst of editor
/// events within 300 ms is one change). Never without a reload.
///
/// Cancel-safe: a change already seen waits in `edit_due` for the next call.
pub(super) async fn next_reload(
    reload: &mut Option<Reload>,
    edits: &mut Option<mpsc::UnboundedReceiver<()>>,
    edit_due: &mut Option<tokio::time::Instant>,
) -> &'static str {
    let hangup = async {
        let Some(r) = reload else {
            return std::future::pending().await;
        };
        if r.hangups.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    };
    let edit = async {
        loop {
            if let Some(due) = *edit_due {
                tokio::time::sleep_until(due).await;
                *edit_due = None;
                return;
            }
            let Some(rx) = edits.as_mut() else {
                return std::future::pending().await;
            };
            if rx.recv().await.is_none() {
                return std::future::pending().await;
            }
            while rx.try_recv().is_ok() {}
            *edit_due = Some(tokio::time::Instant::now() + Duration::from_millis(300));
        }
    };
    tokio::select! {
        () = hangup => "SIGHUP",
        () = edit => "the config file changed",
    }
}
