//! The daemon's own vocabulary: every [`Event`] its loop reacts to, where each comes from
//! ([`Sources::next`]), and what the daemon does about the ones that concern sessions not
//! yet followed ([`Daemon`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{info, warn};

use super::reload::{Reload, next_reload};
use super::sleep::{
    apply_sleep_policy, end_sessions_before_sleep, next_network_change, next_sleep,
};
use super::{Ctx, DaemonError, new_record, session_task};
use crate::config::{Config, OnSleep};
use crate::failpoint;
use crate::platform;
use crate::session::SessionRecord;
use crate::signals::discovery::{self, Discovery, Found};
use crate::signals::logind::{Logind, Sleep};
use crate::signals::resume::{self, ResumeDetector};

/// How soon a pid caught mid-exec (its command line still its parent's) is looked at again.
const RECHECK_AFTER: Duration = Duration::from_millis(50);

/// What the daemon's loop reacts to.
#[derive(Debug)]
pub(super) enum Event {
    /// SIGTERM or SIGINT: stop.
    Shutdown,
    /// Time to tell systemd's watchdog the loop still turns.
    WatchdogDue,
    /// The system bus answered (or not, or the connecting task failed): logind's sleeps can
    /// be followed.
    LogindConnected(Box<Result<Result<Logind, String>, tokio::task::JoinError>>),
    /// logind says the machine is going to sleep, or woke up.
    Sleep(Sleep),
    /// The connection to logind is gone.
    LogindLost,
    /// Time to look at the suspended-time clock.
    ResumeCheckDue,
    /// SIGHUP, or the config file was saved (why).
    ReloadAsked(&'static str),
    /// The machine's network changed.
    NetworkChanged,
    /// Network changes can no longer be followed.
    NetworkLost(platform::PlatformError),
    /// A watched Telepresence program was opened, or a search dir changed.
    ProgramsTouched,
    /// The safety-net scan of every process is due.
    SafetyScanDue,
    /// A pid caught between fork and exec is due for another look.
    RecheckDue,
    /// A session's task finished (its key, unless the task failed).
    SessionTaskEnded(Option<String>),
}

/// Where the events come from, besides the daemon's own state.
pub(super) struct Sources {
    pub(super) watchdog: Option<Interval>,
    pub(super) logind_connecting: Option<tokio::task::JoinHandle<Result<Logind, String>>>,
    pub(super) resume_check: Interval,
    pub(super) reload: Option<Reload>,
    pub(super) config_edits: Option<mpsc::UnboundedReceiver<()>>,
    pub(super) config_edit_due: Option<Instant>,
    pub(super) network: Option<platform::NetworkChanges>,
    pub(super) hints: mpsc::UnboundedReceiver<()>,
    /// When the pids caught mid-exec are looked at again: a deadline kept across turns of
    /// the loop, so that other events cannot keep putting the second look off.
    pub(super) recheck_due: Option<Instant>,
}

impl Sources {
    /// The timers, the logind connection (made in the background: a slow system bus must
    /// not hold up the loop), the reload signals and the network watch.
    pub(super) fn open(
        notifier: &super::notify::Notifier,
        reload: Option<Reload>,
        config_edits: Option<mpsc::UnboundedReceiver<()>>,
        hints: mpsc::UnboundedReceiver<()>,
    ) -> Self {
        Self {
            // Pinged from the loop, so that a loop that no longer turns stops the pings.
            watchdog: notifier.watchdog_interval().map(|every| {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            }),
            logind_connecting: Some(tokio::spawn(Logind::connect())),
            resume_check: {
                let mut t = tokio::time::interval(resume::RESUME_CHECK_INTERVAL);
                t.set_missed_tick_behavior(MissedTickBehavior::Skip);
                t
            },
            reload,
            config_edits,
            config_edit_due: None,
            network: match platform::NetworkChanges::open() {
                Ok(n) => Some(n),
                Err(e) => {
                    info!("{e}: unreachable clusters are retried on a timer only");
                    None
                }
            },
            hints,
            recheck_due: None,
        }
    }
}

/// The discovery loop's state: the sessions followed, and what it passed over.
pub(super) struct Daemon {
    pub(super) ctx: Arc<Ctx>,
    pub(super) sessions: JoinSet<String>,
    /// Every session journaled or followed, by key.
    pub(super) tracked: HashSet<String>,
    /// Pids of followed sessions: a child of one (caught between fork and exec, with its
    /// parent's command line) is never a session of its own.
    pub(super) session_pids: HashSet<u32>,
    /// Processes not followed because they were out of scope: a reload looks at them again.
    pub(super) passed_over: HashSet<String>,
    pub(super) discovery: Discovery,
    /// Where the discovery's hints are sent (a new discovery after a reload sends there too).
    pub(super) hint: mpsc::UnboundedSender<()>,
    pub(super) safety: Interval,
    pub(super) resume: ResumeDetector<fn() -> Duration>,
    pub(super) logind: Option<Logind>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("tracked", &self.tracked.len())
            .finish_non_exhaustive()
    }
}

