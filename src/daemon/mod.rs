//! The daemon: one instance per user (a lock in the runtime dir), discovery of new
//! Telepresence sessions, and one task per session that records it, watches it, and
//! repairs what it leaves when it dies.
//!
//! `follow` handles a live session (recording, proxies, a dying shell); `repair` a dead one
//! (planning, acting, retrying) and the manual `cleanup` command. `lock` keeps it to one
//! agent per user, `reload` rereads the config on SIGHUP or a save, and `sleep` handles
//! logind's sleeps and the network changes that wake waiting repairs.
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
mod follow;
mod knock;
mod lock;
pub mod notify;
mod reload;
mod repair;
mod retry;
mod sleep;
pub mod unfollowed;
pub mod waiting;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use lock::{is_running, lock_path, take_lock};
pub use reload::Reload;
use reload::{next_reload, watch_config_file};
pub use repair::{CleanupError, cleanup};
use sleep::{apply_sleep_policy, end_sessions_before_sleep, next_network_change, next_sleep};

use crate::config::{Config, OnSleep};
use crate::effects::cluster;
use crate::effects::journal::Journal;
use crate::failpoint;
use crate::lifecycle;
use crate::platform::{self, ProcessId};
use crate::session::{ClusterBinding, SCHEMA, SessionRecord, State};
use crate::signals::discovery::{self, Discovery, Found};
use crate::signals::logind::{Logind, Sleep};
use crate::signals::resume;
use crate::telepresence;

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

/// How soon a pid caught mid-exec (its command line still its parent's) is looked at again.
const RECHECK_AFTER: Duration = Duration::from_millis(50);

/// Aborts a task when dropped (the control socket's server ends with the daemon).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every session task shares.
#[derive(Debug)]
struct Ctx {
    /// The running configuration; replaced as a whole when SIGHUP reloads it.
    cfg: std::sync::RwLock<Arc<Config>>,
    journal: Journal,
    uid: u32,
    /// Bumped when it is worth trying an unreachable cluster again at once (a resume, a
    /// network change); waiting repairs subscribe.
    probe: tokio::sync::watch::Sender<u64>,
    /// Repairs waiting for their cluster, for `status`.
    board: waiting::Board,
    /// Telepresence processes passed over or followed half-blind, for `status`.
    unfollowed: crate::daemon::unfollowed::Board,
    /// Which session holds each Telepresence session id: an id is claimed by one session
    /// only, checked and taken in one step (filled from the journal at start).
    claims: std::sync::Mutex<HashMap<String, String>>,
}

