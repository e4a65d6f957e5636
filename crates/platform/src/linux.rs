//! Linux: processes from `/proc`, exits and signals through pidfds (Linux 5.3 or later).
//!
//! Every operation that acts on a process first opens a pidfd and then checks that the pid
//! still has the recorded start time. A pidfd pins one process, not a pid number, so once the
//! check passes, whatever is done through the pidfd reaches that process or nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{PlatformError, ProcessId, ProcessInfo, Result, Signal};

/// Where the kernel's process information lives.
const PROC: &str = "/proc";

/// The uid this agent runs as (its real uid).
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The pids of all processes (thread-group leaders; threads are not listed), in increasing
/// order.
///
/// # Errors
/// [`PlatformError::ReadProc`] if `/proc` cannot be listed.
pub fn list_pids() -> Result<Vec<u32>> {
    let read_proc = |source| PlatformError::ReadProc {
        path: PathBuf::from(PROC),
        source,
    };
    let mut pids = Vec::new();
    for entry in fs::read_dir(PROC).map_err(read_proc)? {
        let entry = entry.map_err(read_proc)?;
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The cgroup a process is in (the unified hierarchy's path, `/proc/<pid>/cgroup`'s `0::`
/// line, or the whole file on a system without one), if readable.
pub fn process_cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(proc_path(pid, "cgroup")).ok()?;
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map_or_else(|| text.clone(), str::to_string),
    )
}

/// Whether this process may read the environment and working directory of `pid`, a process
/// of `uid`, as far as the kernel's rules go (a sandbox may hide it all the same; that is
/// what the read itself tells). Not when `pid` holds a capability this process lacks (seen:
/// a user's systemd 257 keeps `CAP_WAKE_ALARM`), nor when the kernel marks it not dumpable
/// (its `/proc` files then belong to root) and this process lacks `CAP_SYS_PTRACE`. Read from
/// `CapPrm` in `/proc/<pid>/status` and the owner of `/proc/<pid>/environ`; `false` once it
/// is gone.
pub fn readable_by_owner(pid: u32, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(theirs), Some(mine)) = (permitted_caps(pid), permitted_caps(std::process::id()))
    else {
        return false;
    };
    let owned = fs::metadata(proc_path(pid, "environ")).is_ok_and(|m| m.uid() == uid);
    may_read(theirs, mine, owned)
}

/// `CAP_SYS_PTRACE`'s bit in a capability set.
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// The kernel's rule for reading another process of the same user (pure): its permitted
/// capabilities within the reader's, and its files still its owner's (dumpable) unless the
/// reader may trace anything.
fn may_read(theirs: u64, mine: u64, owned: bool) -> bool {
    theirs & !mine == 0 && (owned || mine & CAP_SYS_PTRACE != 0)
}