/// Waits for the next event.
pub(super) async fn next(
    d: &mut Daemon,
    s: &mut Sources,
    shutdown: Pin<&mut impl std::future::Future<Output = ()>>,
) -> Event {
    s.recheck_due = match (d.discovery.has_pending(), s.recheck_due) {
        (false, _) => None,
        (true, Some(due)) => Some(due),
        (true, None) => Some(Instant::now() + RECHECK_AFTER),
    };
    tokio::select! {
        () = shutdown => Event::Shutdown,
        () = async {
            match s.watchdog.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        } => Event::WatchdogDue,
        connected = async {
            match s.logind_connecting.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => {
            s.logind_connecting = None;
            Event::LogindConnected(Box::new(connected))
        }
        ev = next_sleep(&mut d.logind) => ev.map_or(Event::LogindLost, Event::Sleep),
        _ = s.resume_check.tick() => Event::ResumeCheckDue,
        why = next_reload(&mut s.reload, &mut s.config_edits, &mut s.config_edit_due) => Event::ReloadAsked(why),
        changed = next_network_change(&mut s.network) => match changed {
            Ok(()) => Event::NetworkChanged,
            Err(e) => Event::NetworkLost(e),
        },
        Some(()) = s.hints.recv() => {
            while s.hints.try_recv().is_ok() {}
            Event::ProgramsTouched
        }
        _ = d.safety.tick() => Event::SafetyScanDue,
        () = async {
            match s.recheck_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        } => {
            s.recheck_due = None;
            Event::RecheckDue
        }
        Some(done) = d.sessions.join_next(), if !d.sessions.is_empty() => {
            Event::SessionTaskEnded(done.ok())
        }
    }
}

/// The discovery of new sessions, watching the Telepresence programs (the configured ones,
/// or those in the search dirs) and the search dirs: its hints are sent to `tx`.
pub(super) fn watch_programs(
    cfg: &Config,
    tx: mpsc::UnboundedSender<()>,
) -> Result<(Discovery, Vec<PathBuf>), DaemonError> {
    let path_var = std::env::var("PATH").ok();
    let home = std::env::var("HOME").ok();
    let programs = discovery::programs_to_watch(
        &cfg.telepresence_programs,
        path_var.as_deref(),
        home.as_deref(),
    );
    let dirs = discovery::search_dirs(path_var.as_deref(), home.as_deref());
    let mut discovery =
        Discovery::watching(&programs, &dirs, Arc::new(move || tx.send(()).is_ok()))?;
    discovery.find_telepresence2(cfg.telepresence2);
    Ok((discovery, programs))
}

/// Says which programs are watched (or that none is).
pub(super) fn log_watching(programs: &[PathBuf], scan_interval: Duration) {
    if programs.is_empty() {
        warn!(
            "no telepresence program found on PATH; watching for one to be installed there, and relying on the safety-net scan every {scan_interval:?} for one elsewhere"
        );
    } else {
        info!(programs = ?programs, "watching Telepresence programs");
    }
}

/// A timer that ticks every `every`, from `every` from now, skipping missed ticks.
pub(super) fn every(every: Duration) -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + every, every);
    t.set_missed_tick_behavior(MissedTickBehavior::Skip);
    t
}

impl Daemon {
    /// The discovery loop, before it has looked at anything.
    pub(super) fn new(
        ctx: Arc<Ctx>,
        discovery: Discovery,
        hint: mpsc::UnboundedSender<()>,
    ) -> Self {
        Self {
            safety: every(ctx.cfg().scan_interval),
            ctx,
            sessions: JoinSet::new(),
            tracked: HashSet::new(),
            session_pids: HashSet::new(),
            passed_over: HashSet::new(),
            discovery,
            hint,
            // A laptop's sleeps and network changes: reasons to try unreachable clusters
            // again.
            resume: ResumeDetector::new(resume::suspended_clock as fn() -> Duration),
            logind: None,
        }
    }

