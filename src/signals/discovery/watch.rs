//! The Telepresence programs watched with inotify, by inode (Linux): each program file for
//! opens, and each directory that holds a program, or may get one (the search dirs), for a
//! file created in it, renamed into it, or changed. `brew upgrade`, `pipx reinstall` and
//! package installs write a new file and rename it over the program: the old inode's watch
//! dies with it, so the new inode is watched as soon as its directory says so.
//!
//! A std thread reads the events; the daemon hears only a [`Hint`] to look at the new pids.
//!
//! # Guarantees
//! - Directories are never watched for opens (`/usr/bin` is opened on every exec on the
//!   machine): only a file created, renamed in or changed there wakes the thread, and only
//!   a program's name (or `telepresence`, or a configured name) leads to any work.
//! - A program replaced at its path (renamed over, deleted and re-created, a symlink
//!   re-pointed) is watched again at once, said at info, and a hint follows: a session
//!   started from the new file in the instant before is found by that look.
//! - The thread stops when the watch is dropped, or when the hint says nobody listens.
//!
//! # Caveats
//! - inotify follows a symlink to its target's inode. The target's directory is watched too
//!   (pipx replaces the script inside its venv, not the link); a chain of links is not
//!   watched link by link.
//! - A dropped watch wakes its thread by removing its watches (the kernel queues an
//!   "ignored" event for each). A watch left with nothing watched at all (every directory
//!   of the search list gone) keeps its blocked thread until the process exits.
//! - If the kernel's event queue overflows, every program is watched again: replacements
//!   are not lost, opens may be (the safety-net scan is behind them).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tracing::{debug, info, warn};

use super::{Hint, WatchError};

/// A program file: opened when it is run; deleted or moved away when it is replaced.
const FILE_MASK: WatchMask = WatchMask::OPEN
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// A directory: a file created or renamed into it, or its attributes changed (`chmod +x`
/// after a copy). Never opens: see the module's guarantees.
const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::ONLYDIR);

/// The watch on the Telepresence programs and their directories.
pub struct ProgramWatch {
    /// Shared with the thread that reads the events; the thread ends once `stopped` is set
    /// (by `drop`) or the hint goes unheard.
    state: Arc<Mutex<State>>,
}

struct State {
    watches: Watches,
    /// Each program, by the path it is known by.
    programs: HashMap<PathBuf, Program>,
    /// The directories watched, by watch; one directory may have several paths (`/bin` and
    /// `/usr/bin` on a merged-/usr system are one inode, so one watch).
    dirs: HashMap<WatchDescriptor, Vec<PathBuf>>,
    /// The file names that make a new file in a watched directory a program.
    names: Vec<String>,
    hint: Hint,
    stopped: bool,
}

struct Program {
    /// The watch on its file; `None` while no file is at its path.
    wd: Option<WatchDescriptor>,
    /// Where it really is (its symlinks followed), as of its last watch.
    canonical: PathBuf,
}

impl ProgramWatch {
    /// Watches `programs` for opens, and their directories and `dirs` (those that exist)
    /// for a program appearing; `names` are the file names that count as a program. `hint`
    /// is called (from the watch's own thread) when it is worth looking at new pids.
    ///
    /// # Errors
    /// [`WatchError::Init`] if inotify cannot be started, [`WatchError::Program`] if one of
    /// `programs` cannot be watched (it does not exist), [`WatchError::Thread`] if the
    /// thread cannot be started.
    pub fn start(
        programs: &[PathBuf],
        dirs: &[PathBuf],
        names: &[String],
        hint: Hint,
    ) -> Result<Self, WatchError> {
        let inotify = Inotify::init().map_err(WatchError::Init)?;
        let mut state = State {
            watches: inotify.watches(),
            programs: HashMap::new(),
            dirs: HashMap::new(),
            names: names.to_vec(),
            hint,
            stopped: false,
        };
        for p in programs {
            state
                .watch_program(p)
                .map_err(|source| WatchError::Program {
                    path: p.clone(),
                    source,
                })?;
        }
        for d in dirs.iter().filter(|d| d.is_dir()) {
            state.watch_dir(d);
        }
        debug!(dirs = ?state.dirs.values().flatten().collect::<Vec<_>>(), "watching directories for a Telepresence program to appear");
        let state = Arc::new(Mutex::new(state));
        let reader = state.clone();
        std::thread::Builder::new()
            .name("program-watch".to_string())
            .spawn(move || read_events(inotify, &reader))
            .map_err(WatchError::Thread)?;
        Ok(Self { state })
    }

