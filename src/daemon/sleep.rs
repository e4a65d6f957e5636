//! A laptop's sleeps (logind) and network changes, as the daemon's loop sees them.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::Ctx;
use crate::config::{Config, OnSleep};
use crate::platform;
use crate::session::{SessionRecord, State};
use crate::signals::logind::{Logind, Sleep};

/// The next word from logind, or never without it.
pub(super) async fn next_sleep(logind: &mut Option<Logind>) -> Option<Sleep> {
    match logind {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

/// Holds logind's delay inhibitor when `on_sleep = "end-sessions"`, releases it otherwise.
pub(super) async fn apply_sleep_policy(cfg: &Config, logind: &mut Option<Logind>) {
    let Some(l) = logind.as_mut() else {
        if cfg.on_sleep == OnSleep::EndSessions {
            warn!(
                "on_sleep = \"end-sessions\" needs logind, which is not available: sessions that die during a sleep are repaired after it"
            );
        }
        return;
    };
    match cfg.on_sleep {
        OnSleep::EndSessions => {
            l.hold();
            debug!("asked logind for a delay inhibitor for sleep");
        }
        OnSleep::Keep => {
            l.release();
        }
    }
}

/// Before a sleep, with `on_sleep = "end-sessions"`: SIGTERM to every live Telepresence
/// process the journal knows, so that each runs its own cleanup while the network is up;
/// then, once they have exited or logind's delay is nearly spent, lets the sleep go on.
pub(super) async fn end_sessions_before_sleep(ctx: &Ctx, logind: &mut Logind) {
    let cfg = ctx.cfg();
    if !logind.holds() {
        info!(
            "no delay inhibitor is held (logind has not granted it): the sleep does not wait for the sessions' cleanup"
        );
    }
    // Within logind's limit, and well within the service watchdog's 30 s: the loop waits.
    let limit = logind.delay_limit().await.min(Duration::from_secs(20));
    let deadline = tokio::time::Instant::now() + limit.saturating_sub(Duration::from_millis(500));
    let live: Vec<SessionRecord> = ctx
        .journal
        .load_all()
        .map(|(records, _)| records)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| matches!(r.state, State::Seen | State::Recorded | State::Active))
        .filter(|r| platform::is_alive(r.process))
        .collect();
    if cfg.dry_run {
        if !live.is_empty() {
            info!(
                "dry run: would send SIGTERM to {} live Telepresence session(s) before the sleep",
                live.len()
            );
        }
    } else {
        for r in &live {
            // The recorded identity (pid and start time): a reused pid is never signalled.
            match platform::signal(r.process, platform::Signal::Term) {
                Ok(true) => {
                    info!(session = %r.key, "SIGTERM to Telepresence: the machine is going to sleep");
                }
                Ok(false) => {}
                Err(e) => warn!(session = %r.key, "ending the session before the sleep: {e}"),
            }
        }
        while live.iter().any(|r| platform::is_alive(r.process))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = live
            .iter()
            .filter(|r| platform::is_alive(r.process))
            .count();
        if !live.is_empty() {
            info!(
                "{} of {} session(s) ended before the sleep",
                live.len() - left,
                live.len()
            );
        }
    }
    logind.release();
    debug!("released the sleep inhibitor");
}

/// The next network change, or never when they are not followed.
pub(super) async fn next_network_change(
    network: &mut Option<platform::NetworkChanges>,
) -> Result<(), platform::PlatformError> {
    match network {
        Some(n) => n.next().await,
        None => std::future::pending().await,
    }
}
