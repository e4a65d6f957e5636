//! The daemon: one instance per user (a lock in the runtime dir), discovery of new
//! Telepresence sessions, and one task per session that records it, watches it, and
//! repairs what it leaves when it dies.
//!
//! [`run`] is the loop: it takes the next [`events::Event`] from the signals and `match`es it.
//! `found` makes the first record of a process just found; `follow` handles a live session
//! (recording, proxies, a dying shell); `repair` a dead one (planning, acting, retrying) and
//! the manual `repair` command. Every decision on a session is `crate::lifecycle`'s; these
//! files gather what it needs and carry out what it says. `lock` keeps it to one agent per
//! user, `reload` rereads the config on SIGHUP or a save, `sleep` handles logind's sleeps
//! and the network changes that wake waiting repairs, `control` answers `status`.
//!
//! # Guarantees
//! - Every state change and every planned repair is journaled before it is acted on; a
//!   restarted daemon resumes each unfinished session from its record, re-planning from the
//!   cluster as it is, so no step is repeated.
//! - Only the session's own kubeconfig and context are used, and only if the context still
//!   points at the API server recorded with the session.
//!
//! # Caveats
//! Idle means idle: with no session there is no cluster traffic; processes are looked at
//! when a watched Telepresence program is opened and by a slow safety-net scan.

pub mod control;
mod ctx;
mod events;
mod follow;
mod found;
mod heartbeat;
mod knock;
mod lock;
pub mod notify;
mod reload;
mod repair;
mod retry;
mod sleep;
mod tel2;
pub mod unfollowed;
pub mod waiting;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use ctx::Ctx;
use events::{Daemon, Event, Sources};
use found::{environ_map, new_record, pass_over_out_of_scope};
pub use lock::{is_running, lock_path, take_lock};
pub use reload::Reload;
pub use repair::{CleanupError, cleanup};

use crate::config::Config;
use crate::effects::journal::Journal;
use crate::failpoint;
use crate::platform::{self, ProcessId};
use crate::session::{SessionRecord, State};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another agent of this user holds the lock.
    #[error("another telepolice-agent is already running for this user (lock {path} is held)")]
    AlreadyRunning { path: PathBuf },
    /// The runtime dir or lock file could not be made.
    #[error("creating the lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] crate::effects::journal::JournalError),
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] crate::daemon::control::ControlError),
    /// Watching the Telepresence programs failed.
    #[error(transparent)]
    Watch(#[from] crate::signals::discovery::WatchError),
}

