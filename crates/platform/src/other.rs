//! Systems other than Linux: the same API, mostly [`PlatformError::Unsupported`] for now.
//!
//! macOS support is not written yet. The plan: `libproc` (`proc_listallpids`,
//! `proc_pidinfo` with `PROC_PIDTBSDINFO` for ppid, uid, start time and tty, `KERN_PROCARGS2`
//! for argv and environment) for reading processes, and a kqueue `EVFILT_PROC` /
//! `NOTE_EXIT` filter for exits. Those need either `unsafe` FFI or a crate that wraps it,
//! which is a separate decision. Until then, only what is portable POSIX works here, and
//! everything that would have to guess answers `Unsupported` instead.

use std::time::SystemTime;

use rustix::io::Errno;
use rustix::process::Pid;

use super::{PlatformError, ProcessId, ProcessInfo, Result, Signal};

/// The uid this agent runs as (its real uid).
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Not written yet on this system.
///
/// # Errors
/// Always [`PlatformError::Unsupported`].
pub fn list_pids() -> Result<Vec<u32>> {
    Err(PlatformError::Unsupported {
        operation: "listing processes",
    })
}

/// Not written yet on this system.
///
/// # Errors
/// Always [`PlatformError::Unsupported`].
pub fn process_info(_pid: u32) -> Result<ProcessInfo> {
    Err(PlatformError::Unsupported {
        operation: "reading a process's details",
    })
}

/// Not written yet on this system.
///
/// # Errors
/// Always [`PlatformError::Unsupported`].
/// Only the command line of a process: not written for this system yet.
pub fn process_argv(_pid: u32) -> Result<Vec<String>> {
    Err(PlatformError::Unsupported {
        operation: "reading a process's command line",
    })
}

pub fn process_environ(_pid: u32) -> Result<Vec<(String, String)>> {
    Err(PlatformError::Unsupported {
        operation: "reading a process's environment",
    })
}

/// Whether a process with `id`'s pid exists (`kill(pid, 0)`).
///
/// # Caveats
/// The start time is not checked here yet, and a zombie counts as alive. Both errors lean
/// towards "alive", the side on which the agent waits instead of cleaning up.
pub fn is_alive(id: ProcessId) -> bool {
    let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        // EPERM: it exists, it just is not ours.
        Ok(()) | Err(Errno::PERM) => true,
        Err(_) => false,
    }
}

/// The unit of [`ProcessId::start_ticks`]: `sysconf(_SC_CLK_TCK)`.
pub fn boot_clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        hz => hz,
    }
}

/// Not written yet on this system: always `None`.
pub fn process_start_time(_id: ProcessId) -> Option<SystemTime> {
    None
}

/// Not written yet on this system (it will be a kqueue `NOTE_EXIT`).
///
/// # Errors
/// Always [`PlatformError::Unsupported`].
pub async fn wait_for_exit(_id: ProcessId) -> Result<()> {
    Err(PlatformError::Unsupported {
        operation: "waiting for a process to exit",
    })
}

/// Not written yet on this system: without a way to check the start time, a recycled pid
/// could be signalled, so this refuses rather than guesses.
///
/// # Errors
/// Always [`PlatformError::Unsupported`].
pub fn signal(_id: ProcessId, _sig: Signal) -> Result<bool> {
    Err(PlatformError::Unsupported {
        operation: "signalling a process",
    })
}

/// Private file creation mask: not written for this system yet (files get the modes the
/// agent asks for explicitly).
pub fn private_umask() {}
