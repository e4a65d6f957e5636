//! Systems other than Linux (macOS): the same API, built on `ps` and `kill` with polling.
//!
//! This is the "clearly documented poll" of the design: no `/proc`, no pidfds, no `unsafe`.
//! - Processes are read with `ps` (see the `ps` module for its format and limits: arguments
//!   split at whitespace, one-second start times, the process group standing in for the
//!   session id). A process's identity ([`ProcessId::start_ticks`]) is its `lstart` as the
//!   number `YYYYMMDDhhmmss`.
//! - Exits are noticed by checking the process once a second ([`wait_for_exit`]).
//! - Environments are not readable without `unsafe` FFI: [`process_environ`] answers
//!   `Unsupported`, and the agent then uses its own `KUBECONFIG`/`HOME`/`TMPDIR`, which a
//!   launchd agent of the same user shares with the user's shells in the common case.
//! - Signals go to a pid only after its identity was checked; the check and the `kill` are
//!   not atomic (no pidfds), so a pid reused in between is the one remaining risk.
//!
//! Not run on macOS yet: CI type-checks it for `x86_64-apple-darwin`, and the `ps` parsing
//! is tested on Linux, whose procps `ps` understands the same format. A faster macOS layer
//! (libproc, kqueue `NOTE_EXIT`) needs `unsafe` FFI and is future work.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rustix::io::Errno;
use rustix::process::Pid;

use super::ps;
use super::{PlatformError, ProcessId, ProcessInfo, Result, Signal};

fn ps_error(source: io::Error) -> PlatformError {
    PlatformError::ReadProc {
        path: PathBuf::from("ps"),
        source,
    }
}

/// The uid this agent runs as (its real uid).
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Every pid, from `ps -ax`.
///
/// # Errors
/// [`PlatformError::ReadProc`] (path `ps`) if `ps` cannot be run.
pub fn list_pids() -> Result<Vec<u32>> {
    let out = ps::run(&["-axo", "pid="]).map_err(ps_error)?;
    let mut pids: Vec<u32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Every process's pid and command line, from one `ps -ax` call.
///
/// # Errors
/// [`PlatformError::ReadProc`] (path `ps`) if `ps` cannot be run.
pub fn all_argv() -> Result<Vec<(u32, Vec<String>)>> {
    let out = ps::run(&["-axo", ps::FORMAT]).map_err(ps_error)?;
    Ok(out
        .lines()
        .filter_map(ps::parse_row)
        .map(|r| (r.pid, r.argv))
        .collect())
}

/// A process's working directory: not readable through `ps`.
///
/// # Errors
/// Always [`PlatformError::Unsupported`].
pub fn process_cwd(_pid: u32) -> Result<PathBuf> {
    Err(PlatformError::Unsupported {
        operation: "reading another process's working directory",
    })
}

/// The pids of `id`'s children, from one `ps -ax` call.
///
/// # Errors
/// [`PlatformError::ReadProc`] (path `ps`) if `ps` cannot be run.
pub fn children(id: ProcessId) -> Result<Vec<u32>> {
    if !is_alive(id) {
        return Ok(Vec::new());
    }
    let out = ps::run(&["-axo", "pid=,ppid="]).map_err(ps_error)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next()?.parse::<u32>().ok()?;
            let ppid = f.next()?.parse::<u32>().ok()?;
            (ppid == id.pid).then_some(pid)
        })
        .collect())
}

fn row(pid: u32) -> Result<ps::Row> {
    ps::row(pid)
        .map_err(ps_error)?
        .ok_or(PlatformError::NotFound { pid })
}

/// What `ps` says about a process.
///
/// # Caveats
/// Arguments are split at whitespace; `session` is the process group; `tty_nr` is 1 when
/// the process has a terminal and 0 when not (`ps` gives a name, not a device number);
/// `cwd` and `exe` are unknown (`None`).
///
/// # Errors
/// [`PlatformError::NotFound`] if there is no such process; [`PlatformError::ReadProc`]
/// if `ps` cannot be run.
pub fn process_info(pid: u32) -> Result<ProcessInfo> {
    let r = row(pid)?;
    let comm = r
        .argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    Ok(ProcessInfo {
        id: ProcessId {
            pid,
            start_ticks: r.start_key,
        },
        ppid: r.ppid,
        uid: r.uid,
        session: r.pgid,
        tty_nr: u32::from(!r.tty.starts_with('?')),
        comm,
        argv: r.argv,
        cwd: None,
        exe: None,
    })
}

/// The command line of a process, from `ps` (arguments split at whitespace).
///
/// # Errors
/// As [`process_info`].
pub fn process_argv(pid: u32) -> Result<Vec<String>> {
    Ok(row(pid)?.argv)
}

/// Not readable without `unsafe` FFI on this system.
///
/// # Errors
/// Always [`PlatformError::Unsupported`]; callers fall back to their own environment.
pub fn process_environ(_pid: u32) -> Result<Vec<(String, String)>> {
    Err(PlatformError::Unsupported {
        operation: "reading a process's environment",
    })
}

/// Whether the process `id` still runs: same pid, same start time (to the second).
///
/// # Caveats
/// If `ps` cannot be run, a process that `kill(pid, 0)` finds counts as alive: the error
/// leans towards waiting rather than cleaning up.
pub fn is_alive(id: ProcessId) -> bool {
    match ps::row(id.pid) {
        Ok(Some(r)) => r.start_key == id.start_ticks,
        Ok(None) => false,
        Err(_) => {
            let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
                return false;
            };
            matches!(
                rustix::process::test_kill_process(pid),
                Ok(()) | Err(Errno::PERM)
            )
        }
    }
}

/// The unit of [`ProcessId::start_ticks`] on Linux; here start "ticks" are a timestamp
/// number, so this only serves display code.
pub fn boot_clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        hz => hz,
    }
}

/// When the process `id` started, to the second (from `ps`'s elapsed time), if it still
/// runs.
pub fn process_start_time(id: ProcessId) -> Option<SystemTime> {
    let r = ps::row(id.pid).ok()??;
    (r.start_key == id.start_ticks)
        .then(|| r.start_time())
        .flatten()
}

/// Waits until the process `id` exits, checking once a second (there is no pidfd here).
///
/// # Errors
/// None in practice; the `Result` matches the Linux API.
pub async fn wait_for_exit(id: ProcessId) -> Result<()> {
    while is_alive(id) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Sends `sig` to `id` if it is still the same process. Returns `Ok(false)` if it was gone.
///
/// # Caveats
/// The identity check and the `kill` are two steps: a pid reused between them would be
/// signalled. Linux closes that window with pidfds; here it is as narrow as one `ps` call.
///
/// # Errors
/// [`PlatformError::SendSignal`] if the kernel refused (another user's process).
pub fn signal(id: ProcessId, sig: Signal) -> Result<bool> {
    if !is_alive(id) {
        return Ok(false);
    }
    let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
        return Ok(false);
    };
    let s = match sig {
        Signal::Term => rustix::process::Signal::TERM,
        Signal::Kill => rustix::process::Signal::KILL,
        Signal::Hup => rustix::process::Signal::HUP,
    };
    match rustix::process::kill_process(pid, s) {
        Ok(()) => Ok(true),
        Err(Errno::SRCH) => Ok(false),
        Err(e) => Err(PlatformError::SendSignal {
            pid: id.pid,
            signal: sig,
            source: e.into(),
        }),
    }
}

/// Makes every file the process creates from now on private to its user (umask 077).
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}
