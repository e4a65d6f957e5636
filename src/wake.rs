//! Noticing that the laptop woke up, and keeping track of repairs that wait for their
//! cluster.
//!
//! - [`ResumeDetector`] samples the time the machine has spent suspended (see
//!   [`crate::platform::suspended_total`]) on a cheap timer; a jump means it slept.
//! - [`Waiting`] is what `status` shows of a repair that waits: since when, how many tries,
//!   and why. It lives in memory only (the journal keeps the state and the reason; a count
//!   that changes every second is not worth a disk write every second).
//!
//! # Testing
//! Debug builds read two variables that release builds ignore:
//! - `TELEPOLICE_TEST_SUSPEND_FILE` names a file holding a number of seconds that is added
//!   to the suspended time, so that a test can make the daemon believe the machine slept;
//! - `TELEPOLICE_TEST_RETRY_SECS` makes every pause between repair tries that long, so that
//!   a test can tell a woken try from a timed one;
//! - `TELEPOLICE_TEST_NO_KNOCK` (any value) turns knocking off (see `daemon::knock`), so that
//!   a test can tell a resume's try from a knock's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A jump of the suspended time at least this big is a resume (the clocks agree to within
/// microseconds otherwise).
pub const RESUME_THRESHOLD: Duration = Duration::from_secs(1);

/// How often the suspended time is sampled. The read is two clock reads, but each tick
/// wakes an idle daemon; deaths during a sleep are seen by the exit watches anyway, and
/// logind (where there is one) says at once when the machine woke.
pub const RESUME_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Tells jumps in a clock of suspended time.
#[derive(Debug)]
pub struct ResumeDetector<C> {
    clock: C,
    last: Duration,
}

impl<C: FnMut() -> Duration> ResumeDetector<C> {
    /// Starts from the clock's current reading.
    pub fn new(mut clock: C) -> Self {
        let last = clock();
        Self { clock, last }
    }

    /// How long the machine slept since the last check, if it did.
    pub fn check(&mut self) -> Option<Duration> {
        let now = (self.clock)();
        let slept = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        (slept >= RESUME_THRESHOLD).then_some(slept)
    }
}

/// The machine's suspended time, plus (in debug builds) what a test injected.
pub fn suspended_clock() -> Duration {
    crate::platform::suspended_total() + injected()
}

#[cfg(debug_assertions)]
fn injected() -> Duration {
    let Some(path) = std::env::var_os("TELEPOLICE_TEST_SUSPEND_FILE") else {
        return Duration::ZERO;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(not(debug_assertions))]
fn injected() -> Duration {
    Duration::ZERO
}

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
    fn a_jump_of_the_suspended_time_is_a_resume_and_jitter_is_not() {
        let readings = [0.0, 0.000_2, 0.000_3, 42.5, 42.5, 42.6, 40.0, 40.0, 43.0];
        let mut i = 0;
        let mut d = ResumeDetector::new(|| {
            let r = readings[i.min(readings.len() - 1)];
            i += 1;
            Duration::from_secs_f64(r)
        });
        let seen: Vec<Option<u64>> = (1..readings.len())
            .map(|_| d.check().map(|s| s.as_secs()))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                None,
                Some(42), // slept 42 s
                None,
                None,
                None, // a clock reading going back is not a resume...
                None,
                None, // ...and 43.0 is measured from the highest reading (42.6), not from 40.0
            ]
        );
    }

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
