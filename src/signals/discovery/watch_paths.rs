//! The Telepresence programs watched with `notify`, by path: where inotify is not (macOS,
//! with FSEvents). Built on Linux only for its test.
//!
//! # Caveats
//! - Never run on a Mac. FSEvents reports no opens, so there a session's start is found by
//!   the safety-net scan (every 2 s by default), not by this watch; a program created,
//!   renamed or changed in a watched directory is reported, said at info and hinted.
//! - FSEvents watches by path, so a program replaced at its path stays watched without
//!   anything being done; a backend that watches by inode (kqueue) would lose it.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use tracing::{debug, info};

use super::{Hint, WatchError};

/// The watch on the Telepresence programs and the search directories.
pub struct ProgramWatch {
    /// Calls the hint from notify's own thread; stops when dropped.
    watcher: notify::RecommendedWatcher,
    programs: Vec<PathBuf>,
}

impl ProgramWatch {
    /// Watches `programs` and `dirs` (those that exist); `names` are the file names that
    /// count as a program. `hint` is called (from notify's thread) when it is worth looking
    /// at new pids.
    ///
    /// # Errors
    /// [`WatchError::Init`] if the watcher cannot be started, [`WatchError::Program`] if one
    /// of `programs` cannot be watched (it does not exist).
    pub fn start(
        programs: &[PathBuf],
        dirs: &[PathBuf],
        names: &[String],
        hint: Hint,
    ) -> Result<Self, WatchError> {
        let names = names.to_vec();
        let is_program = move |p: &Path| {
            p.file_name()
                .is_some_and(|n| names.iter().any(|x| OsStr::new(x) == n))
        };
        let handler = move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            match ev.kind {
                EventKind::Access(_) => {
                    hint();
                }
                EventKind::Create(_)
                | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_)) => {
                    if let Some(p) = ev.paths.iter().find(|p| is_program(p) && p.is_file()) {
                        info!(
                            "watching the new or replaced Telepresence program {}",
                            p.display()
                        );
                        hint();
                    }
                }
                _ => {}
            }
        };
        let mut watcher = notify::recommended_watcher(handler)
            .map_err(|e| WatchError::Init(std::io::Error::other(e)))?;
        for p in programs {
            watcher
                .watch(p, RecursiveMode::NonRecursive)
                .map_err(|e| WatchError::Program {
                    path: p.clone(),
                    source: std::io::Error::other(e),
                })?;
        }
        for d in dirs.iter().filter(|d| d.is_dir()) {
            if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                debug!("not watching the directory {}: {e}", d.display());
            }
        }
        Ok(Self {
            watcher,
            programs: programs.to_vec(),
        })
    }

    /// Watches one more program (one a session was found running), unless it is watched
    /// already. Returns whether it is watched anew.
    pub fn add_program(&mut self, path: &Path) -> bool {
        if self.programs.iter().any(|p| p == path) {
            return false;
        }
        match self.watcher.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.programs.push(path.to_path_buf());
                true
            }
            Err(e) => {
                debug!("not watching {}: {e}", path.display());
                false
            }
        }
    }

    /// The programs watched.
    pub fn programs(&self) -> Vec<PathBuf> {
        self.programs.clone()
    }
}

impl fmt::Debug for ProgramWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgramWatch")
            .field("programs", &self.programs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn opening_a_watched_program_is_a_hint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = dir.path().join("telepresence");
        std::fs::write(&program, "#!/usr/bin/env python3\n").expect("written");
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        let mut watch = ProgramWatch::start(
            &[],
            &[],
            &["telepresence".to_string()],
            Arc::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
                true
            }),
        )
        .expect("watching");
        assert!(watch.add_program(&program));
        assert!(!watch.add_program(&program), "only once");
        assert_eq!(watch.programs(), std::slice::from_ref(&program));
        std::fs::read(&program).expect("readable");
        let end = Instant::now() + Duration::from_secs(5);
        while n.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < end, "no hint");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