/// A process's permitted capabilities (`CapPrm` in `/proc/<pid>/status`).
fn permitted_caps(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(proc_path(pid, "status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapPrm:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A process's working directory, or why it cannot be read (an `EACCES` here while the
/// process is the user's own means the agent runs in a namespace that hides it).
///
/// # Errors
/// [`PlatformError::ReadProc`] with the `readlink` error of `/proc/<pid>/cwd`.
pub fn process_cwd(pid: u32) -> Result<PathBuf> {
    let path = proc_path(pid, "cwd");
    fs::read_link(&path).map_err(|source| PlatformError::ReadProc { path, source })
}

/// The pids of `id`'s children (of any of its threads), or nothing once it is gone.
///
/// Read from `/proc/<pid>/task/*/children`; where the kernel lacks that file
/// (`CONFIG_PROC_CHILDREN`), from every process's parent pid instead (slower).
///
/// # Caveats
/// A child that exits or is re-parented while this runs may be missed or listed; callers
/// read each child again (which also checks it is still there).
///
/// # Errors
/// [`PlatformError::ReadProc`] if `/proc` cannot be listed for the fallback.
pub fn children(id: ProcessId) -> Result<Vec<u32>> {
    if !is_alive(id) {
        return Ok(Vec::new());
    }
    let tasks = format!("{PROC}/{}/task", id.pid);
    let mut kids = Vec::new();
    let mut readable = false;
    if let Ok(entries) = fs::read_dir(&tasks) {
        for entry in entries.filter_map(std::result::Result::ok) {
            if let Ok(text) = fs::read_to_string(entry.path().join("children")) {
                readable = true;
                kids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if !readable {
        kids = list_pids()?
            .into_iter()
            .filter(|p| read_stat(*p).is_ok_and(|s| s.ppid == id.pid))
            .collect();
    }
    kids.sort_unstable();
    kids.dedup();
    Ok(kids)
}

/// Reads what the agent needs to know about a process.
///
/// # Guarantees
/// All fields describe one process: the start time is read again at the end, and if the
/// pid changed hands meanwhile the answer is [`PlatformError::NotFound`] rather than a mix.
///
/// # Caveats
/// A process caught between `fork` and `execve` still shows its parent's command line (a
/// shell about to run `telepresence` looks like the shell). Callers that learn of a process
/// from an exec-time hint should read it again a moment later.
///
/// # Errors
/// [`PlatformError::NotFound`] if there is no such process or it exited while being read;
/// [`PlatformError::ExecInProgress`] if it is inside `execve` and its new command line is
/// not there yet (ask again in a few milliseconds);
/// [`PlatformError::ReadProc`] / [`PlatformError::ParseProc`] if `/proc` could not be read
/// (e.g. it is mounted with `hidepid`) or had an unexpected format. `cwd` and `exe` that
/// cannot be read (another user's process) are `None`, not an error.
pub fn process_info(pid: u32) -> Result<ProcessInfo> {
    let stat = read_stat(pid)?;
    let uid = read_uid(pid)?;
    let argv: Vec<String> = split_nul(&read_proc_file(pid, "cmdline")?)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    if argv.is_empty() && stat.may_be_in_exec() {
        return Err(PlatformError::ExecInProgress { pid });
    }
    let cwd = fs::read_link(proc_path(pid, "cwd")).ok();
    let exe = fs::read_link(proc_path(pid, "exe")).ok();
    if read_stat(pid)?.start_ticks != stat.start_ticks {
        return Err(PlatformError::NotFound { pid });
    }
    Ok(ProcessInfo {
        id: ProcessId {
            pid,
            start_ticks: stat.start_ticks,
        },
        ppid: stat.ppid,
        uid,
        session: stat.session,
        tty_nr: stat.tty_nr,
        comm: stat.comm,
        argv,
        cwd,
        exe,
    })
}

/// Only the command line of a process (`/proc/<pid>/cmdline`), lossy UTF-8: one read, for
/// cheap pre-filtering before [`process_info`]. Empty for kernel threads and for a process
/// inside `execve`.
///
/// # Errors
/// [`PlatformError::NotFound`] if there is no such process; [`PlatformError::ReadProc`] if
/// `/proc` could not be read.
pub fn process_argv(pid: u32) -> Result<Vec<String>> {
    Ok(split_nul(&read_proc_file(pid, "cmdline")?)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect())
}

/// The environment a process was started with (`/proc/<pid>/environ`), lossy UTF-8, in
/// the order the process received it.
///
/// # Caveats
/// This is the environment at `execve`: later `setenv` calls inside the process are not
/// seen. Entries without `=` are skipped. There is no start-time check here: pair it with
/// [`process_info`] and [`is_alive`] when the identity matters.
///
/// `execve` lays out the command line first and the environment right after it. An empty
/// environment is legitimate (`env -i`), so it is told apart from "not laid out yet" only
/// by the command line: if that is missing too, the answer is
/// [`PlatformError::ExecInProgress`]; if it is there, the environment is read once more.
/// An environment read in the last microseconds of `execve` can still come back empty:
/// a caller that misses a variable it expected may ask again.
///
/// # Errors
/// [`PlatformError::NotFound`] if the process is gone; [`PlatformError::ExecInProgress`] if
/// it is inside `execve` and its new environment is not there yet; [`PlatformError::ReadProc`]
/// if not permitted (only the process's own user, or root, may read it).
pub fn process_environ(pid: u32) -> Result<Vec<(String, String)>> {
    let mut environ = read_proc_file(pid, "environ")?;
    if environ.is_empty() {
        if read_proc_file(pid, "cmdline")?.is_empty() && read_stat(pid)?.may_be_in_exec() {
            return Err(PlatformError::ExecInProgress { pid });
        }
        environ = read_proc_file(pid, "environ")?;
    }
    Ok(split_nul(&environ)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            Some((
                String::from_utf8_lossy(&entry[..eq]).into_owned(),
                String::from_utf8_lossy(&entry[eq + 1..]).into_owned(),
            ))
        })
        .collect())
}

/// Whether `id` is still running: the pid exists, has the same start time, and has not
/// exited (a zombie has exited and only waits for its parent to collect the status).
///
/// "Exited" is the kernel's own answer, a pidfd that polls readable, rather than the
/// zombie state in `/proc/<pid>/stat`: that state is the main thread's, and a process whose
/// main thread ended while other threads go on shows `Z` while it is very much alive. Only
/// where pidfds are unavailable does this fall back to the `stat` state.
///
/// A process whose start time cannot be read counts as not alive; with `/proc` mounted
/// `hidepid`, other users' processes therefore look dead.
pub fn is_alive(id: ProcessId) -> bool {
    match open_same_process(id) {
        Ok(pidfd) => pidfd.is_some(),
        Err(_) => {
            matches!(read_stat(id.pid), Ok(stat) if stat.start_ticks == id.start_ticks && !stat.has_exited())
        }
    }
}

/// The unit of [`ProcessId::start_ticks`]: `sysconf(_SC_CLK_TCK)`, 100 on practically every
/// Linux system.
pub fn boot_clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        hz => hz,
    }
}

/// The wall-clock time at which `id` started, for comparing with file modification times.
///
/// Computed as "now minus (time since boot now minus time since boot at start)", from
/// `/proc/uptime`, rather than from `btime` in `/proc/stat`: `btime` is whole seconds, and a
/// log file written in the process's first second must still compare as newer.
///
/// # Caveats
/// Precise to a clock tick (10 ms) plus the rounding of `/proc/uptime` (10 ms). If the wall
/// clock was stepped since the process started, the answer is in terms of the clock now.
/// `None` if `/proc/uptime` cannot be read.
pub fn process_start_time(id: ProcessId) -> Option<SystemTime> {
    let uptime = read_uptime()?;
    let hz = boot_clock_ticks_per_second();
    let started_after_boot = Duration::from_secs(id.start_ticks / hz)
        + Duration::from_nanos((id.start_ticks % hz) * 1_000_000_000 / hz);
    SystemTime::now().checked_sub(uptime.saturating_sub(started_after_boot))
}

/// Waits until the process `id` exits.
///
/// # Guarantees
/// Returns at once if `id` has already exited, is a zombie, or its pid now belongs to
/// another process. Otherwise it costs nothing while waiting: the pidfd becomes readable
/// when the process exits and tokio's reactor wakes this future.
///
/// Cancel-safe: dropping the future deregisters and closes the pidfd.
///
/// A watch that cannot be set up never looks like an exit: if pidfds are not available
/// (Linux older than 5.3, a seccomp filter, no file descriptors left) or the reactor refuses
/// the fd, it falls back to checking [`is_alive`] once a second.
///
/// # Errors
/// None: the `Result` matches the other systems' API.
///
/// # Panics
/// If polled outside a tokio runtime (tokio's `AsyncFd` needs the reactor).
pub async fn wait_for_exit(id: ProcessId) -> Result<()> {
    if watch_exit(id).await.is_err() {
        while is_alive(id) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

/// The pidfd watch behind [`wait_for_exit`].
async fn watch_exit(id: ProcessId) -> Result<()> {
    let Some(pidfd) = open_same_process(id)? else {
        return Ok(());
    };
    let wait_error = |source| PlatformError::WaitForExit {
        pid: id.pid,
        source,
    };
    // tokio 1.53.3 deprecated the safe `AsyncFd` constructors in favour of `unsafe`
    // `register_with_interest`, whose contract is that the fd stays open and the same for the
    // `AsyncFd`'s whole life (tokio#8587: a custom `AsRawFd` could break that). An `OwnedFd`
    // moved into the `AsyncFd` keeps that contract by construction, and `unsafe` is forbidden
    // in this crate, so the deprecated safe wrapper is the right call here.
    #[allow(deprecated)]
    let pidfd = AsyncFd::with_interest(pidfd, Interest::READABLE).map_err(wait_error)?;
    // A pidfd is readable exactly when its process has exited, and stays so: one readiness
    // event is the answer, there is nothing to read or clear.
    let _ready = pidfd.readable().await.map_err(wait_error)?;
    Ok(())
}

/// Sends `sig` to the process `id` if it is still running.
///
/// # Guarantees
/// The signal reaches `id` or no one: it is sent through a pidfd opened before checking
/// the start time, so a pid recycled at any moment is never signalled.
///
/// Returns `Ok(true)` if the signal was delivered, `Ok(false)` if `id` had already exited
/// (including as a zombie) or its pid belongs to another process now.
///
/// # Errors
/// [`PlatformError::PidfdOpen`] if pidfds are not available; [`PlatformError::SendSignal`]
/// if the kernel refused (EPERM: another user's process).
pub fn signal(id: ProcessId, sig: Signal) -> Result<bool> {
    let Some(pidfd) = open_same_process(id)? else {
        return Ok(false);
    };
    let raw = match sig {
        Signal::Term => rustix::process::Signal::TERM,
        Signal::Kill => rustix::process::Signal::KILL,
        Signal::Hup => rustix::process::Signal::HUP,
    };
    match rustix::process::pidfd_send_signal(&pidfd, raw) {
        Ok(()) => Ok(true),
        // Exited between the check and the signal.
        Err(Errno::SRCH) => Ok(false),
        Err(errno) => Err(PlatformError::SendSignal {
            pid: id.pid,
            signal: sig,
            source: errno.into(),
        }),
    }
}

/// Opens a pidfd for `id` and then checks that the pid still has `id`'s start time and has
/// not exited. `None` if it is gone, has exited (a zombie), or is someone else.
///
/// The order matters: checked first and opened second, the pid could change hands between
/// the two. Opened first, the pidfd pins whatever process held the pid at that moment, and
/// the check then tells whether that was `id`.
fn open_same_process(id: ProcessId) -> Result<Option<OwnedFd>> {
    let Some(pid) = i32::try_from(id.pid).ok().and_then(Pid::from_raw) else {
        return Ok(None);
    };
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Ok(None),
        Err(errno) => {
            return Err(PlatformError::PidfdOpen {
                pid: id.pid,
                source: errno.into(),
            });
        }
    };
    let same = matches!(read_stat(id.pid), Ok(stat) if stat.start_ticks == id.start_ticks);
    Ok((same && !has_exited(&pidfd)).then_some(pidfd))
}

/// Whether the process behind `pidfd` has exited: a pidfd polls readable once every thread
/// of its process has ended.
fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // If polling itself fails the answer is unknown; "still running" is the side on which the
    // agent waits rather than cleans up.
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(ready) if ready > 0)
}

/// The fields of `/proc/<pid>/stat` that the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    state: u8,
    ppid: u32,
    session: u32,
    tty_nr: u32,
    /// The `PF_*` flags of the main thread.
    flags: u32,
    start_ticks: u64,
}

