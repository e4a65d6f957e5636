//! The daemon: one instance per user (a lock in the runtime dir), discovery of new
//! Telepresence sessions, and one task per session that records it, watches it, and
//! repairs what it leaves when it dies.
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

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::cluster::{self, ClusterError};
use crate::config::{Config, OnShellDeath};
use crate::discovery::{self, Discovery, Found};
use crate::helpers;
use crate::journal::Journal;
use crate::plan::{self, Action};
use crate::platform::{self, ProcessId, Signal};
use crate::session::{
    ClusterBinding, Original, ProxyKind, ProxyObject, ReplicaSource, SCHEMA, SessionRecord, State,
};
use crate::telepresence::{self, Mode};

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
    Journal(#[from] crate::journal::JournalError),
    /// The control socket could not be opened.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// Watching the Telepresence programs failed.
    #[error("watching {path} for new Telepresence processes: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Aborts a task when dropped (the control socket's server ends with the daemon).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The lock file of the runtime dir.
pub fn lock_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("telepolice-agent.lock")
}

/// Takes the per-user lock; held as long as the returned file lives.
pub fn take_lock(runtime_dir: &Path) -> Result<File, DaemonError> {
    let path = lock_path(runtime_dir);
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(runtime_dir).map_err(|source| DaemonError::Lock {
        path: path.clone(),
        source,
    })?;
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| DaemonError::Lock {
            path: path.clone(),
            source,
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Lock { path, source }),
    }
}

/// Whether a daemon holds the lock in `runtime_dir` now.
pub fn is_running(runtime_dir: &Path) -> bool {
    let path = lock_path(runtime_dir);
    match File::options().read(true).write(true).open(&path) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// What every session task shares.
#[derive(Debug)]
struct Ctx {
    cfg: Config,
    journal: Journal,
    uid: u32,
}

impl Ctx {
    fn save(&self, rec: &SessionRecord) {
        if let Err(e) = self.journal.write(rec) {
            // The journal is the agent's memory: say so loudly, keep going in memory.
            warn!(session = %rec.key, "{e}");
        }
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let _lock = take_lock(&cfg.paths.runtime_dir)?;
    let journal = Journal::open(&cfg.paths.state_dir)?;
    let control = crate::control::bind(&cfg.paths.runtime_dir)?;
    let _control_task = AbortOnDrop(tokio::spawn(crate::control::serve(
        control,
        journal.clone(),
        platform::current_uid(),
        crate::session::now(),
    )));
    let ctx = Arc::new(Ctx {
        uid: platform::current_uid(),
        journal,
        cfg,
    });
    info!(
        state_dir = %ctx.cfg.paths.state_dir.display(),
        dry_run = ctx.cfg.dry_run,
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
    for rec in records.into_iter().filter(|r| !r.state.is_final()) {
        info!(session = %rec.key, state = rec.state.as_str(), "resuming session from the journal");
        tracked.insert(rec.key.clone());
        session_pids.insert(rec.process.pid);
        sessions.spawn(session_task(ctx.clone(), rec));
    }

    let programs = discovery::programs_to_watch(
        &ctx.cfg.telepresence_programs,
        std::env::var("PATH").ok().as_deref(),
        std::env::var("HOME").ok().as_deref(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher_handle =
        notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev
                && matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        })
        .map_err(|source| DaemonError::Watch {
            path: PathBuf::new(),
            source,
        })?;
    for p in &programs {
        use notify::Watcher;
        if let Err(source) = watcher_handle.watch(p, notify::RecursiveMode::NonRecursive) {
            return Err(DaemonError::Watch {
                path: p.clone(),
                source,
            });
        }
    }
    if programs.is_empty() {
        warn!(
            "no telepresence program found on PATH; relying on the safety-net scan every {:?}",
            ctx.cfg.scan_interval
        );
    } else {
        info!(programs = ?programs, "watching Telepresence programs");
    }

    let mut discovery = Discovery::new(&programs);
    let mut start =
        |found: Vec<Found>, sessions: &mut JoinSet<String>, tracked: &mut HashSet<String>| {
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
                    sessions.spawn(session_task(ctx.clone(), rec));
                } else {
                    // Out of scope or not parseable: do not look again.
                    tracked.insert(key);
                }
            }
        };
    start(discovery.scan_all(), &mut sessions, &mut tracked);

    let mut safety = tokio::time::interval(ctx.cfg.scan_interval);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    safety.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = rx.recv() => {
                while rx.try_recv().is_ok() {}
                start(discovery.poll(), &mut sessions, &mut tracked);
            }
            // The safety net looks at every process, so that a session missed by the
            // event path (a slow start under load, a program not watched) is still found.
            _ = safety.tick() => start(discovery.scan_all(), &mut sessions, &mut tracked),
            // A pid caught between fork and exec is looked at again shortly.
            _ = tokio::time::sleep(Duration::from_millis(50)), if discovery.has_pending() => {
                start(discovery.poll(), &mut sessions, &mut tracked);
            }
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Ok(key) = done {
                    debug!(session = %key, "session task finished");
                }
            }
        }
    }
    info!("stopping");
    let _ = std::fs::remove_file(crate::control::socket_path(&ctx.cfg.paths.runtime_dir));
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
    for r in records.iter().filter(|r| r.state.is_final()) {
        let Some(last) = r
            .history
            .last()
            .and_then(|t| t.at.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        let age = now.duration_since(last).unsigned_abs();
        if age > ctx.cfg.history
            && let Err(e) = ctx.journal.remove(&r.key)
        {
            warn!(session = %r.key, "pruning: {e}");
        }
    }
}

