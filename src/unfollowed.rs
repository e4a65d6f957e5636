//! Telepresence processes the agent saw and does not follow, and sessions it follows without
//! being able to read their environment or working directory: each said once in the log
//! and listed by `status -v` and `doctor`, so that nothing is passed over silently.
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
