//! Failpoints: named instants of recording and repair at which a test can make the agent
//! die by SIGKILL, to prove that an agent restarted on the same journal finishes the work
//! exactly once.
//!
//! One failpoint is armed per process, by the environment variable `TELEPOLICE_FAILPOINT`:
//! `<name>` fires the first time the agent reaches that point, `<name>:<n>` the n-th time
//! (counted across all sessions). On firing, the agent logs
//! `failpoint <name>: killing the agent` at error level and sends itself SIGKILL: no
//! destructor, no flush, no journal write runs, as when the OOM killer or a power cut
//! strikes.
//!
//! # Names
//! Recording, while the session's process lives (`daemon::follow`, `daemon::run`):
//! - `record.seen`: the first record of a newly found session is saved (state `Seen`);
//!   nothing about the cluster is known yet.
//! - `record.original`: the original workload and its replica count are saved
//!   (`Recorded`).
//! - `record.session-id`: Telepresence's session id is saved.
//! - `record.proxy`: a proxy object is saved (`Active`); the n-th one with `:n`.
//!
//! Cleanup, once the process died (`daemon::session_task`, `daemon::repair`):
//! - `cleanup.orphaned`: the session is saved as `Orphaned`, before the grace period.
//! - `cleanup.planned`: the plan is saved (`CleaningUp`), before its first action.
//! - `cleanup.restored`: the original was scaled back in the cluster, and that is not
//!   journaled yet.
//! - `cleanup.deleted`: a proxy object was deleted in the cluster, and that is not journaled
//!   yet; the n-th delete with `:n`.
//! - `cleanup.action-saved`: an action's outcome is saved, before the next action (or the
//!   helpers); the n-th action with `:n`.
//! - `cleanup.helpers-stopped`: local helpers are stopped and the temp dir removed, before
//!   the final state is saved.
//!
//! A Telepresence 2 session (`daemon::tel2`):
//! - `tel2.recorded`: the session id read from the session cache is saved (`Recorded`).
//! - `tel2.orphaned`: the connector was seen dead and that is saved, before the grace.
//! - `tel2.cleaning`: `CleaningUp` is saved, before the traffic-manager is asked anything.
//! - `tel2.departed`: the traffic-manager answered `Depart`, and that is not journaled yet.
//! - `tel2.depart-saved`: the `Depart` is saved, before the session cache file is removed.
//!
//! The in-cluster sweeper (`sweep::repair`; its journal is the session's Lease):
//! - `sweep.started`: a step is journaled "started" on the Lease, before it is carried out.
//! - `sweep.carried`: a step was carried out in the cluster, before its outcome is
//!   journaled.
//!
//! # Guarantees
//! Only builds with debug assertions (what `cargo test` builds) contain failpoints; in a
//! release build [`hit`] is empty and the variable is never read.

/// Marks the failpoint `name`: kills the agent here if the environment armed it.
#[cfg_attr(not(debug_assertions), allow(unused_variables))]
pub(crate) fn hit(name: &str) {
    #[cfg(debug_assertions)]
    armed::hit(name);
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::platform::{self, Signal};

    /// The variable that arms a failpoint.
    const VAR: &str = "TELEPOLICE_FAILPOINT";

    /// The armed failpoint: its name and on which of its hits it fires.
    static ARMED: OnceLock<Option<(String, usize)>> = OnceLock::new();
    /// How often the armed failpoint was reached so far.
    static HITS: AtomicUsize = AtomicUsize::new(0);

    pub(super) fn hit(name: &str) {
        let armed = ARMED.get_or_init(|| std::env::var(VAR).ok().and_then(|v| parse(&v)));
        let Some((armed, nth)) = armed else { return };
        if armed != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
            return;
        }
        let which = if *nth == 1 {
            name.to_string()
        } else {
            format!("{name}:{nth}")
        };
        tracing::error!("failpoint {which}: killing the agent");
        let own = platform::process_info(std::process::id()).map(|i| i.id);
        if let Ok(id) = own {
            let _ = platform::signal(id, Signal::Kill);
        }
        // The signal is delivered on the way back from the kernel; should it not have been
        // sent at all, abort (SIGABRT) rather than carry on past a failpoint.
        std::thread::sleep(Duration::from_secs(5));
        std::process::abort();
    }

    /// `name` or `name:n` (n >= 1); anything else arms nothing.
    pub(super) fn parse(v: &str) -> Option<(String, usize)> {
        let v = v.trim();
        let (name, nth) = match v.rsplit_once(':') {
            Some((name, n)) => (name, n.parse().ok().filter(|n| *n >= 1)?),
            None => (v, 1),
        };
        (!name.is_empty()).then(|| (name.to_string(), nth))
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::armed::parse;

    #[test]
    fn a_name_fires_on_its_first_hit_and_a_count_on_that_hit() {
        assert_eq!(
            parse("cleanup.planned"),
            Some(("cleanup.planned".into(), 1))
        );
        assert_eq!(
            parse("cleanup.deleted:2"),
            Some(("cleanup.deleted".into(), 2))
        );
        assert_eq!(parse(" record.proxy:1\n"), Some(("record.proxy".into(), 1)));
    }

    #[test]
    fn malformed_values_arm_nothing() {
        for v in [
            "",
            ":2",
            "cleanup.deleted:0",
            "cleanup.deleted:x",
            "cleanup.deleted:",
        ] {
            assert_eq!(parse(v), None, "{v:?}");
        }
    }
}
