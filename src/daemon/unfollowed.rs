//! Telepresence processes the agent saw and does not follow, and sessions it follows without
//! being able to read their environment or working directory: each said once in the log
//! and listed by `status -v` and `doctor`, so that nothing is passed over silently. And the
//! agent's [`Sight`]: whether it can read the user's other processes at all, checked once at
//! start (a service manager's sandbox can hide them).
//!
//! # Guarantees
//! - One entry per process (pid and start time): a process is logged once, however often
//!   the scans look at it again.
//! - Entries of processes that have exited are dropped when the list is read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::platform::{self, ProcessId};

/// How much of a command line an entry keeps.
const COMMAND_CHARS: usize = 200;

/// One process passed over or followed half-blind, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfollowed {
    /// The pid.
    pub pid: u32,
    /// Its command line, cut to 200 characters.
    pub command: String,
    /// Why it is here, and what a person can do about it.
    pub reason: String,
    /// When the agent noticed (RFC 3339).
    pub since: String,
    /// Whether the agent follows it all the same (half-blind) or not at all.
    pub followed: bool,
}

/// The processes passed over, by identity; shared by the daemon loop, the session tasks and
/// the control socket.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<HashMap<ProcessId, Unfollowed>>>);

impl Board {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessId, Unfollowed>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes `id` with `reason`; returns whether it is new (and so worth a log line).
    pub fn note(&self, id: ProcessId, argv: &[String], reason: &str, followed: bool) -> bool {
        let mut map = self.map();
        if map.get(&id).is_some_and(|u| u.reason == reason) {
            return false;
        }
        let mut command = argv.join(" ");
        if let Some((cut, _)) = command.char_indices().nth(COMMAND_CHARS) {
            command.truncate(cut);
            command.push_str("...");
        }
        map.insert(
            id,
            Unfollowed {
                pid: id.pid,
                command,
                reason: reason.to_string(),
                since: jiff::Timestamp::now().to_string(),
                followed,
            },
        );
        true
    }

    /// `id` is followed after all (a reload brought it into scope).
    pub fn forget(&self, id: ProcessId) {
        self.map().remove(&id);
    }

    /// The entries of processes still running, oldest first.
    pub fn snapshot(&self) -> Vec<Unfollowed> {
        let mut map = self.map();
        map.retain(|id, _| platform::is_alive(*id));
        let mut out: Vec<Unfollowed> = map.values().cloned().collect();
        out.sort_by(|a, b| a.since.cmp(&b.since).then(a.pid.cmp(&b.pid)));
        out
    }
}

/// Whether the agent can read the environment and working directory of the user's processes
/// outside its own service: checked at start on one of them, for the log, `status` and
/// `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sight {
    /// The process looked at; `None` when the user has no other.
    pub checked_pid: Option<u32>,
    /// What could not be read, and what to do; `None` when all could.
    pub problem: Option<String>,
}

/// Looks at one process of `uid` outside the agent's own cgroup (its service) and reads its
/// environment and working directory.
pub fn check_sight(uid: u32) -> Sight {
    let me = std::process::id();
    // Not one the kernel keeps from the agent, sandbox or not: one holding a capability the
    // agent lacks (a user's systemd 257 keeps CAP_WAKE_ALARM; seen in a real boot) or not
    // dumpable.
    let usable = |i: &platform::ProcessInfo| {
        i.uid == uid
            && !i.argv.is_empty()
            && i.ppid != me
            && platform::readable_by_owner(i.id.pid, uid)
    };
    // The agent's parent first (run by hand, the shell): no scan needed. Else one outside
    // the agent's cgroup (its service); else any (a machine where all share one cgroup).
    // Under systemd the parent is the user's manager, which is passed over then, so the
    // scan runs.
    let parent = platform::process_info(me)
        .ok()
        .and_then(|i| platform::process_info(i.ppid).ok())
        .filter(usable);
    let other = parent.or_else(|| {
        let own = platform::process_cgroup(me);
        let theirs: Vec<platform::ProcessInfo> = platform::list_pids()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| *p != me)
            .filter_map(|p| platform::process_info(p).ok())
            .filter(usable)
            .collect();
        let outside = theirs
            .iter()
            .position(|i| own.is_some() && platform::process_cgroup(i.id.pid) != own);
        theirs.into_iter().nth(outside.unwrap_or(0))
    });
    let Some(other) = other else {
        return Sight::default();
    };
    let pid = other.id.pid;
    let environ = platform::process_environ(pid).map(|_| ());
    let cwd = match platform::process_cwd(pid) {
        Err(platform::PlatformError::Unsupported { .. }) => Ok(()),
        r => r.map(|_| ()),
    };
    judge(pid, &other.comm, environ, cwd)
}