fn environ_map(pid: u32) -> HashMap<String, String> {
    platform::process_environ(pid)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// Builds the first record of a newly found session (state `Seen`), or `None` when it is
/// out of the configured scope.
fn new_record(ctx: &Ctx, f: &Found) -> Option<SessionRecord> {
    let info = &f.info;
    let args = info.argv.get(f.program_index + 1..).unwrap_or(&[]);
    let invocation = match telepresence::parse_legacy_args(args) {
        Ok(i) => i,
        Err(e) => {
            warn!(pid = info.id.pid, "not following Telepresence process: {e}");
            return None;
        }
    };
    let env = environ_map(info.id.pid);
    let (cluster, problem) = match cluster::resolve_binding(
        &env,
        invocation.context.as_deref(),
        invocation.namespace.as_deref(),
    ) {
        Ok(b) => (b, None),
        Err(e) => (
            ClusterBinding {
                kubeconfig: cluster::kubeconfig_paths(&env),
                context: invocation.context.clone().unwrap_or_default(),
                namespace: invocation.namespace.clone().unwrap_or_default(),
                server: String::new(),
                exec_env: Vec::new(),
            },
            Some(e.to_string()),
        ),
    };
    if problem.is_none() && !ctx.cfg.in_scope(&cluster.context, &cluster.namespace) {
        debug!(pid = info.id.pid, context = %cluster.context, namespace = %cluster.namespace, "session out of scope");
        return None;
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
        original: None,
        proxies: Vec::new(),
        state: State::Seen,
        history: Vec::new(),
        actions: Vec::new(),
    };
    rec.transition(
        State::Seen,
        format!("Telepresence process {} found", info.id.pid),
    );
    if let Some(p) = problem {
        // Not final: the kubeconfig may appear or be fixed while the session runs.
        rec.transition(
            State::Seen,
            format!("cannot tell which cluster the session uses yet: {p}; will look again"),
        );
    }
    info!(session = %rec.key, target = %rec.target(), context = %rec.cluster.context, namespace = %rec.cluster.namespace, "new Telepresence session");
    Some(rec)
}

fn log_path(rec: &SessionRecord) -> Option<PathBuf> {
    match rec.invocation.logfile.as_deref() {
        Some("-") => None,
        Some(p) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => rec.cwd.as_ref().map(|c| c.join(p)),
        None => rec.cwd.as_ref().map(|c| c.join("telepresence.log")),
    }
}

fn read_log(rec: &SessionRecord, deployment: Option<&str>) -> telepresence::LogFacts {
    let text = log_path(rec)
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    telepresence::read_log(&text, deployment)
}

/// Records the original workload of a swap, before Telepresence scales it down if the agent
/// is in time, else from the fallbacks in order: the log, `last-applied-configuration`.
async fn record_original(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    client: &kube::Client,
) -> Result<(), ClusterError> {
    let Mode::Swap { deployment, .. } = &rec.invocation.mode else {
        rec.transition(State::Recorded, "no workload to record in this mode");
        ctx.save(rec);
        return Ok(());
    };
    let deployment = deployment.clone();
    let found = cluster::get_workload(client, &rec.cluster.namespace, &deployment).await?;
    let original = match found {
        None => Original {
            name: deployment.clone(),
            uid: None,
            replicas: None,
            source: ReplicaSource::Uncertain,
        },
        Some((w, _)) if w.replicas > 0 => Original {
            name: deployment.clone(),
            uid: Some(w.uid),
            replicas: Some(w.replicas),
            source: ReplicaSource::Observed,
        },
        Some((w, last_applied)) => {
            let log = read_log(rec, Some(&deployment));
            let (replicas, source) = match (log.original_replicas, last_applied) {
                (Some(r), _) if log.original_uid.as_ref().is_none_or(|u| *u == w.uid) => {
                    (Some(r), ReplicaSource::Log)
                }
                (_, Some(r)) => (Some(r), ReplicaSource::LastApplied),
                _ => (None, ReplicaSource::Uncertain),
            };
            Original {
                name: deployment.clone(),
                uid: Some(w.uid),
                replicas,
                source,
            }
        }
    };
    let why = match (original.replicas, original.source) {
        (Some(r), ReplicaSource::Observed) => {
            format!("deployment/{deployment} has {r} replicas (observed)")
        }
        (Some(r), ReplicaSource::Log) => format!(
            "deployment/{deployment} had {r} replicas (from telepresence.log; the agent was late)"
        ),
        (Some(r), ReplicaSource::LastApplied) => format!(
            "deployment/{deployment} had {r} replicas (from last-applied-configuration; the agent was late)"
        ),
        _ => format!("the original replica count of deployment/{deployment} is unknown"),
    };
    rec.original = Some(original);
    rec.transition(State::Recorded, why);
    ctx.save(rec);
    Ok(())
}

/// Looks for Telepresence's session id: its `tel-*` dir (in the session's `TMPDIR`), made
/// after the process started, or the id in its log.
fn find_session_id(
    ctx: &Ctx,
    rec: &SessionRecord,
    tmp_root: &Path,
    claimed: &HashSet<String>,
) -> Option<String> {
    let started = platform::process_start_time(rec.process);
    let mut candidates: Vec<(std::time::SystemTime, String)> =
        helpers::find_session_dirs(tmp_root, ctx.uid)
            .into_iter()
            .filter(|(_, id)| !claimed.contains(id))
            .filter_map(|(dir, id)| {
                let t = std::fs::symlink_metadata(&dir)
                    .and_then(|m| m.modified())
                    .ok()?;
                let after = started.is_none_or(|s| t + Duration::from_secs(1) >= s);
                after.then_some((t, id))
            })
            .collect();
    candidates.sort();
    if candidates.len() == 1 {
        return candidates.pop().map(|(_, id)| id);
    }
    let deployment = match &rec.invocation.mode {
        Mode::Swap { deployment, .. } => Some(deployment.as_str()),
        _ => None,
    };
    let from_log = read_log(rec, deployment).session_id;
    match from_log {
        Some(id) if candidates.is_empty() || candidates.iter().any(|(_, c)| *c == id) => Some(id),
        _ => candidates.first().map(|(_, id)| id.clone()),
    }
}

fn claimed_ids(ctx: &Ctx, own: &str) -> HashSet<String> {
    ctx.journal
        .load_all()
        .map(|(rs, _)| {
            rs.into_iter()
                .filter(|r| r.key != own)
                .filter_map(|r| r.telepresence_id)
                .collect()
        })
        .unwrap_or_default()
}

/// A stream of the objects carrying the session's label, as (kind, name, uid, owned).
fn proxy_events(
    client: &kube::Client,
    namespace: &str,
    id: &str,
) -> futures::stream::BoxStream<'static, (ProxyKind, String, String, bool)> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Pod, Service};
    let cfg = watcher::Config::default().labels(&format!("telepresence={id}"));
    fn meta_of(
        m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> (String, String, bool) {
        (
            m.name.clone().unwrap_or_default(),
            m.uid.clone().unwrap_or_default(),
            m.owner_references.as_ref().is_some_and(|o| !o.is_empty()),
        )
    }
    let deps = watcher(
        kube::Api::<Deployment>::namespaced(client.clone(), namespace),
        cfg.clone(),
    )
    .filter_map(|e| async move {
        match e {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let (n, u, own) = meta_of(&o.metadata);
                Some((ProxyKind::Deployment, n, u, own))
            }
            _ => None,
        }
    });
    let pods = watcher(
        kube::Api::<Pod>::namespaced(client.clone(), namespace),
        cfg.clone(),
    )
    .filter_map(|e| async move {
        match e {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let (n, u, own) = meta_of(&o.metadata);
                Some((ProxyKind::Pod, n, u, own))
            }
            _ => None,
        }
    });
    let svcs = watcher(
        kube::Api::<Service>::namespaced(client.clone(), namespace),
        cfg,
    )
    .filter_map(|e| async move {
        match e {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let (n, u, own) = meta_of(&o.metadata);
                Some((ProxyKind::Service, n, u, own))
            }
            _ => None,
        }
    });
    futures::stream::select_all([deps.boxed(), pods.boxed(), svcs.boxed()]).boxed()
}