    /// Watches one more program (one a session was found running), unless it is watched
    /// already under this path or where it really is. Returns whether it is watched anew.
    pub fn add_program(&mut self, path: &Path) -> bool {
        let mut state = lock(&self.state);
        if state.knows(path) {
            return false;
        }
        match state.watch_program(path) {
            Ok(_) => true,
            Err(e) => {
                debug!("not watching {}: {e}", path.display());
                false
            }
        }
    }

    /// The programs watched, by the paths they are known by.
    pub fn programs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = lock(&self.state).programs.keys().cloned().collect();
        out.sort();
        out
    }
}

impl fmt::Debug for ProgramWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgramWatch")
            .field("programs", &self.programs())
            .finish_non_exhaustive()
    }
}

impl Drop for ProgramWatch {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.stopped = true;
        // Each removal queues an "ignored" event: that wakes the thread, which then stops.
        let wds: Vec<WatchDescriptor> = state
            .programs
            .values()
            .filter_map(|p| p.wd.clone())
            .chain(state.dirs.keys().cloned())
            .collect();
        for wd in wds {
            let _ = state.watches.remove(wd);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watch's thread: reads events until the watch is dropped or nobody listens.
fn read_events(mut inotify: Inotify, state: &Mutex<State>) {
    let mut buffer = [0u8; 4096];
    loop {
        let events = match inotify.read_events_blocking(&mut buffer) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(
                    "reading the watch on the Telepresence programs: {e}; new sessions are found by the safety-net scan only"
                );
                return;
            }
        };
        let mut state = lock(state);
        if state.stopped {
            return;
        }
        let mut worth_a_look = false;
        for event in events {
            worth_a_look |= state.on_event(&event.wd, event.mask, event.name);
        }
        if worth_a_look && !(state.hint)() {
            return;
        }
    }
}