/// What the reads of `pid`'s environment and working directory say about the agent's sight.
fn judge(
    pid: u32,
    comm: &str,
    environ: Result<(), platform::PlatformError>,
    cwd: Result<(), platform::PlatformError>,
) -> Sight {
    let failed: Vec<String> = [("environment", environ), ("working directory", cwd)]
        .into_iter()
        .filter_map(|(what, r)| r.err().map(|e| format!("its {what} ({})", with_cause(&e))))
        .collect();
    let problem = (!failed.is_empty()).then(|| {
        format!(
            "cannot read {} of the user's process {pid} ({comm}): sessions would be recorded without their KUBECONFIG, working directory and log. The agent runs where the user's processes are hidden from it (a sandbox that puts it in a user namespace, such as ProtectSystem= or PrivateUsers= in a drop-in of its unit): remove that, then restart it",
            failed.join(" or ")
        )
    });
    Sight {
        checked_pid: Some(pid),
        problem,
    }
}

/// An error and its causes, as one line: `cannot read /proc/1/environ: Permission denied
/// (os error 13)`, so that the errno is said.
pub fn with_cause(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// `status -v`'s section for them (empty when there are none).
pub fn render(list: &[Unfollowed]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut t = String::from("\nTelepresence processes not followed, or followed half-blind:\n");
    for u in list {
        let how = if u.followed {
            "followed"
        } else {
            "not followed"
        };
        t.push_str(&format!(
            "  pid {} ({how}, since {}): {}\n    {}\n",
            u.pid, u.since, u.reason, u.command
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sight_is_checked_on_another_process_of_the_user() {
        // This test runs among other processes of its user (its parent, at least).
        let sight = check_sight(platform::current_uid());
        assert!(sight.checked_pid.is_some(), "{sight:?}");
        assert_eq!(sight.problem, None, "{sight:?}");
        // Nobody else's: nothing to check, and nothing said.
        assert_eq!(check_sight(u32::MAX - 7), Sight::default());
    }

    #[test]
    fn a_hidden_environment_is_a_problem_that_says_what_to_do() {
        let denied = || platform::PlatformError::ReadProc {
            path: "/proc/42/environ".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        let s = judge(42, "bash", Err(denied()), Ok(()));
        let p = s.problem.expect("a problem");
        assert!(
            p.starts_with("cannot read its environment (cannot read /proc/42/environ: Permission denied (os error 13))"),
            "{p}"
        );
        assert!(
            p.contains("process 42 (bash)") && p.contains("remove that"),
            "{p}"
        );
        let both = judge(42, "bash", Err(denied()), Err(denied()));
        assert!(
            both.problem
                .is_some_and(|p| p.contains(" or its working directory"))
        );
        assert_eq!(judge(42, "bash", Ok(()), Ok(())).problem, None);
    }

    #[test]
    fn a_process_is_noted_once_per_reason_and_goes_when_it_exits() {
        let me = platform::process_info(std::process::id()).expect("this process");
        let gone = ProcessId {
            pid: me.id.pid,
            start_ticks: me.id.start_ticks + 1,
        };
        let board = Board::default();
        let argv = vec!["python3".to_string(), "x".repeat(300)];
        assert!(board.note(me.id, &argv, "out of scope", false));
        assert!(
            !board.note(me.id, &argv, "out of scope", false),
            "said once"
        );
        assert!(board.note(gone, &argv, "out of scope", false));
        let list = board.snapshot();
        assert_eq!(
            list.len(),
            1,
            "the one with another start time is not running"
        );
        assert_eq!(list[0].pid, me.id.pid);
        assert!(list[0].command.ends_with("...") && list[0].command.chars().count() == 203);
        assert!(render(&list).contains("pid"), "{}", render(&list));
        board.forget(me.id);
        assert!(board.snapshot().is_empty());
        assert_eq!(render(&[]), "");
    }
}
