//! The operating-system layer: which processes exist, what they are, when they exit, and
//! signalling them without ever hitting a recycled pid.
//!
//! Everything above this module speaks in [`ProcessId`]s (a pid plus its start time), never
//! in bare pids, so "the process I recorded" and "whatever has that pid now" cannot be
//! confused. The Linux implementation reads `/proc` and uses pidfds; other systems get the
//! same API, returning [`PlatformError::Unsupported`] where it is not written yet.
//!
//! Nothing here blocks for long: the `/proc` reads are small synchronous reads (cheap enough
//! to call from async code), and the only waiting is [`wait_for_exit`], which is async.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod events;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(not(target_os = "linux"))]
mod other;
// Compiled on every Unix so that its parsing is tested on Linux too.
#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))]
mod ps;
#[cfg(not(target_os = "linux"))]
use other as imp;
// macOS's way to read a process's arguments, environment and cwd; built for the tests on
// Linux too.
#[cfg(any(target_os = "macos", test))]
mod procargs;

pub use events::{NetworkChanges, suspended_total};
pub use imp::{
    boot_clock_ticks_per_second, children, current_uid, is_alive, list_pids, private_umask,
    process_argv, process_cgroup, process_cwd, process_environ, process_info, process_start_time,
    readable_by_owner, signal, wait_for_exit,
};

/// A process identity that survives pid reuse: the pid plus the process's start time, in
/// clock ticks since boot (field 22 of `/proc/<pid>/stat`).
///
/// Two processes can share a pid over time but never a pid and a start tick, because the
/// kernel hands a pid out again only after the previous owner has been reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    /// The pid (the thread-group id, as `getpid` returns it).
    pub pid: u32,
    /// When the process started, in clock ticks since boot; see
    /// [`boot_clock_ticks_per_second`] and [`process_start_time`].
    pub start_ticks: u64,
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} (started at tick {})", self.pid, self.start_ticks)
    }
}

/// What the agent knows about one process, read in one consistent go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Who the process is.
    pub id: ProcessId,
    /// The parent's pid (0 for init and kernel threads' parent).
    pub ppid: u32,
    /// The real uid (the first field of `Uid:` in `/proc/<pid>/status`).
    pub uid: u32,
    /// The session id (`setsid`): processes started from one terminal share it.
    pub session: u32,
    /// The controlling terminal's device number; 0 when there is none.
    pub tty_nr: u32,
    /// The kernel's short name for the process (at most 15 bytes, lossy UTF-8).
    pub comm: String,
    /// The command line, split on NUL, lossy UTF-8. Empty for kernel threads, zombies and
    /// processes whose main thread has ended (their memory is gone from the main thread's
    /// view). A process may rewrite its own command line, so this is a claim, not a proof.
    pub argv: Vec<String>,
    /// The working directory; `None` when not permitted (another user's process) or gone.
    pub cwd: Option<PathBuf>,
    /// The executable; `None` when not permitted or for kernel threads. If the file was
    /// replaced or deleted since the process started, Linux appends ` (deleted)`.
    pub exe: Option<PathBuf>,
}

/// The signals the agent ever sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// `SIGTERM`: please clean up and exit.
    Term,
    /// `SIGKILL`: exit now, no cleanup.
    Kill,
    /// `SIGHUP`: the terminal went away.
    Hup,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Hup => "SIGHUP",
        })
    }
}