/// Follows one session from discovery (or resumption) to a final state.
async fn session_task(ctx: Arc<Ctx>, mut rec: SessionRecord) -> String {
    let key = rec.key.clone();
    if rec.state.is_final() {
        return key;
    }
    let exit = platform::wait_for_exit(rec.process);
    tokio::pin!(exit);
    let alive = platform::is_alive(rec.process);
    if alive {
        follow_live(&ctx, &mut rec, &mut exit).await;
    }
    if rec.state.is_final() {
        return key;
    }
    info!(session = %key, "Telepresence process exited");
    if rec.state != State::Orphaned && rec.state != State::CleaningUp {
        rec.transition(State::Orphaned, "the Telepresence process exited");
        ctx.save(&rec);
    }
    tokio::time::sleep(ctx.cfg.grace_period).await;
    repair(&ctx, &mut rec).await;
    key
}

/// While the process lives: record the original, find the session id, record proxies,
/// and handle the death of the session's shell.
async fn follow_live<F: std::future::Future<Output = Result<(), platform::PlatformError>>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    exit: &mut std::pin::Pin<&mut F>,
) {
    let env = environ_map(rec.process.pid);
    let tmp_root = env
        .get("TMPDIR")
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.cfg.paths.tmp_dir.clone());
    if rec.cluster.server.is_empty() {
        // The kubeconfig was missing or broken when the session was found: look again
        // until it can be read (or the session ends).
        loop {
            let inv = &rec.invocation;
            match cluster::resolve_binding(&env, inv.context.as_deref(), inv.namespace.as_deref()) {
                Ok(b) => {
                    if !ctx.cfg.in_scope(&b.context, &b.namespace) {
                        info!(session = %rec.key, "session out of the configured scope; forgetting it");
                        let _ = ctx.journal.remove(&rec.key);
                        rec.transition(State::Ended, "out of the configured scope");
                        return;
                    }
                    let why = format!("cluster {} (context {}) found", b.server, b.context);
                    rec.cluster = b;
                    rec.transition(State::Seen, why);
                    ctx.save(rec);
                    break;
                }
                Err(e) => {
                    debug!(session = %rec.key, "still no cluster: {e}");
                    tokio::select! {
                        _ = exit.as_mut() => {
                            rec.transition(
                                State::NeedsAttention,
                                format!("the session ended before its cluster could be known: {e}"),
                            );
                            ctx.save(rec);
                            return;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
    let mut backoff = Duration::from_millis(200);
    let client = loop {
        match cluster::client_for(&rec.cluster).await {
            Ok(c) => break c,
            Err(e) if !e.is_transient() => {
                rec.transition(
                    State::NeedsAttention,
                    format!("cannot talk to the session's cluster: {e}"),
                );
                ctx.save(rec);
                return;
            }
            Err(e) => {
                warn!(session = %rec.key, "{e}; retrying");
                tokio::select! {
                    _ = exit.as_mut() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    if rec.state == State::Seen {
        loop {
            match record_original(ctx, rec, &client).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(session = %rec.key, "recording the original: {e}");
                    if !e.is_transient() {
                        rec.transition(
                            State::NeedsAttention,
                            format!("cannot read the session's workload: {e}"),
                        );
                        ctx.save(rec);
                        return;
                    }
                    tokio::select! {
                        _ = exit.as_mut() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
    // The session id: Telepresence writes it within its first second.
    while rec.telepresence_id.is_none() {
        let claimed = claimed_ids(ctx, &rec.key);
        if let Some(id) = find_session_id(ctx, rec, &tmp_root, &claimed) {
            rec.telepresence_id = Some(id.clone());
            rec.transition(rec.state, format!("Telepresence session id {id}"));
            ctx.save(rec);
            break;
        }
        tokio::select! {
            _ = exit.as_mut() => {
                // One last look: the dir may still be there after a crash.
                if let Some(id) = find_session_id(ctx, rec, &tmp_root, &claimed_ids(ctx, &rec.key)) {
                    rec.telepresence_id = Some(id);
                    ctx.save(rec);
                }
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let Some(id) = rec.telepresence_id.clone() else {
        return;
    };
    let mut events = proxy_events(&client, &rec.cluster.namespace, &id);
    let parent = rec.parent;
    let parent_exit = async move {
        match parent {
            Some(p) if platform::is_alive(p) => platform::wait_for_exit(p).await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(parent_exit);
    let mut parent_gone = false;
    loop {
        tokio::select! {
            _ = exit.as_mut() => return,
            _ = &mut parent_exit, if !parent_gone => {
                parent_gone = true;
                if ctx.cfg.on_shell_death == OnShellDeath::Terminate && platform::is_alive(rec.process) {
                    let sent = platform::signal(rec.process, Signal::Term);
                    rec.act("SIGTERM to Telepresence (its shell died)", match sent {
                        Ok(true) => "done".to_string(),
                        Ok(false) => "skipped: already gone".to_string(),
                        Err(e) => format!("failed: {e}"),
                    });
                    rec.transition(rec.state, "the session's shell died");
                    ctx.save(rec);
                }
            }
            ev = events.next() => {
                let Some((kind, name, uid, owned)) = ev else { return };
                if owned {
                    continue;
                }
                if rec.add_proxy(ProxyObject { kind, name: name.clone(), uid: uid.clone() }) {
                    rec.transition(State::Active, format!("proxy {}/{name} (uid {uid})", kind.resource()));
                    ctx.save(rec);
                }
            }
        }
    }
}

/// After the process died: compare the cluster with the record and repair, retrying while
/// the cluster cannot be reached.
async fn repair(ctx: &Ctx, rec: &mut SessionRecord) {
    let mut backoff = Duration::from_millis(500);
    let mut last_wait = String::new();
    loop {
        match attempt(ctx, rec).await {
            Ok(()) => return,
            Err(e) if e.is_transient() => {
                let why = format!("cluster unreachable, will retry: {e}");
                if why != last_wait {
                    warn!(session = %rec.key, "{why}");
                    rec.transition(State::Orphaned, why.clone());
                    ctx.save(rec);
                    last_wait = why;
                }
                let jitter = Duration::from_millis(u64::from(rec.process.pid % 97) * 3);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                let why = match e.status_code() {
                    Some(403) => format!("the cluster refused (RBAC): {e}"),
                    _ => e.to_string(),
                };
                rec.transition(State::NeedsAttention, why);
                ctx.save(rec);
                return;
            }
        }
    }
}

async fn attempt(ctx: &Ctx, rec: &mut SessionRecord) -> Result<(), ClusterError> {
    let client = cluster::client_for(&rec.cluster).await?;
    let original = match &rec.invocation.mode {
        Mode::Swap { deployment, .. } => Some(deployment.clone()),
        _ => None,
    };
    let recorded: Vec<(ProxyKind, String)> = rec
        .proxies
        .iter()
        .map(|p| (p.kind, p.name.clone()))
        .collect();
    let observed = cluster::observe(
        &client,
        &rec.cluster.namespace,
        original.as_deref(),
        rec.telepresence_id.as_deref(),
        &recorded,
    )
    .await?;
    if let Some(other) = live_twin(ctx, rec) {
        rec.transition(
            State::NeedsAttention,
            format!(
                "session {} (pid {}) is alive and uses the same Telepresence session or workload; not repairing while it runs",
                other.key, other.process.pid
            ),
        );
        ctx.save(rec);
        return Ok(());
    }
    let plan = plan::plan(rec, &observed);
    if plan.is_empty() {
        stop_helpers(ctx, rec);
        rec.transition(
            State::Ended,
            "Telepresence's own cleanup left nothing to repair",
        );
        ctx.save(rec);
        info!(session = %rec.key, "session ended cleanly");
        return Ok(());
    }
    if ctx.cfg.dry_run {
        for a in &plan.actions {
            rec.act(a.to_string(), "dry-run: not done");
        }
        let mut why = vec!["dry run: repairs planned but not done".to_string()];
        why.extend(plan.attention.iter().cloned());
        rec.transition(State::NeedsAttention, why.join("; "));
        ctx.save(rec);
        return Ok(());
    }
    // Write-ahead: the plan is durable before any of it is carried out.
    for a in &plan.actions {
        rec.act(a.to_string(), "planned");
    }
    rec.transition(
        State::CleaningUp,
        format!("{} repair action(s) planned", plan.actions.len()),
    );
    ctx.save(rec);
    let mut attention = plan.attention.clone();
    for a in &plan.actions {
        match cluster::execute(&client, &rec.cluster.namespace, a).await {
            Ok(()) => {
                info!(session = %rec.key, "{a}: done");
                rec.act(a.to_string(), "done");
            }
            Err(e) if e.is_transient() => {
                rec.act(a.to_string(), format!("failed, will retry: {e}"));
                ctx.save(rec);
                return Err(e);
            }
            Err(e) => {
                let why = match (a, e.status_code()) {
                    (Action::Restore { name, .. }, Some(409 | 422)) => format!(
                        "deployment/{name} changed while being restored (uid or replicas no longer as recorded); left as is"
                    ),
                    (Action::Delete { kind, name, .. }, Some(409)) => format!(
                        "{}/{name} was replaced by another object; not deleted",
                        kind.resource()
                    ),
                    _ => e.to_string(),
                };
                rec.act(a.to_string(), format!("refused: {why}"));
                attention.push(why);
            }
        }
        ctx.save(rec);
    }
    stop_helpers(ctx, rec);
    if attention.is_empty() {
        rec.transition(State::Cleaned, "repaired what the session left");
        info!(session = %rec.key, "session repaired");
    } else {
        rec.transition(State::NeedsAttention, attention.join("; "));
        warn!(session = %rec.key, "needs attention: {}", attention.join("; "));
    }
    ctx.save(rec);
    Ok(())
}

/// Another journaled session whose process is alive and that has the same Telepresence
/// session id, or swaps the same workload of the same cluster: repairing now would undo
/// that live session's changes.
fn live_twin(ctx: &Ctx, rec: &SessionRecord) -> Option<SessionRecord> {
    let swapped = |r: &SessionRecord| match &r.invocation.mode {
        Mode::Swap { deployment, .. } => Some((
            r.cluster.server.clone(),
            r.cluster.namespace.clone(),
            deployment.clone(),
        )),
        _ => None,
    };
    let mine = swapped(rec);
    let (others, _) = ctx.journal.load_all().ok()?;
    others.into_iter().find(|o| {
        o.key != rec.key
            && platform::is_alive(o.process)
            && ((o.telepresence_id.is_some() && o.telepresence_id == rec.telepresence_id)
                || (mine.is_some() && swapped(o) == mine))
    })
}

/// Stops the session's local helpers and removes its temp dir.
fn stop_helpers(ctx: &Ctx, rec: &mut SessionRecord) {
    let Some(id) = rec.telepresence_id.clone() else {
        return;
    };
    let pod = rec
        .proxies
        .iter()
        .find(|p| p.kind == ProxyKind::Pod)
        .map(|p| p.name.clone())
        .or_else(|| match &rec.invocation.mode {
            Mode::Swap { deployment, .. } => Some(telepresence::swap_proxy_name(deployment, &id)),
            Mode::NewDeployment { name: Some(n) } => Some(n.clone()),
            _ => None,
        });
    let env = environ_map(rec.process.pid);
    let tmp_root = env
        .get("TMPDIR")
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.cfg.paths.tmp_dir.clone());
    let dir = helpers::session_dir(&tmp_root, ctx.uid, &id);
    let found = helpers::find(
        ctx.uid,
        rec.process.start_ticks,
        pod.as_deref(),
        Some(&id),
        dir.as_deref(),
    );
    for h in found {
        if h.info.id == rec.process {
            continue;
        }
        let what = format!(
            "stop local helper {} `{}` ({})",
            h.info.id.pid,
            h.info.argv.join(" "),
            h.because
        );
        let outcome = if ctx.cfg.dry_run {
            "dry-run: not done".to_string()
        } else {
            match helpers::stop(&h) {
                Ok(true) => "done".to_string(),
                Ok(false) => "skipped: already gone".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        };
        rec.act(what, outcome);
    }
    if let Some(dir) = dir
        && !ctx.cfg.dry_run
        && !platform::is_alive(rec.process)
    {
        let outcome = match std::fs::remove_dir_all(&dir) {
            Ok(()) => "done".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        rec.act(format!("remove temp dir {}", dir.display()), outcome);
    }
}

/// Why `telepolice-agent cleanup` could not run.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// No session matches.
    #[error("no session {0:?} in the journal (see `telepolice-agent history`)")]
    NotFound(String),
    /// More than one session matches.
    #[error("{0:?} matches several sessions: {1}")]
    Ambiguous(String, String),
    /// The Telepresence process still runs.
    #[error("session {key} is still running (pid {pid}); stop Telepresence first")]
    StillRunning { key: String, pid: u32 },
    /// The daemon is still working on it.
    #[error(
        "the running daemon is still handling session {0} (state {1}); wait for it, or stop the daemon"
    )]
    DaemonBusy(String, &'static str),
    /// `--replicas` for a session that has no original workload.
    #[error("session {0} did not swap a deployment: --replicas does not apply")]
    NoOriginal(String),
}

/// Repairs one session by hand: same plan, same preconditions as the daemon.
pub async fn cleanup(
    cfg: Config,
    which: &str,
    replicas: Option<i32>,
) -> Result<SessionRecord, CleanupError> {
    let journal = Journal::open(&cfg.paths.state_dir)?;
    let (records, _) = journal.load_all()?;
    let matches: Vec<SessionRecord> = records
        .into_iter()
        .filter(|r| {
            r.key == which
                || r.telepresence_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(which))
        })
        .collect();
    let mut rec = match matches.len() {
        0 => return Err(CleanupError::NotFound(which.to_string())),
        1 => matches
            .into_iter()
            .next()
            .ok_or_else(|| CleanupError::NotFound(which.to_string()))?,
        _ => {
            let keys = matches
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CleanupError::Ambiguous(which.to_string(), keys));
        }
    };
    if platform::is_alive(rec.process) {
        return Err(CleanupError::StillRunning {
            key: rec.key.clone(),
            pid: rec.process.pid,
        });
    }
    if !rec.state.is_final() && is_running(&cfg.paths.runtime_dir) {
        return Err(CleanupError::DaemonBusy(
            rec.key.clone(),
            rec.state.as_str(),
        ));
    }
    if let Some(n) = replicas {
        match rec.original.as_mut() {
            Some(o) => {
                o.replicas = Some(n);
                o.source = ReplicaSource::Manual;
            }
            None => return Err(CleanupError::NoOriginal(rec.key.clone())),
        }
    }
    let ctx = Ctx {
        uid: platform::current_uid(),
        journal,
        cfg,
    };
    rec.transition(rec.state, "manual cleanup requested");
    ctx.save(&rec);
    if let Err(e) = attempt(&ctx, &mut rec).await {
        rec.transition(State::NeedsAttention, format!("manual cleanup failed: {e}"));
        ctx.save(&rec);
    }
    Ok(rec)
}

/// For `status` when the process may be gone: is the recorded process alive?
pub fn process_alive(p: ProcessId) -> bool {
    platform::is_alive(p)
}
