//! One agent per user: a lock file in the runtime dir, held for the daemon's life.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::DaemonError;

/// The lock file of the runtime dir.
pub fn lock_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("telepolice-agent.lock")
}

/// Takes the per-user lock; held as long as the returned file lives.
pub fn take_lock(runtime_dir: &Path) -> Result<File, DaemonError> {
    let path = lock_path(runtime_dir);
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(runtime_dir).map_err(|source| DaemonError::Lock {
        path: path.clone(),
        source,
    })?;
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| DaemonError::Lock {
            path: path.clone(),
            source,
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Lock { path, source }),
    }
}

/// Whether a daemon holds the lock in `runtime_dir` now.
pub fn is_running(runtime_dir: &Path) -> bool {
    let path = lock_path(runtime_dir);
    match File::options().read(true).write(true).open(&path) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}
