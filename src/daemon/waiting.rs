//! Repairs that wait for their cluster: [`Waiting`] is what `status` shows of one (since
//! when, how many tries, and why). It lives in memory only (the journal keeps the state and
//! the reason; a count that changes every second is not worth a disk write every second).
//!
//! # Testing
//! Debug builds read two variables that release builds ignore:
//! - `TELEPOLICE_TEST_RETRY_SECS` makes every pause between repair tries that long, so that
//!   a test can tell a woken try from a timed one;
//! - `TELEPOLICE_TEST_NO_KNOCK` (any value) turns knocking off (see `daemon::knock`), so that
//!   a test can tell a resume's try from a knock's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The pause between repair tries a test asked for, if any (debug builds only).
pub fn test_retry_pause() -> Option<Duration> {
    if cfg!(debug_assertions) {
        std::env::var("TELEPOLICE_TEST_RETRY_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    } else {
        None
    }
}

/// Whether a test turned knocking off (debug builds only).
pub fn test_no_knock() -> bool {
    cfg!(debug_assertions) && std::env::var_os("TELEPOLICE_TEST_NO_KNOCK").is_some()
}

/// A repair waiting for its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// When the first try failed (RFC 3339).
    pub since: String,
    /// Tries so far.
    pub tries: u32,
    /// The last failure.
    pub why: String,
}

impl Waiting {
    /// "waiting since 10:42:07, 6 tries: cluster unreachable: ...": for a person, in local
    /// time.
    pub fn summary(&self) -> String {
        let since = self
            .since
            .parse::<jiff::Timestamp>()
            .map(|t| {
                t.to_zoned(jiff::tz::TimeZone::system())
                    .strftime("%H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|_| self.since.clone());
        let tries = if self.tries == 1 { "try" } else { "tries" };
        format!(
            "waiting since {since}, {} {tries}: {}",
            self.tries, self.why
        )
    }
}

/// The repairs waiting now, by session key; shared by the session tasks and the control
/// socket.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<HashMap<String, Waiting>>>);

impl Board {
    /// Records one more failed try of `key`'s repair.
    pub fn failed(&self, key: &str, why: String) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let w = map.entry(key.to_string()).or_insert_with(|| Waiting {
            since: jiff::Timestamp::now().to_string(),
            tries: 0,
            why: String::new(),
        });
        w.tries = w.tries.saturating_add(1);
        w.why = why;
    }

    /// `key`'s repair no longer waits.
    pub fn done(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Whether no repair waits.
    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// A copy of every waiting repair.
    pub fn snapshot(&self) -> HashMap<String, Waiting> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_counts_tries_from_the_first_failure_and_forgets_finished_repairs() {
        let b = Board::default();
        b.failed("a", "connection refused".into());
        b.failed("a", "timed out".into());
        b.failed("b", "connection refused".into());
        let s = b.snapshot();
        assert_eq!(s["a"].tries, 2);
        assert_eq!(s["a"].why, "timed out");
        assert_eq!(s["b"].tries, 1);
        b.done("a");
        assert!(!b.snapshot().contains_key("a"));
        let text = s["a"].summary();
        assert!(
            text.starts_with("waiting since ") && text.contains(", 2 tries: timed out"),
            "{text}"
        );
    }
}