impl Ctx {
    fn new(cfg: Config, journal: Journal) -> Self {
        Self {
            uid: platform::current_uid(),
            journal,
            cfg: std::sync::RwLock::new(Arc::new(cfg)),
            probe: tokio::sync::watch::Sender::new(0),
            board: waiting::Board::default(),
            unfollowed: Default::default(),
            claims: Default::default(),
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims Telepresence session `id` for the session `key`, unless another session
    /// holds it (whose key is the error).
    fn claim(&self, id: &str, key: &str) -> Result<(), String> {
        let mut claims = self.claims();
        match claims.get(id) {
            Some(holder) if holder != key => Err(holder.clone()),
            _ => {
                claims.insert(id.to_string(), key.to_string());
                Ok(())
            }
        }
    }

    /// The session ids claimed by sessions other than `key`.
    fn claimed_by_others(&self, key: &str) -> HashSet<String> {
        self.claims()
            .iter()
            .filter(|(_, holder)| holder.as_str() != key)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The configuration now (a session task keeps the copy it reads for one decision).
    fn cfg(&self) -> Arc<Config> {
        self.cfg
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_cfg(&self, cfg: Config) {
        *self
            .cfg
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cfg);
    }

    /// Wakes every repair that waits for its cluster.
    fn probe_now(&self, why: &str) {
        if !self.board.is_empty() {
            // A chatty network (address refreshes, say) would fill the log at info.
            if why.contains("network") {
                debug!("{why}: trying the unreachable clusters again now");
            } else {
                info!("{why}: trying the unreachable clusters again now");
            }
        }
        self.probe.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn save(&self, rec: &SessionRecord) {
        if let Err(e) = self.journal.write(rec) {
            // The journal is the agent's memory: say so loudly, keep going in memory.
            // (Before acting on the cluster, `save_durably` is used instead.)
            warn!(session = %rec.key, "{e}");
        }
    }

    /// Takes what follows `event` (see [`lifecycle::step`]) into the record and journals it:
    /// a session out of scope is forgotten instead.
    fn record(&self, rec: &mut SessionRecord, event: lifecycle::Event) -> lifecycle::Step {
        let step = lifecycle::step(rec, event);
        lifecycle::apply(rec, &step);
        if step.forget {
            let _ = self.journal.remove(&rec.key);
        } else if !step.is_nothing() {
            self.save(rec);
        }
        step
    }

    /// Writes the record and says whether it is on disk: what must precede any action.
    fn save_durably(
        &self,
        rec: &SessionRecord,
    ) -> Result<(), crate::effects::journal::JournalError> {
        self.journal.write(rec)
    }
}

/// The discovery of new sessions, watching the Telepresence programs (the configured ones,
/// or those in the search dirs) and the search dirs: its hints are sent to `tx`.
fn watch_programs(
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
    let discovery = Discovery::watching(&programs, &dirs, Arc::new(move || tx.send(()).is_ok()))?;
    Ok((discovery, programs))
}

/// Says which programs are watched (or that none is).
fn log_watching(programs: &[PathBuf], scan_interval: Duration) {
    if programs.is_empty() {
        warn!(
            "no telepresence program found on PATH; watching for one to be installed there, and relying on the safety-net scan every {scan_interval:?} for one elsewhere"
        );
    } else {
        info!(programs = ?programs, "watching Telepresence programs");
    }
}

/// Runs the daemon until `shutdown` completes, reloading its configuration on SIGHUP when
/// `reload` is given.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    mut reload: Option<Reload>,
) -> Result<(), DaemonError> {
    // Started by systemd (`Type=notify`), the daemon says when it is ready, pings the
    // watchdog and says when it stops; otherwise this does nothing.
    let notifier = crate::daemon::notify::Notifier::from_env();
    let _lock = take_lock(&cfg.paths.runtime_dir)?;
    let journal = Journal::open(&cfg.paths.state_dir)?;
    let control = crate::daemon::control::bind(&cfg.paths.runtime_dir)?;
    let ctx = Arc::new(Ctx::new(cfg, journal));
    // Whether a sandbox hides the user's processes from the agent: said once, and shown by
    // `status` and `doctor` for as long as it runs.
    let sight = crate::daemon::unfollowed::check_sight(ctx.uid);
    match (&sight.problem, sight.checked_pid) {
        (Some(p), _) => warn!("{p}"),
        (None, Some(pid)) => info!(
            checked_pid = pid,
            "the environment and working directory of the user's processes are readable"
        ),
        (None, None) => info!("no other process of this user to check sight on"),
    }
    let _control_task = AbortOnDrop(tokio::spawn(crate::daemon::control::serve(
        control,
        ctx.journal.clone(),
        ctx.board.clone(),
        ctx.unfollowed.clone(),
        sight,
        ctx.uid,
        crate::session::now(),
    )));
    info!(
        state_dir = %ctx.cfg().paths.state_dir.display(),
        dry_run = ctx.cfg().dry_run,
        "telepolice-agent started"
    );
    let mut sessions: JoinSet<String> = JoinSet::new();
    let mut tracked: HashSet<String> = HashSet::new();
    // Pids of followed sessions: a child of one (caught between fork and exec, with its
    // parent's command line) is never a session of its own.
    let mut session_pids: HashSet<u32> = HashSet::new();

    let (records, problems) = ctx.journal.load_all()?;
    for p in problems {
        warn!("{p}");
    }
    prune(&ctx, &records);
    for r in &records {
        if let Some(id) = &r.telepresence_id {
            let _ = ctx.claim(id, &r.key);
        }
    }
    // Every journaled session is known: a finished one whose process still runs (one that
    // needs attention, say) must not be recorded afresh over its record.
    tracked.extend(records.iter().map(|r| r.key.clone()));
    for rec in records.into_iter().filter(|r| !r.state.is_final()) {
        info!(session = %rec.key, state = rec.state.as_str(), "resuming session from the journal");
        tracked.insert(rec.key.clone());
        session_pids.insert(rec.process.pid);
        sessions.spawn(session_task(ctx.clone(), rec));
    }

    // Saving the config file reloads it, as SIGHUP does (watched before "watching" is said).
    let (_config_watch, mut config_edits) = match &reload {
        Some(_) => watch_config_file(&ctx.cfg().paths.config_file)
            .map_or((None, None), |(w, rx)| (Some(w), Some(rx))),
        None => (None, None),
    };
    let mut config_edit_due = None;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let (mut discovery, programs) = watch_programs(&ctx.cfg(), tx.clone())?;
    // Processes not followed because they were out of scope: a reload looks at them again.
    let mut passed_over: HashSet<String> = HashSet::new();
    let mut start = |found: Vec<Found>,
                     sessions: &mut JoinSet<String>,
                     tracked: &mut HashSet<String>,
                     passed_over: &mut HashSet<String>| {
        session_pids.retain(|p| platform::process_info(*p).is_ok());
        for f in found {
            let key = SessionRecord::key_for(f.info.id);
            if tracked.contains(&key) || session_pids.contains(&f.info.ppid) {
                continue;
            }
            if let Some(rec) = new_record(&ctx, &f) {
                tracked.insert(key);
                session_pids.insert(f.info.id.pid);
                ctx.save(&rec);
                failpoint::hit("record.seen");
                sessions.spawn(session_task(ctx.clone(), rec));
            } else {
                // Out of scope or not parseable: not again (until a reload).
                tracked.insert(key.clone());
                passed_over.insert(key);
            }
        }
    };
    start(
        discovery.scan_all(),
        &mut sessions,
        &mut tracked,
        &mut passed_over,
    );
    // Said only now: from here on, every session that starts is seen.
    log_watching(&programs, ctx.cfg().scan_interval);
    notifier.ready(&if programs.is_empty() {
        "no telepresence program found; scanning the processes now and then".to_string()
    } else {
        format!("watching {} Telepresence program(s)", programs.len())
    });
    // Pinged from this loop, so that a loop that no longer turns stops the pings.
    let mut watchdog = notifier.watchdog_interval().map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let mut safety = tokio::time::interval(ctx.cfg().scan_interval);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    safety.tick().await;
    // A laptop's sleeps and network changes: reasons to try unreachable clusters again.
    let mut resume = resume::ResumeDetector::new(resume::suspended_clock);
    let mut resume_check = tokio::time::interval(resume::RESUME_CHECK_INTERVAL);
    resume_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut network = match platform::NetworkChanges::open() {
        Ok(n) => Some(n),
        Err(e) => {
            info!("{e}: unreachable clusters are retried on a timer only");
            None
        }
    };
    // Connected in the background: a slow system bus must not hold up the loop.
    let mut logind: Option<Logind> = None;
    let mut logind_connecting = Some(tokio::spawn(Logind::connect()));
    tokio::pin!(shutdown);
    // When the pids caught mid-exec are looked at again: a deadline kept across turns of the
    // loop, so that other events cannot keep putting the second look off.
    let mut recheck_due: Option<tokio::time::Instant> = None;
    loop {
        recheck_due = match (discovery.has_pending(), recheck_due) {
            (false, _) => None,
            (true, Some(due)) => Some(due),
            (true, None) => Some(tokio::time::Instant::now() + RECHECK_AFTER),
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = async {
                match watchdog.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => notifier.watchdog(),
            connected = async {
                match logind_connecting.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                logind_connecting = None;
                match connected {
                    Ok(Ok(l)) => logind = Some(l),
                    Ok(Err(e)) => info!("{e}; resumes are noticed by the clock check"),
                    Err(e) => warn!("connecting to logind: {e}"),
                }
                apply_sleep_policy(&ctx.cfg(), &mut logind).await;
            }
            ev = next_sleep(&mut logind) => match ev {
                Some(Sleep::Going) => match (ctx.cfg().on_sleep, logind.as_mut()) {
                    (OnSleep::EndSessions, Some(l)) => {
                        info!("the machine is going to sleep: ending the live sessions first");
                        end_sessions_before_sleep(&ctx, l).await;
                    }
                    _ => info!("the machine is going to sleep (on_sleep = \"keep\": sessions are left running)"),
                },
                Some(Sleep::Woke) => {
                    info!("the machine woke up; looking at every process again");
                    // Taken as this resume's notice: the clock check must not repeat it.
                    let _ = resume.check();
                    start(discovery.scan_all(), &mut sessions, &mut tracked, &mut passed_over);
                    ctx.probe_now("the machine woke up");
                    apply_sleep_policy(&ctx.cfg(), &mut logind).await;
                }
                None => {
                    warn!("lost the connection to logind; resumes are noticed by the clock check");
                    logind = None;
                }
            },
            _ = resume_check.tick() => {
                if let Some(slept) = resume.check() {
                    info!(
                        slept_secs = slept.as_secs(),
                        "the machine was asleep; looking at every process again"
                    );
                    // Sessions that died meanwhile are seen by their exit watches; the
                    // scan finds sessions started just before the sleep.
                    start(discovery.scan_all(), &mut sessions, &mut tracked, &mut passed_over);
                    ctx.probe_now("the machine woke up");
                }
            }
            why = next_reload(&mut reload, &mut config_edits, &mut config_edit_due) => {
                let Some(r) = &reload else { continue };
                let old = ctx.cfg();
                let path = old.paths.config_file.display().to_string();
                let new = match (r.load)() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("{why}: keeping the running configuration: {e}");
                        continue;
                    }
                };
                if new == *old {
                    info!("{why}: {path} says nothing new");
                    continue;
                }
                if new.telepresence_programs != old.telepresence_programs {
                    match watch_programs(&new, tx.clone()) {
                        Ok((d, programs)) => {
                            // The old discovery's watch stops as it is dropped.
                            discovery = d;
                            log_watching(&programs, new.scan_interval);
                        }
                        Err(e) => {
                            warn!("{why}: keeping the running configuration: {e}");
                            continue;
                        }
                    }
                }
                if new.scan_interval != old.scan_interval {
                    safety = tokio::time::interval_at(
                        tokio::time::Instant::now() + new.scan_interval,
                        new.scan_interval,
                    );
                    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                }
                ctx.set_cfg(new);
                apply_sleep_policy(&ctx.cfg(), &mut logind).await;
                info!("{why}: configuration reloaded from {path}; sessions already followed keep being followed");
                // The new scope or programs may take in processes passed over before.
                for key in passed_over.drain() {
                    tracked.remove(&key);
                }
                start(discovery.scan_all(), &mut sessions, &mut tracked, &mut passed_over);
            }
            changed = next_network_change(&mut network) => match changed {
                Ok(()) => {
                    debug!("the network changed");
                    ctx.probe_now("the network changed");
                }
                Err(e) => {
                    warn!("{e}; network changes are no longer followed");
                    network = None;
                }
            },
            Some(()) = rx.recv() => {
                while rx.try_recv().is_ok() {}
                start(discovery.poll(), &mut sessions, &mut tracked, &mut passed_over);
            }
            // The safety net looks at every process, so that a session missed by the
            // event path (a slow start under load, a program not watched) is still found.
            _ = safety.tick() => start(discovery.scan_all(), &mut sessions, &mut tracked, &mut passed_over),
            // A pid caught between fork and exec is looked at again shortly.
            _ = async {
                match recheck_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                recheck_due = None;
                start(discovery.poll(), &mut sessions, &mut tracked, &mut passed_over);
            }
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Ok(key) = done {
                    debug!(session = %key, "session task finished");
                }
            }
        }
    }
    info!("stopping");
    notifier.stopping();
    let _ = std::fs::remove_file(crate::daemon::control::socket_path(
        &ctx.cfg().paths.runtime_dir,
    ));
    sessions.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    Ok(())
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

/// A process's environment, and what went wrong reading it. Where the OS layer cannot read
/// it (macOS), the agent's own `KUBECONFIG`, `HOME`, `PATH` and `TMPDIR` stand in (a
/// launchd agent of the same user shares them with the user's shells in the common case).
fn environ_map(pid: u32) -> (HashMap<String, String>, Option<String>) {
    // Found in its first instant, a process may still be inside execve for a moment: its
    // new environment is there within microseconds (20 ms at most here, said otherwise).
    let mut read = platform::process_environ(pid);
    for _ in 0..10 {
        if !matches!(
            read,
            Err(crate::platform::PlatformError::ExecInProgress { .. })
        ) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        read = platform::process_environ(pid);
    }
    match read {
        Ok(v) => (v.into_iter().collect(), None),
        Err(e @ crate::platform::PlatformError::Unsupported { .. }) => (
            ["KUBECONFIG", "HOME", "PATH", "TMPDIR"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
            Some(format!(
                "{e}: the agent's own KUBECONFIG, HOME and PATH stand in for the session's"
            )),
        ),
        Err(e) => (
            HashMap::new(),
            Some(format!(
                "cannot read its environment ({}): its KUBECONFIG, HOME and PATH are unknown, so the default kubeconfig is assumed; run the agent where it can read the user's /proc entries (see `telepolice-agent doctor`)",
                crate::daemon::unfollowed::with_cause(&e)
            )),
        ),
    }
}

/// Says (once) that the process `id` is not followed: its cluster is out of the configured
/// scope.
fn pass_over_out_of_scope(ctx: &Ctx, id: ProcessId, argv: &[String], cluster: &ClusterBinding) {
    let why = format!(
        "context {} namespace {} is outside the configured scope (contexts, ignore_contexts, namespaces in {})",
        cluster.context,
        cluster.namespace,
        ctx.cfg().paths.config_file.display()
    );
    if ctx.unfollowed.note(id, argv, &why, false) {
        info!(pid = id.pid, "not following Telepresence process: {why}");
    }
}

/// What the agent cannot see of a session it follows (its environment, its working
/// directory), for the log, the record and `status`.
fn blindness(info: &crate::platform::ProcessInfo, env_problem: Option<String>) -> Vec<String> {
    let mut out: Vec<String> = env_problem.into_iter().collect();
    if info.cwd.is_none() {
        let why = platform::process_cwd(info.id.pid).err().map_or_else(
            || "gone".to_string(),
            |e| crate::daemon::unfollowed::with_cause(&e),
        );
        out.push(format!(
            "cannot read its working directory ({why}): its ./telepresence.log and a relative --logfile or KUBECONFIG cannot be found"
        ));
    }
    out
}

/// Builds the first record of a newly found session (state `Seen`), or `None` when it is
/// out of the configured scope.
fn new_record(ctx: &Ctx, f: &Found) -> Option<SessionRecord> {
    let info = &f.info;
    let args = info.argv.get(f.program_index + 1..).unwrap_or(&[]);
    let invocation = match telepresence::parse_legacy_args(args) {
        Ok(i) => i,
        Err(e @ telepresence::ArgsError::PrintsAndExits { .. }) => {
            debug!(pid = info.id.pid, "not following Telepresence process: {e}");
            return None;
        }
        Err(e) => {
            let why = format!("Telepresence 0.x would refuse this command line: {e}");
            if ctx.unfollowed.note(info.id, &info.argv, &why, false) {
                warn!(
                    pid = info.id.pid,
                    "not following Telepresence process: {why}"
                );
            }
            return None;
        }
    };
    let (env, env_problem) = environ_map(info.id.pid);
    let blind = blindness(info, env_problem);
    let (cluster, problem) = match cluster::resolve_binding(
        &env,
        info.cwd.as_deref(),
        invocation.context.as_deref(),
        invocation.namespace.as_deref(),
    ) {
        Ok(b) => (b, None),
        Err(e) => (
            ClusterBinding {
                kubeconfig: cluster::kubeconfig_paths(&env, info.cwd.as_deref()),
                context: invocation.context.clone().unwrap_or_default(),
                namespace: invocation.namespace.clone().unwrap_or_default(),
                server: String::new(),
                exec_env: Vec::new(),
            },
            Some(e.to_string()),
        ),
    };
    if problem.is_none() && !ctx.cfg().in_scope(&cluster.context, &cluster.namespace) {
        pass_over_out_of_scope(ctx, info.id, &info.argv, &cluster);
        return None;
    }
    ctx.unfollowed.forget(info.id);
    if !blind.is_empty() {
        let why = blind.join("; ");
        if ctx.unfollowed.note(info.id, &info.argv, &why, true) {
            warn!(
                pid = info.id.pid,
                "following Telepresence process half-blind: {why}"
            );
        }
    }
    let parent = platform::process_info(info.ppid).ok().map(|p| p.id);
    let mut rec = SessionRecord {
        schema: SCHEMA,
        key: SessionRecord::key_for(info.id),
        process: info.id,
        argv: info.argv.clone(),
        cwd: info.cwd.clone(),
        parent,
        tty: info.tty_nr,
        sid: info.session,
        uid: info.uid,
        invocation,
        cluster,
        telepresence_id: None,
        // Where its tel-* dir is: /tmp, whatever its TMPDIR says (0.x hard-codes it).
        tmp_root: Some(ctx.cfg().paths.tmp_dir.clone()),
        original: None,
        proxies: Vec::new(),
        state: State::Seen,
        history: Vec::new(),
        actions: Vec::new(),
    };
    // Not final while the cluster is unknown: the kubeconfig may appear or be fixed while
    // the session runs.
    let found = lifecycle::Event::Found {
        pid: info.id.pid,
        blind,
        cluster_problem: problem,
    };
    let step = lifecycle::step(&rec, found);
    lifecycle::apply(&mut rec, &step);
    info!(session = %rec.key, target = %rec.target(), context = %rec.cluster.context, namespace = %rec.cluster.namespace, "new Telepresence session");
    Some(rec)
}

/// Follows one session from discovery (or resumption) to a final state.
async fn session_task(ctx: Arc<Ctx>, mut rec: SessionRecord) -> String {
    let key = rec.key.clone();
    if rec.state.is_final() {
        return key;
    }
    let exit = exited(rec.process);
    tokio::pin!(exit);
    if platform::is_alive(rec.process) {
        follow::follow_live(&ctx, &mut rec, &mut exit).await;
    }
    if rec.state.is_final() {
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
    tokio::time::sleep(ctx.cfg().grace_period).await;
    repair::repair(&ctx, &mut rec).await;
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

/// What the daemon's unit tests share: a context in a temp dir, and a live child process.
#[cfg(test)]
mod testing {
    use std::path::Path;
    use std::time::Duration;

    use super::Ctx;
    use crate::config::{Config, Paths};
    use crate::effects::journal::Journal;
    use crate::platform::{self, ProcessInfo};

    /// A daemon context with default settings and every path under `dir`.
    pub(super) fn ctx(dir: &Path) -> Ctx {
        let paths = Paths {
            config_file: dir.join("config.toml"),
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            log_dir: dir.join("logs"),
            tmp_dir: dir.join("tmp"),
        };
        let cfg = Config::resolve(Default::default(), paths).expect("defaults");
        let journal = Journal::open(&cfg.paths.state_dir).expect("journal");
        Ctx::new(cfg, journal)
    }

    /// A `sleep 30` child and its description, asked for until it is out of `execve`.
    pub(super) fn sleeping_child() -> (std::process::Child, ProcessInfo) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let info = (0..500)
            .find_map(|_| {
                platform::process_info(child.id()).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                })
            })
            .expect("described");
        (child, info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx(dir: &Path, history: Duration) -> Ctx {
        let ctx = testing::ctx(dir);
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

    #[test]
    fn what_cannot_be_read_of_a_session_is_said() {
        let me = platform::process_info(std::process::id()).expect("this process");
        assert!(blindness(&me, None).is_empty(), "its own cwd is readable");
        let blind = crate::platform::ProcessInfo {
            cwd: None,
            ..me.clone()
        };
        let said = blindness(&blind, Some("cannot read its environment (EACCES)".into()));
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("environment"), "{said:?}");
        assert!(
            said[1].starts_with("cannot read its working directory ("),
            "{said:?}"
        );
        // Its own environment reads; a process that is gone has none.
        assert!(environ_map(std::process::id()).1.is_none());
        let (env, problem) = environ_map(u32::MAX - 1);
        assert!(env.is_empty());
        assert!(problem.is_some_and(|p| p.contains("cannot read its environment")));
    }

    #[tokio::test]
    async fn exited_returns_for_a_dead_process_and_waits_for_a_live_one() {
        let (mut child, info) = testing::sleeping_child();
        let waiting = tokio::time::timeout(Duration::from_millis(300), exited(info.id)).await;
        assert!(waiting.is_err(), "a live process has not exited");
        child.kill().expect("killed");
        child.wait().expect("reaped");
        tokio::time::timeout(Duration::from_secs(10), exited(info.id))
            .await
            .expect("a dead process has exited");
    }
}