impl State {
    /// Handles one event; returns whether it is worth looking at the new pids.
    fn on_event(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsStr>) -> bool {
        if mask.contains(EventMask::Q_OVERFLOW) {
            debug!("the program watch's event queue overflowed: watching every program again");
            let all: Vec<PathBuf> = self.programs.keys().cloned().collect();
            for p in all {
                self.rewatch(&p, "replaced");
            }
            return true;
        }
        if let Some(dirs) = self.dirs.get(wd).cloned() {
            if mask.contains(EventMask::IGNORED) {
                self.dirs.remove(wd);
                return false;
            }
            return name.is_some_and(|name| self.on_dir_entry(&dirs, name));
        }
        let known: Vec<PathBuf> = self
            .programs
            .iter()
            .filter(|(_, p)| p.wd.as_ref() == Some(wd))
            .map(|(path, _)| path.clone())
            .collect();
        if known.is_empty() {
            // A replaced inode's watch, removed: nothing to do.
            return false;
        }
        if mask.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            // This inode is no longer at the path: whatever is there now is the program.
            let mut rewatched = false;
            for p in known {
                if mask.contains(EventMask::IGNORED)
                    && let Some(program) = self.programs.get_mut(&p)
                {
                    // The kernel dropped the watch already.
                    program.wd = None;
                }
                rewatched |= self.rewatch(&p, "replaced");
            }
            return rewatched;
        }
        mask.contains(EventMask::OPEN)
    }

    /// A file was created, renamed into or changed in a watched directory (known by `dirs`).
    fn on_dir_entry(&mut self, dirs: &[PathBuf], name: &OsStr) -> bool {
        let mut rewatched = false;
        for dir in dirs {
            let path = dir.join(name);
            let known: Vec<PathBuf> = self
                .programs
                .iter()
                .filter(|(p, program)| **p == path || program.canonical == path)
                .map(|(p, _)| p.clone())
                .collect();
            for p in &known {
                rewatched |= self.rewatch(p, "replaced");
            }
            if known.is_empty()
                && self.names.iter().any(|n| OsStr::new(n) == name)
                && path.is_file()
                && !self.knows(&path)
            {
                rewatched |= self.rewatch(&path, "new");
            }
        }
        rewatched
    }

    /// Watches `path` again (`what` it is, for the log); returns whether a new inode is
    /// watched.
    fn rewatch(&mut self, path: &Path, what: &str) -> bool {
        match self.watch_program(path) {
            Ok(true) => {
                info!(
                    "watching the {what} Telepresence program {}",
                    path.display()
                );
                true
            }
            Ok(false) => false,
            Err(e) => {
                debug!(
                    "{} is not there ({e}); its directory is watched for its return",
                    path.display()
                );
                false
            }
        }
    }

    /// Whether `path` is a program watched already, by that path or where it really is.
    fn knows(&self, path: &Path) -> bool {
        if self.programs.contains_key(path) {
            return true;
        }
        std::fs::canonicalize(path).is_ok_and(|c| {
            self.programs.contains_key(&c) || self.programs.values().any(|p| p.canonical == c)
        })
    }

    /// Watches whatever file is at `path` now, and the directories of `path` and of where
    /// it really is. Returns whether that is a new watch (a program not known before, or a
    /// new inode at its path).
    fn watch_program(&mut self, path: &Path) -> std::io::Result<bool> {
        let old = self.programs.get(path).and_then(|p| p.wd.clone());
        let wd = match self.watches.add(path, FILE_MASK) {
            Ok(wd) => wd,
            Err(e) => {
                // Nothing there now; its directory says when there is again.
                if let Some(program) = self.programs.get_mut(path) {
                    program.wd = None;
                }
                if let Some(old) = old {
                    self.unwatch_if_unused(old);
                }
                return Err(e);
            }
        };
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for dir in [path.parent(), canonical.parent()].into_iter().flatten() {
            self.watch_dir(dir);
        }
        let fresh = old.as_ref() != Some(&wd);
        self.programs.insert(
            path.to_path_buf(),
            Program {
                wd: Some(wd),
                canonical,
            },
        );
        if let Some(old) = old.filter(|_| fresh) {
            // The replaced inode (still open by a running session, say) is not the program
            // any more: its opens are not a reason to look.
            self.unwatch_if_unused(old);
        }
        Ok(fresh)
    }

    fn unwatch_if_unused(&mut self, wd: WatchDescriptor) {
        if !self.programs.values().any(|p| p.wd.as_ref() == Some(&wd)) {
            let _ = self.watches.remove(wd);
        }
    }

    fn watch_dir(&mut self, dir: &Path) {
        if dir.as_os_str().is_empty() || self.dirs.values().flatten().any(|d| d == dir) {
            return;
        }
        match self.watches.add(dir, DIR_MASK) {
            Ok(wd) => self.dirs.entry(wd).or_default().push(dir.to_path_buf()),
            Err(e) => debug!("not watching the directory {}: {e}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A hint that counts.
    fn counter() -> (Arc<AtomicUsize>, Hint) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (
            n,
            Arc::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
                true
            }),
        )
    }

    fn names() -> Vec<String> {
        vec!["telepresence".to_string()]
    }

    /// Waits up to 5 s for `n` to pass `than`.
    fn hinted(n: &AtomicUsize, than: usize) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if n.load(Ordering::SeqCst) > than {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for the events of what was just done to be handled, and returns the count.
    fn settled(n: &AtomicUsize) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        n.load(Ordering::SeqCst)
    }

    fn read(path: &Path) {
        std::fs::read(path).expect("readable");
    }

    /// Replaces `path` as a package manager does: a new file beside it, renamed over it.
    fn replace(path: &Path) {
        let new = path.with_file_name(".new");
        std::fs::write(&new, "#!/usr/bin/env python3\n# new\n").expect("written");
        let old = std::fs::metadata(path).expect("exists").ino();
        std::fs::rename(&new, path).expect("renamed");
        assert_ne!(std::fs::metadata(path).expect("exists").ino(), old);
    }

    #[test]
    fn a_program_renamed_over_is_watched_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = dir.path().join("telepresence");
        std::fs::write(&program, "#!/usr/bin/env python3\n").expect("written");
        let (n, hint) = counter();
        let _watch = ProgramWatch::start(std::slice::from_ref(&program), &[], &names(), hint)
            .expect("watching");
        read(&program);
        assert!(hinted(&n, 0), "opening the program is a hint");

        let before = settled(&n);
        replace(&program);
        assert!(hinted(&n, before), "a replaced program is a hint");
        let before = settled(&n);
        read(&program);
        assert!(hinted(&n, before), "the new file's opens are watched");
    }

    #[test]
    fn a_symlinked_program_is_watched_again_when_its_target_is_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let venv = dir.path().join("venv");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&venv).expect("venv");
        std::fs::create_dir_all(&bin).expect("bin");
        let target = venv.join("telepresence");
        std::fs::write(&target, "#!/usr/bin/env python3\n").expect("written");
        let link = bin.join("telepresence");
        std::os::unix::fs::symlink(&target, &link).expect("linked");
        let (n, hint) = counter();
        let _watch = ProgramWatch::start(std::slice::from_ref(&link), &[], &names(), hint)
            .expect("watching");

        // pipx reinstall: the script in the venv is replaced, the link stays.
        replace(&target);
        let before = settled(&n);
        read(&link);
        assert!(hinted(&n, before), "the new target's opens are watched");
    }

    #[test]
    fn a_program_installed_in_a_watched_dir_is_watched_and_other_files_wake_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let other = bin.join("kubectl");
        std::fs::write(&other, "#!/bin/sh\n").expect("written");
        let (n, hint) = counter();
        let watch =
            ProgramWatch::start(&[], std::slice::from_ref(&bin), &names(), hint).expect("watching");
        // Other files: created, opened, changed: never a hint.
        std::fs::write(bin.join("helm"), "#!/bin/sh\n").expect("written");
        read(&other);
        std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        assert_eq!(settled(&n), 0, "nothing in the directory is a program");

        let program = bin.join("telepresence");
        std::fs::write(bin.join(".tmp"), "#!/usr/bin/env python3\n").expect("written");
        std::fs::rename(bin.join(".tmp"), &program).expect("installed");
        assert!(hinted(&n, 0), "a new program is a hint");
        assert_eq!(watch.programs(), std::slice::from_ref(&program));
        let before = settled(&n);
        read(&program);
        assert!(hinted(&n, before), "the new program's opens are watched");
    }

    #[test]
    fn a_program_added_later_is_watched_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = dir.path().join("telepresence");
        std::fs::write(&program, "#!/usr/bin/env python3\n").expect("written");
        let (n, hint) = counter();
        let mut watch = ProgramWatch::start(&[], &[], &names(), hint).expect("watching");
        assert!(watch.add_program(&program), "watched anew");
        assert!(!watch.add_program(&program), "only once");
        read(&program);
        assert!(hinted(&n, 0));
    }

    #[test]
    fn the_thread_stops_when_the_watch_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = dir.path().join("telepresence");
        std::fs::write(&program, "#!/usr/bin/env python3\n").expect("written");
        let (_, hint) = counter();
        let watch =
            ProgramWatch::start(std::slice::from_ref(&program), &[], &names(), hint.clone())
                .expect("watching");
        drop(watch);
        // The thread held the state, and the state the hint.
        let end = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&hint) > 1 {
            assert!(Instant::now() < end, "the thread did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
