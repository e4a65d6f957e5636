//! Systems other than Linux (macOS): the same API, built on `ps`, `kill`, and on macOS
//! sysinfo and kqueue; no `/proc`, no pidfds, no `unsafe` of ours.
//! - Processes are listed with `ps` (see the `ps` module for its format and limits:
//!   one-second start times, the process group standing in for the session id). A process's
//!   identity ([`ProcessId::start_ticks`]) is its `lstart` as the number `YYYYMMDDhhmmss`.
//! - On macOS a process's exact arguments, environment and working directory come from
//!   `sysctl(KERN_PROCARGS2)` and `proc_pidinfo` through sysinfo (the `procargs` module):
//!   each session's own `KUBECONFIG`, `HOME`, `PATH` and cwd. Elsewhere `ps` splits
//!   arguments at whitespace and [`process_environ`] answers `Unsupported` (the agent then
//!   uses its own environment).
//! - Exits: on macOS kqueue's `NOTE_EXIT` wakes [`wait_for_exit`]; a check of the
//!   process's identity once a second confirms it (and is all there is elsewhere).
//! - Signals go to a pid only after its identity was checked; the check and the `kill` are
//!   not atomic (no pidfds), so a pid reused in between is the one remaining risk.
//!
//! Not run on macOS yet: CI type-checks it for `x86_64-apple-darwin` and
//! `aarch64-apple-darwin`; the `ps` parsing and the sysinfo-based reader are tested on
//! Linux (procps `ps` understands the same format; sysinfo reads `/proc` there).

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

/// The cgroup a process is in: there are none here.
pub fn process_cgroup(_pid: u32) -> Option<String> {
    None
}

/// Whether `pid`'s environment is meant to be readable by its owner: taken as so here
/// (the reads themselves say otherwise).
pub fn readable_by_owner(_pid: u32, _uid: u32) -> bool {
    true
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

/// What `ps` says about a process; on macOS its arguments and working directory come from
/// `sysctl(KERN_PROCARGS2)` and `proc_pidinfo` (through sysinfo) when readable.
///
/// # Caveats
/// Where only `ps` answers, arguments are split at whitespace and `cwd` is unknown;
/// `session` is the process group; `tty_nr` is 1 when the process has a terminal and 0
/// when not (`ps` gives a name, not a device number); `exe` is unknown (`None`).
///
/// # Errors
/// [`PlatformError::NotFound`] if there is no such process; [`PlatformError::ReadProc`]
/// if `ps` cannot be run.
pub fn process_info(pid: u32) -> Result<ProcessInfo> {
    let mut r = row(pid)?;
    #[cfg(target_os = "macos")]
    let cwd = match super::procargs::read(pid) {
        Ok(exact) => {
            if !exact.argv.is_empty() {
                r.argv = exact.argv;
            }
            exact.cwd
        }
        Err(_) => None,
    };
    #[cfg(not(target_os = "macos"))]
    let cwd = None;
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
        cwd,
        exe: None,
    })
}

/// The command line of a process: exact on macOS (`KERN_PROCARGS2`), else from `ps`
/// (arguments split at whitespace).
///
/// # Errors
/// As [`process_info`].
pub fn process_argv(pid: u32) -> Result<Vec<String>> {
    #[cfg(target_os = "macos")]
    if let Ok(exact) = super::procargs::read(pid)
        && !exact.argv.is_empty()
    {
        return Ok(exact.argv);
    }
    Ok(row(pid)?.argv)
}

/// A process's environment: on macOS from `sysctl(KERN_PROCARGS2)` (the user's own
/// processes only).
///
/// # Errors
/// [`PlatformError::ReadProc`] (path `sysctl kern.procargs2`) naming why it could not be
/// read on macOS; [`PlatformError::Unsupported`] on other systems, where callers fall back
/// to their own environment.
pub fn process_environ(pid: u32) -> Result<Vec<(String, String)>> {
    #[cfg(target_os = "macos")]
    {
        super::procargs::read(pid)
            .map(|r| r.environ)
            .map_err(|why| PlatformError::ReadProc {
                path: PathBuf::from("sysctl kern.procargs2"),
                source: io::Error::other(why),
            })
    }
    #[cfg(not(target_os = "macos"))]
    {
        let _ = pid;
        Err(PlatformError::Unsupported {
            operation: "reading a process's environment",
        })
    }
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

/// Waits until the process `id` exits: on macOS told by kqueue (`EVFILT_PROC`,
/// `NOTE_EXIT`) on a blocking thread, elsewhere (or when kqueue refuses) by checking once a
/// second.
///
/// # Errors
/// None in practice; the `Result` matches the Linux API.
pub async fn wait_for_exit(id: ProcessId) -> Result<()> {
    #[cfg(target_os = "macos")]
    {
        // Whatever kqueue says, the loop below confirms with the process's identity.
        let _ = tokio::task::spawn_blocking(move || exit_by_kqueue(id)).await;
    }
    while is_alive(id) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Blocks until kqueue says `id` exited (or it is found gone), or returns the error that
/// made kqueue unusable.
#[cfg(target_os = "macos")]
fn exit_by_kqueue(id: ProcessId) -> io::Result<()> {
    let pid = i32::try_from(id.pid).map_err(io::Error::other)?;
    let mut watcher = kqueue::Watcher::new()?;
    watcher.add_pid(
        pid,
        kqueue::EventFilter::EVFILT_PROC,
        kqueue::FilterFlag::NOTE_EXIT,
    )?;
    watcher.watch()?;
    // Registered after the check that found it alive: it may have exited in between (or
    // its pid been reused), which no event would report.
    while is_alive(id) {
        if watcher.poll(Some(Duration::from_secs(30))).is_some() {
            return Ok(());
        }
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
