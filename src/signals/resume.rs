//! Noticing that the laptop woke up: [`ResumeDetector`] samples the time the machine has
//! spent suspended (see [`crate::platform::suspended_total`]) on a cheap timer; a jump means
//! it slept.
//!
//! # Testing
//! Debug builds read `TELEPOLICE_TEST_SUSPEND_FILE`, which release builds ignore: it names a
//! file holding a number of seconds that is added to the suspended time, so that a test can
//! make the daemon believe the machine slept.

use std::time::Duration;

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
}