/// Aborts a task when dropped (the control socket's server ends with the daemon).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the daemon until `shutdown` completes, reloading its configuration on SIGHUP when
/// `reload` is given.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    reload: Option<Reload>,
) -> Result<(), DaemonError> {
    // Started by systemd (`Type=notify`), the daemon says when it is ready, pings the
    // watchdog and says when it stops; otherwise this does nothing.
    let notifier = notify::Notifier::from_env();
    let _lock = take_lock(&cfg.paths.runtime_dir)?;
    let journal = Journal::open(&cfg.paths.state_dir)?;
    let control = control::bind(&cfg.paths.runtime_dir)?;
    let ctx = Arc::new(Ctx::new(cfg, journal));
    let _control_task = serve_status(&ctx, control);
    info!(
        state_dir = %ctx.cfg().paths.state_dir.display(),
        dry_run = ctx.cfg().dry_run,
        "telepolice-agent started"
    );
    let (records, problems) = ctx.journal.load_all()?;
    for p in problems {
        warn!("{p}");
    }
    prune(&ctx, &records);
    // Saving the config file reloads it, as SIGHUP does (watched before "watching" is said).
    let (_config_watch, config_edits) = match &reload {
        Some(_) => reload::watch_config_file(&ctx.cfg().paths.config_file)
            .map_or((None, None), |(w, rx)| (Some(w), Some(rx))),
        None => (None, None),
    };
    let (hint, hints) = mpsc::unbounded_channel::<()>();
    let (discovery, programs) = events::watch_programs(&ctx.cfg(), hint.clone())?;
    let mut d = Daemon::new(ctx, discovery, hint);
    d.resume_journaled(records);
    d.scan_all();
    // Said only now: from here on, every session that starts is seen.
    events::log_watching(&programs, d.ctx.cfg().scan_interval);
    notifier.ready(&if programs.is_empty() {
        "no telepresence program found; scanning the processes now and then".to_string()
    } else {
        format!("watching {} Telepresence program(s)", programs.len())
    });
    let mut s = Sources::open(&notifier, reload, config_edits, hints);
    tokio::pin!(shutdown);
    loop {
        match events::next(&mut d, &mut s, shutdown.as_mut()).await {
            Event::Shutdown => break,
            Event::WatchdogDue => notifier.watchdog(),
            Event::LogindConnected(connected) => d.logind_connected(connected).await,
            Event::Sleep(sleep) => d.sleep(sleep).await,
            Event::LogindLost => {
                warn!("lost the connection to logind; resumes are noticed by the clock check");
                d.logind = None;
            }
            Event::ResumeCheckDue => d.check_resume(),
            Event::ReloadAsked(why) => d.reload(why, s.reload.as_ref()).await,
            Event::NetworkChanged => d.network_changed(),
            Event::NetworkLost(e) => {
                warn!("{e}; network changes are no longer followed");
                s.network = None;
            }
            // The safety net looks at every process, so that a session missed by the event
            // path (a slow start under load, a program not watched) is still found.
            Event::SafetyScanDue => d.scan_all(),
            // A program was opened; a pid caught between fork and exec is looked at again.
            Event::ProgramsTouched | Event::RecheckDue => d.poll(),
            Event::SessionTaskEnded(key) => {
                if let Some(key) = key {
                    debug!(session = %key, "session task finished");
                }
            }
        }
    }
    info!("stopping");
    notifier.stopping();
    d.stop().await;
    Ok(())
}

/// Checks whether a sandbox hides the user's processes from the agent (said once, and shown
/// by `status` and `doctor` for as long as it runs), then serves `status` on the control
/// socket until the daemon ends.
fn serve_status(ctx: &Arc<Ctx>, control: tokio::net::UnixListener) -> AbortOnDrop {
    let sight = unfollowed::check_sight(ctx.uid);
    match (&sight.problem, sight.checked_pid) {
        (Some(p), _) => warn!("{p}"),
        (None, Some(pid)) => info!(
            checked_pid = pid,
            "the environment and working directory of the user's processes are readable"
        ),
        (None, None) => info!("no other process of this user to check sight on"),
    }
    AbortOnDrop(tokio::spawn(control::serve(
        control,
        ctx.journal.clone(),
        ctx.board.clone(),
        ctx.unfollowed.clone(),
        sight,
        ctx.uid,
        crate::session::now(),
    )))
}