/// `PF_EXITING`: the thread is on its way out; its memory may already be gone.
const PF_EXITING: u32 = 0x0000_0004;
/// `PF_KTHREAD`: a kernel thread, which never has a command line.
const PF_KTHREAD: u32 = 0x0020_0000;

impl Stat {
    /// The main thread is a zombie (`Z`) or dead (`X`, and `x` on kernels before 3.13).
    fn has_exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }

    /// Whether an empty command line can only mean that `execve` is under way: it replaces
    /// the memory first and lays out the new arguments and environment a little later, and
    /// the process that called `spawn` may already be running again by then. Kernel threads
    /// and exiting processes have an empty command line for good.
    fn may_be_in_exec(&self) -> bool {
        !self.has_exited() && self.flags & (PF_EXITING | PF_KTHREAD) == 0
    }
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session tty_nr ... starttime ...`.
///
/// `comm` is whatever the process named itself and may contain spaces, parentheses and
/// invalid UTF-8, so it runs from the first `(` to the *last* `)`; everything after that is
/// numbers and a state letter.
fn parse_stat(contents: &[u8]) -> std::result::Result<Stat, &'static str> {
    let open = contents
        .iter()
        .position(|&b| b == b'(')
        .ok_or("no '(' before the command name")?;
    let close = contents
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&close| close > open)
        .ok_or("no ')' after the command name")?;
    let comm = String::from_utf8_lossy(&contents[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(&contents[close + 1..])
        .map_err(|_| "the fields after the command name are not text")?;
    // Field numbers as in proc_pid_stat(5); `fields` starts at field 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).copied().ok_or("too few fields");
    let state = match field(3)?.as_bytes() {
        [state] => *state,
        _ => return Err("the state is not one letter"),
    };
    Ok(Stat {
        comm,
        state,
        ppid: field(4)?.parse().map_err(|_| "ppid is not a number")?,
        session: field(6)?.parse().map_err(|_| "session is not a number")?,
        // Printed as a signed int; keep the bits of the device number as they are.
        tty_nr: field(7)?
            .parse::<i32>()
            .map_err(|_| "tty_nr is not a number")? as u32,
        flags: field(9)?.parse().map_err(|_| "flags is not a number")?,
        start_ticks: field(22)?
            .parse()
            .map_err(|_| "starttime is not a number")?,
    })
}

/// Reads and parses `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Result<Stat> {
    let contents = read_proc_file(pid, "stat")?;
    parse_stat(&contents).map_err(|reason| PlatformError::ParseProc {
        path: proc_path(pid, "stat"),
        reason,
    })
}