/// What went wrong in the platform layer; each variant names the step and what it was about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The process does not exist (any more), or exited while it was being read.
    #[error("process {pid} does not exist (it may have exited)")]
    NotFound {
        /// The pid that was asked about.
        pid: u32,
    },
    /// The process is inside `execve`: its new command line and environment are not laid
    /// out yet. Ask again in a few milliseconds.
    #[error("process {pid} is starting a new program; ask again shortly")]
    ExecInProgress {
        /// The pid that was asked about.
        pid: u32,
    },
    /// A file or directory under `/proc` could not be read.
    #[error("cannot read {}", path.display())]
    ReadProc {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file under `/proc` did not have the expected format.
    #[error("unexpected contents in {}: {reason}", path.display())]
    ParseProc {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// `pidfd_open` failed for a reason other than the process being gone.
    #[error("cannot open a pidfd for process {pid}")]
    PidfdOpen {
        /// The pid.
        pid: u32,
        /// Why (ENOSYS before Linux 5.3, or a seccomp filter).
        #[source]
        source: io::Error,
    },
    /// The kernel refused to deliver a signal to a live process.
    #[error("cannot send {signal} to process {pid}")]
    SendSignal {
        /// The pid.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// Why (typically EPERM: another user's process).
        #[source]
        source: io::Error,
    },
    /// Waiting on a pidfd failed (registering it with the tokio reactor, or polling it).
    #[error("cannot wait for process {pid} to exit")]
    WaitForExit {
        /// The pid.
        pid: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Subscribing to or reading the kernel's network change events failed.
    #[error("cannot follow network changes: {source}")]
    NetworkEvents {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// This operation is not implemented on this operating system yet.
    #[error("{operation} is not supported on this operating system yet")]
    Unsupported {
        /// What was attempted, e.g. "listing processes".
        operation: &'static str,
    },
}

/// The result of a platform operation.
pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// Every process's pid and command line in one sweep: `/proc` on Linux, a single `ps`
/// call elsewhere. Processes that vanish or cannot be read are left out.
///
/// # Errors
/// As [`list_pids`].
pub fn all_argv() -> Result<Vec<(u32, Vec<String>)>> {
    imp::all_argv()
}

/// A cheap detector of new processes, for use when something hints that one may have started
/// (an inotify event, a timer of the slow safety-net scan).
///
/// It remembers the pids it has seen, and [`new_pids`](Self::new_pids) reports only pids it
/// has not seen before.
///
/// # Guarantees
/// Each call reads only the `/proc` directory listing, never a process's own files, so its
/// cost does not grow with what the processes are. Pids that are gone are forgotten, so
/// memory stays proportional to the number of live processes.
///
/// # Caveats
/// New pids, not new programs: a process seen between its `fork` and its `execve` (a shell
/// about to run `telepresence`) is reported once, looking like its parent, and not again
/// when it runs the new program. Callers woken by an exec-time hint should also look again
/// at the pids reported shortly before.
///
/// A pid that exits and is handed out again between two calls is not reported: telling that
/// apart needs a read per process. The kernel gives pids out in increasing order up to
/// `pid_max` (4 194 304 by default on 64-bit) before wrapping, so this takes millions of
/// process starts between two calls.
#[derive(Debug, Default)]
pub struct NewProcesses {
    /// The pids present at the last listing.
    seen: std::collections::HashSet<u32>,
}

impl NewProcesses {
    /// Starts a detector primed with the processes that exist now, so that only later
    /// processes count as new.
    ///
    /// If the process list cannot be read now, the detector starts empty, so the first
    /// [`new_pids`](Self::new_pids) reports every process: more work, but nothing is missed.
    pub fn new() -> Self {
        Self {
            seen: list_pids().unwrap_or_default().into_iter().collect(),
        }
    }

    /// Lists the processes that have appeared since the last call (or since [`new`](Self::new)),
    /// in increasing pid order.
    ///
    /// # Errors
    /// [`PlatformError::ReadProc`] if `/proc` cannot be listed (the remembered pids are kept);
    /// [`PlatformError::Unsupported`] where listing processes is not written yet.
    pub fn new_pids(&mut self) -> Result<Vec<u32>> {
        let current = list_pids()?;
        let new = current
            .iter()
            .copied()
            .filter(|pid| !self.seen.contains(pid))
            .collect();
        self.seen = current.into_iter().collect();
        Ok(new)
    }
}

/// This machine's host name (`uname`'s node name), as team mode names the laptop that
/// recorded a session.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod hostname_tests {
    #[test]
    fn the_host_name_is_the_kernels() {
        let want = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        if cfg!(target_os = "linux") {
            assert_eq!(super::hostname(), want.trim());
        }
        assert!(!super::hostname().is_empty());
    }
}
