//! No logind off Linux: the same API, never connected. Resumes are noticed by the daemon's
//! clock check.

use std::time::Duration;

/// What logind said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sleep {
    /// The machine is about to sleep.
    Going,
    /// The machine has woken up.
    Woke,
}

/// Never made: [`Logind::connect`] always fails here.
#[derive(Debug)]
pub struct Logind(());

impl Logind {
    /// Fails: there is no logind on this system.
    ///
    /// # Errors
    /// Always.
    pub async fn connect() -> Result<Self, String> {
        Err("there is no logind on this system".to_string())
    }

    /// Unreachable (no value exists).
    pub fn hold(&mut self) {}

    /// Unreachable (no value exists).
    pub fn holds(&self) -> bool {
        false
    }

    /// Unreachable (no value exists).
    pub fn release(&mut self) -> bool {
        false
    }

    /// Unreachable (no value exists).
    pub async fn delay_limit(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// Unreachable (no value exists).
    pub async fn next(&mut self) -> Option<Sleep> {
        None
    }
}
