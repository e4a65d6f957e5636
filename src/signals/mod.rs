//! Signals: what the OS says, turned into what the daemon's loop reacts to. Nothing here
//! decides or acts.
//!
//! - [`discovery`]: new Telepresence processes (inotify on the programs, a new-pid scan).
//! - [`resume`]: the machine woke up (a jump of the suspended time).
//! - `logind`: logind's sleep notifications and the delay inhibitor (Linux).
//! - [`unix`]: SIGTERM, SIGINT and SIGHUP.
//!
//! Network changes and process exits come from the OS layer (`crate::platform`) directly.

pub mod discovery;
#[cfg(target_os = "linux")]
pub mod logind;
#[cfg(not(target_os = "linux"))]
#[path = "logind_other.rs"]
pub mod logind;
pub mod resume;
pub mod unix;