/// Drops ended sessions older than the history retention from the journal.
fn prune(ctx: &Ctx, records: &[SessionRecord]) {
    let now = jiff::Timestamp::now();
    // NeedsAttention records stay until a person dealt with them: they may hold the only
    // copy of the original replica count.
    for r in records
        .iter()
        .filter(|r| matches!(r.state, State::Ended | State::Cleaned))
    {
        let Some(last) = r
            .history
            .last()
            .and_then(|t| t.at.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        let age = now.duration_since(last).unsigned_abs();
        if age > ctx.cfg().history
            && let Err(e) = ctx.journal.remove(&r.key)
        {
            warn!(session = %r.key, "pruning: {e}");
        }
    }
}

/// Follows one session from discovery (or resumption) to a final state.
async fn session_task(ctx: Arc<Ctx>, mut rec: SessionRecord) -> String {
    let key = rec.key.clone();
    if rec.state.is_final() {
        return key;
    }
    if rec.tel2.is_some() {
        tel2::session_task(&ctx, &mut rec).await;
        ctx.heartbeats.finish(&key, rec.state).await;
        announce(&ctx, &rec);
        return key;
    }
    let exit = exited(rec.process);
    tokio::pin!(exit);
    if platform::is_alive(rec.process) {
        follow::follow_live(&ctx, &mut rec, &mut exit).await;
    }
    if rec.state.is_final() {
        ctx.heartbeats.finish(&key, rec.state).await;
        announce(&ctx, &rec);
        return key;
    }
    // Whatever made following stop, nothing is repaired while the process lives. (If the
    // exit future already completed, the process is dead and it is not polled again.)
    if platform::is_alive(rec.process) {
        exit.as_mut().await;
    }
    info!(session = %key, "Telepresence process exited");
    if rec.state != State::Orphaned && rec.state != State::CleaningUp {
        rec.transition(State::Orphaned, "the Telepresence process exited");
        ctx.save(&rec);
        failpoint::hit("cleanup.orphaned");
    }
    // Resumed from the journal with the process dead: the heartbeat is kept while the
    // repair runs, as it was while following.
    if ctx.cfg().team_writes()
        && ctx.heartbeats.beat(&key).is_none()
        && let Some(client) = heartbeat::client(&rec).await
    {
        ctx.heartbeats.start(&rec, &client, None);
    }
    tokio::time::sleep(ctx.cfg().grace_period).await;
    repair::repair(&ctx, &mut rec).await;
    ctx.heartbeats.finish(&key, rec.state).await;
    announce(&ctx, &rec);
    key
}

/// A desktop notification for a session repaired or needing a person (if they are on).
fn announce(ctx: &Ctx, rec: &SessionRecord) {
    if ctx.cfg().notifications
        && let Some(m) = crate::effects::desktop::message(rec)
    {
        crate::effects::desktop::show(&m);
    }
}

/// Completes when the process has exited, and only then (the OS layer falls back to
/// polling when it cannot watch a process, so a failed watch never looks like a death).
pub(crate) async fn exited(id: ProcessId) {
    let _ = platform::wait_for_exit(id).await;
    // Whatever it answered, nothing counts as dead while it still runs.
    while platform::is_alive(id) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx(dir: &Path, history: Duration) -> Ctx {
        let ctx = ctx::testing::ctx(dir);
        let mut cfg = (*ctx.cfg()).clone();
        cfg.history = history;
        ctx.set_cfg(cfg);
        ctx
    }

    /// A record whose last transition happened long ago.
    fn old(pid: u32, state: State) -> SessionRecord {
        let mut r = SessionRecord::test()
            .with_process(pid, 1)
            .in_state(state, "long ago");
        if let Some(t) = r.history.last_mut() {
            t.at = "2020-01-01T00:00:00Z".to_string();
        }
        r
    }

    #[test]
    fn pruning_keeps_what_still_needs_a_person() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ctx = ctx(dir.path(), Duration::from_secs(86_400));
        let records = vec![
            old(1, State::Ended),
            old(2, State::Cleaned),
            old(3, State::NeedsAttention),
            old(4, State::Orphaned),
            SessionRecord::test()
                .with_process(5, 1)
                .in_state(State::Ended, "just now"),
        ];
        for r in &records {
            ctx.journal.write(r).expect("written");
        }
        prune(&ctx, &records);
        let (left, problems) = ctx.journal.load_all().expect("loads");
        assert!(problems.is_empty(), "{problems:?}");
        let mut pids: Vec<u32> = left.iter().map(|r| r.process.pid).collect();
        pids.sort_unstable();
        assert_eq!(
            pids,
            [3, 4, 5],
            "old Ended and Cleaned records go; the rest stay"
        );
    }

    #[tokio::test]
    async fn exited_returns_for_a_dead_process_and_waits_for_a_live_one() {
        let (mut child, info) = ctx::testing::sleeping_child();
        let waiting = tokio::time::timeout(Duration::from_millis(300), exited(info.id)).await;
        assert!(waiting.is_err(), "a live process has not exited");
        child.kill().expect("killed");
        child.wait().expect("reaped");
        tokio::time::timeout(Duration::from_secs(10), exited(info.id))
            .await
            .expect("a dead process has exited");
    }
}