/// The real uid from `/proc/<pid>/status` (`Uid:  real effective saved filesystem`).
fn read_uid(pid: u32) -> Result<u32> {
    let status = read_proc_file(pid, "status")?;
    parse_status_uid(&status).map_err(|reason| PlatformError::ParseProc {
        path: proc_path(pid, "status"),
        reason,
    })
}

fn parse_status_uid(status: &[u8]) -> std::result::Result<u32, &'static str> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))
        .ok_or("no Uid: line")?;
    std::str::from_utf8(line)
        .ok()
        .and_then(|line| line.split_ascii_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .ok_or("the real uid is not a number")
}

/// Time since boot, suspend included (the clock that `starttime` counts in).
fn read_uptime() -> Option<Duration> {
    let uptime = fs::read_to_string(Path::new(PROC).join("uptime")).ok()?;
    let seconds: f64 = uptime.split_ascii_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// Splits a NUL-separated, NUL-terminated list (`cmdline`, `environ`).
fn split_nul(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    // An empty file (kernel thread, zombie) has no entries, not one empty entry.
    let entries = (!bytes.is_empty()).then(|| {
        bytes
            .strip_suffix(b"\0")
            .unwrap_or(bytes)
            .split(|&b| b == 0)
    });
    entries.into_iter().flatten()
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    Path::new(PROC).join(pid.to_string()).join(file)
}

/// Reads `/proc/<pid>/<file>`, mapping "the process is gone" to [`PlatformError::NotFound`].
fn read_proc_file(pid: u32, file: &str) -> Result<Vec<u8>> {
    let path = proc_path(pid, file);
    fs::read(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound
            || source.raw_os_error() == Some(Errno::SRCH.raw_os_error())
        {
            PlatformError::NotFound { pid }
        } else {
            PlatformError::ReadProc { path, source }
        }
    })
}

/// Every process's pid and command line (see the crate-level [`crate::all_argv`]).
///
/// # Errors
/// As [`list_pids`].
pub fn all_argv() -> Result<Vec<(u32, Vec<String>)>> {
    Ok(list_pids()?
        .into_iter()
        .filter_map(|pid| process_argv(pid).ok().map(|argv| (pid, argv)))
        .collect())
}

/// Makes every file the process creates from now on private to its user (umask 077), so
/// that logs, journal records and sockets are never readable by others, whatever the
/// library creating them asks for.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[cfg(test)]
mod tests;