    /// Stops: the control socket goes, and the session tasks are given 5 s to end.
    pub(super) async fn stop(&mut self) {
        let _ = std::fs::remove_file(super::control::socket_path(
            &self.ctx.cfg().paths.runtime_dir,
        ));
        self.sessions.abort_all();
        self.ctx.heartbeats.stop_all();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.sessions.join_next().await.is_some() {}
        })
        .await;
    }

    /// Follows the sessions journaled unfinished, and knows every journaled one.
    pub(super) fn resume_journaled(&mut self, records: Vec<SessionRecord>) {
        for r in &records {
            if let Some(id) = &r.telepresence_id {
                let _ = self.ctx.claim(id, &r.key);
            }
        }
        // Every journaled session is known: a finished one whose process still runs (one
        // that needs attention, say) must not be recorded afresh over its record.
        self.tracked.extend(records.iter().map(|r| r.key.clone()));
        for rec in records.into_iter().filter(|r| !r.state.is_final()) {
            info!(session = %rec.key, state = rec.state.as_str(), "resuming session from the journal");
            self.session_pids.insert(rec.process.pid);
            self.sessions.spawn(session_task(self.ctx.clone(), rec));
        }
    }

    /// Records and follows every newly found session in scope.
    pub(super) fn start(&mut self, found: Vec<Found>) {
        self.session_pids
            .retain(|p| platform::process_info(*p).is_ok());
        for f in found {
            let key = SessionRecord::key_for(f.info.id);
            // A 0.x session's own child with its command line (the instant between its fork
            // and exec) is not a session; a 2.x connector started by a followed CLI
            // (`telepresence intercept` connecting on its own) is.
            let forked = f.flavor == crate::telepresence::Flavor::Legacy
                && self.session_pids.contains(&f.info.ppid);
            if self.tracked.contains(&key) || forked {
                continue;
            }
            if let Some(rec) = new_record(&self.ctx, &f) {
                self.tracked.insert(key);
                self.session_pids.insert(f.info.id.pid);
                self.ctx.save(&rec);
                failpoint::hit("record.seen");
                self.sessions.spawn(session_task(self.ctx.clone(), rec));
            } else {
                // Out of scope or not parseable: not again (until a reload).
                self.tracked.insert(key.clone());
                self.passed_over.insert(key);
            }
        }
    }

    /// Looks at every process (the safety net, a resume, a reload).
    pub(super) fn scan_all(&mut self) {
        let found = self.discovery.scan_all();
        self.start(found);
    }

    /// Looks at the processes the discovery was told about.
    pub(super) fn poll(&mut self) {
        let found = self.discovery.poll();
        self.start(found);
    }

    /// logind answered (or not): sleeps are followed from now on.
    pub(super) async fn logind_connected(
        &mut self,
        connected: Box<Result<Result<Logind, String>, tokio::task::JoinError>>,
    ) {
        match *connected {
            Ok(Ok(l)) => self.logind = Some(l),
            Ok(Err(e)) => info!("{e}; resumes are noticed by the clock check"),
            Err(e) => warn!("connecting to logind: {e}"),
        }
        apply_sleep_policy(&self.ctx.cfg(), &mut self.logind).await;
    }

    /// logind says the machine sleeps or woke.
    pub(super) async fn sleep(&mut self, sleep: Sleep) {
        match sleep {
            Sleep::Going => match (self.ctx.cfg().on_sleep, self.logind.as_mut()) {
                (OnSleep::EndSessions, Some(l)) => {
                    info!("the machine is going to sleep: ending the live sessions first");
                    end_sessions_before_sleep(&self.ctx, l).await;
                }
                _ => info!(
                    "the machine is going to sleep (on_sleep = \"keep\": sessions are left running)"
                ),
            },
            Sleep::Woke => {
                info!("the machine woke up; looking at every process again");
                // Taken as this resume's notice: the clock check must not repeat it.
                let _ = self.resume.check();
                self.scan_all();
                self.ctx.probe_now("the machine woke up");
                apply_sleep_policy(&self.ctx.cfg(), &mut self.logind).await;
            }
        }
    }

    /// The suspended-time clock jumped: the machine slept.
    pub(super) fn check_resume(&mut self) {
        if let Some(slept) = self.resume.check() {
            info!(
                slept_secs = slept.as_secs(),
                "the machine was asleep; looking at every process again"
            );
            // Sessions that died meanwhile are seen by their exit watches; the scan finds
            // sessions started just before the sleep.
            self.scan_all();
            self.ctx.probe_now("the machine woke up");
        }
    }

    /// Rereads the configuration; a config that does not load, or whose programs cannot
    /// be watched, leaves the running one in place.
    pub(super) async fn reload(&mut self, why: &str, reload: Option<&Reload>) {
        let Some(r) = reload else { return };
        let old = self.ctx.cfg();
        let path = old.paths.config_file.display().to_string();
        let new = match (r.load)() {
            Ok(c) => c,
            Err(e) => return warn!("{why}: keeping the running configuration: {e}"),
        };
        if new == *old {
            return info!("{why}: {path} says nothing new");
        }
        if new.telepresence_programs != old.telepresence_programs {
            match watch_programs(&new, self.hint.clone()) {
                Ok((d, programs)) => {
                    // The old discovery's watch stops as it is dropped.
                    self.discovery = d;
                    log_watching(&programs, new.scan_interval);
                }
                Err(e) => return warn!("{why}: keeping the running configuration: {e}"),
            }
        }
        if new.scan_interval != old.scan_interval {
            self.safety = every(new.scan_interval);
        }
        self.ctx.set_cfg(new);
        apply_sleep_policy(&self.ctx.cfg(), &mut self.logind).await;
        info!(
            "{why}: configuration reloaded from {path}; sessions already followed keep being followed"
        );
        // The new scope or programs may take in processes passed over before.
        for key in self.passed_over.drain() {
            self.tracked.remove(&key);
        }
        self.scan_all();
    }

    /// A resume or a network change: try unreachable clusters again.
    pub(super) fn network_changed(&self) {
        tracing::debug!("the network changed");
        self.ctx.probe_now("the network changed");
    }
}
