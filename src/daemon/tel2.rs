//! A Telepresence 2 session: its connector (`connector-foreground`) followed from discovery
//! to its death, and, when it died without departing, its traffic-manager session ended
//! with `Depart` the way the connector itself would have, through a port-forward (no root
//! daemon, no sudo).
//!
//! While the connector lives, the agent reads (never writes) what it keeps in the user's
//! Telepresence cache: `daemons/<id>.json` (its context and namespace) and the session cache
//! (`sessions/<id>.json` from 2.16, `sessions.json` before), which names the session the
//! traffic-manager holds. When it dies, after `telepresence2_grace_secs`, the decision is
//! [`telepresence2::verdict::decide`]: only the recorded session, still named by the cache,
//! with no connector of the same daemon running, is departed; then its cache file goes.
//! Every step is journaled before it is taken.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::found::record_of;
use super::repair::{FIRST_BACKOFF, MAX_BACKOFF};
use super::retry::Retry;
use super::{Ctx, environ_map, exited, pass_over_out_of_scope};
use crate::effects::manager::{Manager, ManagerError};
use crate::effects::{cluster, local2};
use crate::failpoint;
use crate::platform;
use crate::session::{ClusterBinding, SessionRecord, State, Tel2};
use crate::signals::discovery::Found;
use crate::telepresence::CONNECTOR_COMMAND;
use crate::telepresence2::intercept::bound_intercept;
use crate::telepresence2::verdict::{self, Leftover, Verdict};
use crate::telepresence2::{self as tp2, DAEMON_INFO_STALE_AFTER, Scope};

/// How often a live connector's files are read until its session is recorded (a connector
/// killed before that leaves a session the agent cannot prove was its own), and after.
const READ_UNTIL_RECORDED: Duration = Duration::from_millis(100);
const READ_EVERY: Duration = Duration::from_secs(1);
/// The fast reads last this long at most (a connector that never connects, or a 2.x that
/// keeps no session cache, is then read every second).
const FAST_READS_FOR: Duration = Duration::from_secs(30);

/// The action line of a `Depart` (the journal's record that it was done).
const DEPART: &str = "depart session";

/// The `--name` a connector was started with.
fn name_flag(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--name" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--name=") {
            return Some(v.to_string());
        }
    }
    None
}

/// The connector's Telepresence cache dir, from its environment.
fn cache_dir_of(env: &HashMap<String, String>, cwd: Option<&Path>) -> Option<PathBuf> {
    let home = env.get("HOME").map(PathBuf::from);
    let dir = tp2::cache_dir(
        env.get("XDG_CACHE_HOME").map(String::as_str),
        home.as_deref(),
        cfg!(target_os = "macos"),
    )?;
    Some(match cwd {
        Some(c) if dir.is_relative() => c.join(dir),
        _ => dir,
    })
}

/// The first record of a 2.x process just found (state `Seen`): a connector, or an
/// `intercept NAME -- CMD`. `None` (said once) for an intercept whose name cannot be told.
pub(super) fn new_record(ctx: &Ctx, f: &Found) -> Option<SessionRecord> {
    let info = &f.info;
    let args = info.argv.get(f.program_index + 1..).unwrap_or(&[]);
    let intercept = if args.first().map(String::as_str) == Some(CONNECTOR_COMMAND) {
        None
    } else {
        match bound_intercept(args) {
            Ok(Some(name)) => Some(name),
            Ok(None) => return None,
            Err(e) => {
                let why = format!("Telepresence 2 intercept bound to a command: {e}");
                if ctx.unfollowed.note(info.id, &info.argv, &why, false) {
                    warn!(
                        pid = info.id.pid,
                        "not following Telepresence process: {why}"
                    );
                }
                return None;
            }
        }
    };
    let (env, env_problem) = environ_map(info.id.pid);
    let name = if intercept.is_some() {
        None
    } else {
        name_flag(args)
    };
    let cache_dir = cache_dir_of(&env, info.cwd.as_deref());
    let cluster = ClusterBinding {
        kubeconfig: cluster::kubeconfig_paths(&env, info.cwd.as_deref()),
        context: String::new(),
        namespace: String::new(),
        server: String::new(),
        exec_env: Vec::new(),
    };
    let mut rec = record_of(info, cluster);
    rec.tel2 = Some(Tel2 {
        name,
        cache_dir: cache_dir.clone().unwrap_or_default(),
        manager_namespace: ctx.cfg().telepresence2_manager_namespace.clone(),
        intercept: intercept.clone(),
        program: f.program.clone(),
        ..Tel2::default()
    });
    let what = match &intercept {
        Some(n) => format!(
            "Telepresence 2 intercept {n} bound to a command (pid {})",
            info.id.pid
        ),
        None => format!("Telepresence 2 connector found (pid {})", info.id.pid),
    };
    let mut why = what;
    match (cache_dir, env_problem) {
        (Some(dir), None) => why.push_str(&format!("; its cache is {}", dir.display())),
        (Some(dir), Some(p)) => why.push_str(&format!("; its cache is {} ({p})", dir.display())),
        (None, p) => why.push_str(&format!(
            "; its cache dir is unknown (no HOME{})",
            p.map(|p| format!(": {p}")).unwrap_or_default()
        )),
    }
    rec.transition(State::Seen, why);
    info!(session = %rec.key, pid = info.id.pid, "new {}", rec.target());
    Some(rec)
}

/// What the record knows of the connector (always there for a 2.x record).
fn tel2(rec: &SessionRecord) -> Tel2 {
    rec.tel2.clone().unwrap_or_default()
}

fn tel2_mut(rec: &mut SessionRecord) -> &mut Tel2 {
    rec.tel2.get_or_insert_with(Tel2::default)
}

/// A `daemons/*.json` file: what it says, and when it was last touched.
#[derive(Debug)]
struct DaemonFile {
    info: tp2::DaemonInfo,
    touched: SystemTime,
}

/// The daemon files in `cache_dir` of connectors on this machine (not in a container).
fn daemon_files(cache_dir: &Path) -> Vec<DaemonFile> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join("daemons")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let touched = e.metadata().ok()?.modified().ok()?;
            let info = tp2::parse_daemon_info(&std::fs::read(e.path()).ok()?).ok()?;
            (!info.in_docker).then_some(DaemonFile { info, touched })
        })
        .collect()
}

/// The daemon file of this connector: the one fresh (touched within the CLI's staleness
/// window) with the connector's `--name`, or its only fresh one. `None` while there is none,
/// or more than one to choose from.
fn own_daemon_file(t: &Tel2) -> Option<DaemonFile> {
    let now = SystemTime::now();
    let mut fresh: Vec<DaemonFile> = daemon_files(&t.cache_dir)
        .into_iter()
        .filter(|d| {
            now.duration_since(d.touched)
                .is_ok_and(|age| age < DAEMON_INFO_STALE_AFTER)
        })
        .filter(|d| match &t.name {
            Some(n) => d.info.daemon_id() == Some(tp2::safe_name(n)),
            None => true,
        })
        .collect();
    if fresh.len() == 1 { fresh.pop() } else { None }
}

/// The session cache of daemon `id`: `sessions/<id>.json` (2.16+), else `sessions.json`
/// (2.6.7-2.15). The path and what it says; `None` when neither file is there.
fn session_cache(
    cache_dir: &Path,
    id: Option<&str>,
) -> Option<(PathBuf, Result<tp2::SavedSession, String>)> {
    let per_daemon = id.map(|id| cache_dir.join("sessions").join(format!("{id}.json")));
    let candidates = per_daemon
        .into_iter()
        .chain([cache_dir.join("sessions.json")]);
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let saved = tp2::parse_saved_session(&bytes).map_err(|e| e.to_string());
                return Some((path, saved));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Some((path, Err(e.to_string()))),
        }
    }
    None
}

/// Follows one connector from discovery (or the journal) to a final state.
pub(super) async fn session_task(ctx: &Ctx, rec: &mut SessionRecord) {
    let exit = exited(rec.process);
    tokio::pin!(exit);
    let mut died_at = None;
    let mut env = None;
    if platform::is_alive(rec.process) {
        let Some(e) = follow_live(ctx, rec, exit.as_mut()).await else {
            return;
        };
        env = Some(e);
        died_at = Some(SystemTime::now());
    }
    if rec.state.is_final() {
        return;
    }
    let intercept = tel2(rec).intercept;
    if !matches!(rec.state, State::Orphaned | State::CleaningUp) {
        let what = if intercept.is_some() {
            "the intercept's CLI exited"
        } else {
            "the connector exited"
        };
        info!(session = %rec.key, "Telepresence 2: {what}");
        rec.transition(State::Orphaned, what);
        ctx.save(rec);
        failpoint::hit("tel2.orphaned");
    }
    if intercept.is_some() {
        // The CLI leaves its intercept itself when its command ends: time for that.
        tokio::time::sleep(ctx.cfg().grace_period).await;
        leave_intercept(ctx, rec, env.as_ref()).await;
        return;
    }
    // Known to the second from the journal when the agent restarted meanwhile.
    let died_at = died_at
        .or_else(|| orphaned_at(rec))
        .unwrap_or_else(SystemTime::now);
    tokio::time::sleep(ctx.cfg().telepresence2_grace).await;
    end_session(ctx, rec, died_at).await;
    remove_stale_socket(ctx, rec);
}

/// The connector's socket, left by a killed connector: removed once it refuses connections
/// and no connector of the user runs (the user's own file; `telepresence connect` would
/// otherwise have to clear it).
fn remove_stale_socket(ctx: &Ctx, rec: &mut SessionRecord) {
    let paths = local2::Paths::telepresence();
    match local2::remove_stale_connector_socket(&paths, rec.uid) {
        Ok(Some(path)) => {
            rec.act(
                format!("remove stale connector socket {}", path.display()),
                "done",
            );
            ctx.save(rec);
        }
        Ok(None) => {}
        Err(e) => warn!(
            session = %rec.key,
            "the stale connector socket {}: {e}",
            paths.connector_socket.display()
        ),
    }
}

/// Reads a live 2.x process's files until it exits; its environment, or `None` when it is
/// not the agent's business (out of scope, forgotten).
async fn follow_live(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    mut exit: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<HashMap<String, String>> {
    let env = environ_map(rec.process.pid).0;
    let followed = std::time::Instant::now();
    // When the process started (to the second: the boot time it is counted from is), for
    // telling a `sessions.json` it wrote from an older one.
    let since = platform::process_start_time(rec.process)
        .map_or_else(SystemTime::now, |t| t - Duration::from_secs(1));
    loop {
        if !read_live(ctx, rec, &env, since).await {
            return None;
        }
        let pause = if tel2(rec).session_id.is_none() && followed.elapsed() < FAST_READS_FOR {
            READ_UNTIL_RECORDED
        } else {
            READ_EVERY
        };
        tokio::select! {
            () = exit.as_mut() => return Some(env),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// When the journal says the connector was seen dead (its second, plus one: the time is
/// kept to the second).
fn orphaned_at(rec: &SessionRecord) -> Option<SystemTime> {
    let t = rec
        .history
        .iter()
        .rev()
        .find(|t| t.state == State::Orphaned)?;
    let ts: jiff::Timestamp = t.at.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs + 1))
}

/// One read of a live connector's files: learns its daemon id, cluster and session as they
/// appear or change. False when the session is not the agent's business (out of scope),
/// and forgotten. `since`: (about) when the process started.
async fn read_live(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: &HashMap<String, String>,
    since: SystemTime,
) -> bool {
    let t = tel2(rec);
    if t.daemon_id.is_none() && rec.cluster.server.is_empty() {
        if !bind(ctx, rec, env, since) {
            return true;
        }
        if !ctx
            .cfg()
            .in_scope(&rec.cluster.context, &rec.cluster.namespace)
        {
            pass_over_out_of_scope(ctx, rec.process, &rec.argv, &rec.cluster);
            let _ = ctx.journal.remove(&rec.key);
            return false;
        }
    }
    let t = tel2(rec);
    let Some((path, saved)) = session_cache(&t.cache_dir, t.daemon_id.as_deref()) else {
        return true;
    };
    let saved = match saved {
        Ok(s) => s,
        Err(e) => {
            warn!(session = %rec.key, "{}: {e}", path.display());
            return true;
        }
    };
    if !same_cluster(&saved.scope, &rec.cluster) {
        return true;
    }
    let id = saved.session.session_id.clone();
    if t.session_id.as_deref() == Some(id.as_str()) {
        return true;
    }
    let first = t.session_id.is_none();
    let t = tel2_mut(rec);
    t.session_id = Some(id.clone());
    t.cluster_id = Some(saved.session.cluster_id.clone());
    t.session_file = Some(path.clone());
    let why = if first {
        format!(
            "session {id} in the traffic-manager (cluster id {}), cached in {}",
            saved.session.cluster_id,
            path.display()
        )
    } else {
        format!(
            "now session {id} (the connector arrived again), cached in {}",
            path.display()
        )
    };
    rec.transition(State::Recorded, why);
    ctx.save(rec);
    failpoint::hit("tel2.recorded");
    if first {
        learn_manager_namespace(ctx, rec, env).await;
    }
    learn_intercepts(ctx, rec, &id).await;
    true
}

/// Asks the user's Telepresence where its traffic-manager is: `telepresence status --output
/// json` (which never starts a daemon nor asks for sudo), run with the connector's own
/// program and environment, says `user_daemon.manager_namespace`. Without an answer the
/// configured `telepresence2_manager_namespace` stays.
async fn learn_manager_namespace(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: &HashMap<String, String>,
) {
    let Some(program) = tel2(rec).program else {
        return;
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(["status", "--output", "json"])
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(cwd) = &rec.cwd {
        cmd.current_dir(cwd);
    }
    let said = match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => out.stdout,
        Ok(Ok(out)) => {
            info!(session = %rec.key, "`telepresence status --output json` failed ({}): the manager namespace stays {}", out.status, tel2(rec).manager_namespace);
            return;
        }
        Ok(Err(e)) => {
            info!(session = %rec.key, "cannot run {}: {e}", program.display());
            return;
        }
        Err(_) => {
            info!(session = %rec.key, "`telepresence status --output json` gave no answer within 10 s");
            return;
        }
    };
    let ns = tp2::status_manager_namespace(&said);
    match ns {
        Some(ns) if ns != tel2(rec).manager_namespace => {
            let why = format!("the traffic-manager is in namespace {ns} (telepresence status)");
            tel2_mut(rec).manager_namespace = ns;
            rec.transition(rec.state, why);
            ctx.save(rec);
        }
        _ => {}
    }
}

/// Learns the connector's daemon and cluster: from its fresh `daemons/<id>.json` (2.16+),
/// else, for 2.6.7-2.15 (no daemon files), from a `sessions.json` written since the process
/// started, whose API server names the kubeconfig context. False while neither says.
fn bind(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: &HashMap<String, String>,
    since: SystemTime,
) -> bool {
    let t = tel2(rec);
    if let Some(d) = own_daemon_file(&t) {
        let Some(id) = d.info.daemon_id() else {
            return false;
        };
        match cluster::resolve_binding(
            env,
            rec.cwd.as_deref(),
            Some(&d.info.kube_context),
            Some(&d.info.namespace),
        ) {
            Ok(b) => rec.cluster = b,
            Err(e) => {
                rec.cluster.context = d.info.kube_context.clone();
                rec.cluster.namespace = d.info.namespace.clone();
                warn!(session = %rec.key, "Telepresence 2 connector {id}: {e}");
            }
        }
        tel2_mut(rec).daemon_id = Some(id.clone());
        let why = format!(
            "daemon {id}: context {} namespace {} ({})",
            rec.cluster.context,
            rec.cluster.namespace,
            if rec.cluster.server.is_empty() {
                "API server unknown"
            } else {
                &rec.cluster.server
            }
        );
        rec.transition(State::Seen, why);
        ctx.save(rec);
        return true;
    }
    let legacy = t.cache_dir.join("sessions.json");
    let written_since = std::fs::metadata(&legacy)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at >= since);
    if !written_since {
        return false;
    }
    let Some(Ok(tp2::SavedSession {
        scope: Scope::Host(host),
        ..
    })) = std::fs::read(&legacy)
        .ok()
        .map(|b| tp2::parse_saved_session(&b))
    else {
        return false;
    };
    let Some(b) = cluster::binding_for_server(env, rec.cwd.as_deref(), &host) else {
        warn!(session = %rec.key, "{}: no kubeconfig context points at {host}", legacy.display());
        return false;
    };
    rec.cluster = b;
    let why = format!(
        "Telepresence 2.6.7-2.15 (no daemon file): context {} at {host}, the API server its sessions.json names",
        rec.cluster.context
    );
    rec.transition(State::Seen, why);
    ctx.save(rec);
    true
}

/// Whether a saved session is for the connector's cluster: its context and namespace
/// (2.16+), or its API server (`sessions.json`).
fn same_cluster(scope: &Scope, b: &ClusterBinding) -> bool {
    match scope {
        Scope::Daemon { context, namespace } => *context == b.context && *namespace == b.namespace,
        Scope::Host(host) => {
            b.server.is_empty() || host.trim_end_matches('/') == b.server.trim_end_matches('/')
        }
    }
}

/// Asks the traffic-manager once which intercepts the session holds, for the record (a
/// failure is only logged: nothing depends on it while the connector lives).
async fn learn_intercepts(ctx: &Ctx, rec: &mut SessionRecord, session_id: &str) {
    let ns = tel2(rec).manager_namespace;
    let read = async {
        let client = cluster::client_for(&rec.cluster)
            .await
            .map_err(ManagerError::from)?;
        Manager::connect(&client, &ns)
            .await?
            .session_intercepts(session_id)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(Some(list))) => {
            let names: Vec<String> = list
                .iter()
                .map(|i| format!("{}/{} ({})", i.namespace, i.workload, i.name))
                .collect();
            if names != tel2(rec).intercepts {
                tel2_mut(rec).intercepts = names;
                ctx.save(rec);
            }
        }
        Ok(Ok(None)) => {
            info!(session = %rec.key, "the traffic-manager does not list session {session_id} (yet)")
        }
        Ok(Err(e)) => {
            info!(session = %rec.key, "cannot list the intercepts of session {session_id}: {e}")
        }
        Err(_) => {
            info!(session = %rec.key, "listing the intercepts of session {session_id} timed out")
        }
    }
}

/// Whether a connector for the same daemon runs now: a live connector process with the same
/// `--name` and cache dir, or the daemon file touched since the recorded one died.
fn connector_running(rec: &SessionRecord, died_at: SystemTime) -> bool {
    let t = tel2(rec);
    let touched = t.daemon_id.as_deref().and_then(|id| {
        std::fs::metadata(t.cache_dir.join("daemons").join(format!("{id}.json")))
            .and_then(|m| m.modified())
            .ok()
    });
    if touched.is_some_and(|at| at > died_at) {
        return true;
    }
    // Unknowable (no process list): counted as running, which never departs.
    live_connectors(rec).is_none_or(|pids| !pids.is_empty())
}

/// The session id the cache names now, if any.
fn cached_now(rec: &SessionRecord) -> Option<String> {
    let t = tel2(rec);
    let (_, saved) = session_cache(&t.cache_dir, t.daemon_id.as_deref())?;
    saved.ok().map(|s| s.session.session_id)
}

/// How one pass at ending a dead connector's session went.
enum Pass {
    /// A final state is journaled.
    Done,
    /// Not now: the cluster, the traffic-manager or the journal cannot be reached (why).
    Wait(String),
}

/// After the grace: passes at ending the session until one reaches a final state, retrying
/// while the cluster or the traffic-manager cannot be reached.
async fn end_session(ctx: &Ctx, rec: &mut SessionRecord, died_at: SystemTime) {
    // The 0.x repair's schedule: a dead session's end waits, and must follow within a
    // second or two of the cluster answering again.
    let mut retry = Retry::new(FIRST_BACKOFF, MAX_BACKOFF, 300, ctx.probe.subscribe());
    let mut last_problem = String::new();
    loop {
        let tried = tokio::time::Instant::now();
        match pass(ctx, rec, died_at).await {
            Pass::Done => {
                ctx.board.done(&rec.key);
                return;
            }
            Pass::Wait(problem) => {
                ctx.board.failed(&rec.key, problem.clone());
                if problem != last_problem {
                    warn!(session = %rec.key, "{problem}");
                    last_problem = problem;
                }
                retry.pause(tried, MAX_BACKOFF).await;
            }
        }
    }
}

/// `telepolice-agent repair` of a 2.x session (its connector dead, no daemon following
/// it): one pass, the same decision and the same steps as the daemon's.
pub(super) async fn hand_repair(ctx: &Ctx, rec: &mut SessionRecord) {
    rec.transition(rec.state, "repair asked by hand");
    ctx.save(rec);
    let died_at = orphaned_at(rec).unwrap_or_else(SystemTime::now);
    if let Pass::Wait(problem) = pass(ctx, rec, died_at).await {
        attention(ctx, rec, &problem);
    }
}

/// The decision on the session now, and, when it is to end it, the steps: `CleaningUp`
/// journaled durably, then [`depart`].
async fn pass(ctx: &Ctx, rec: &mut SessionRecord, died_at: SystemTime) -> Pass {
    loop {
        let t = tel2(rec);
        let cache_now = cached_now(rec);
        let leftover = Leftover {
            recorded: t.session_id.as_deref(),
            cache_now: cache_now.as_deref(),
            connector_running: connector_running(rec, died_at),
            departed: rec
                .actions
                .iter()
                .any(|a| a.action.starts_with(DEPART) && a.outcome.starts_with("done")),
            daemon_info_seen: t.daemon_id.is_some(),
        };
        let (id, departing) = match verdict::decide(leftover) {
            Verdict::Ended(why) => {
                rec.transition(State::Ended, why.to_string());
                ctx.save(rec);
                info!(session = %rec.key, "Telepresence 2 session ended: {why}");
                return Pass::Done;
            }
            Verdict::Attention(why) => {
                attention(ctx, rec, &why.to_string());
                return Pass::Done;
            }
            Verdict::Depart(id) => (id, true),
            Verdict::Finish(id) => (id, false),
        };
        let action = format!(
            "{DEPART} {id} in the traffic-manager in {}",
            t.manager_namespace
        );
        let why = format!("ending session {id}: the connector died and no connector resumed it");
        if let Some(pass) = begin(ctx, rec, action, why) {
            return pass;
        }
        failpoint::hit("tel2.cleaning");
        match depart(ctx, rec, &id, departing, died_at).await {
            Ok(Departed::Yes) => {
                rec.transition(
                    State::Cleaned,
                    format!("ended session {id}: {}", rec.repair_summary()),
                );
                ctx.save(rec);
                info!(session = %rec.key, "Telepresence 2 session {id} ended: {}", rec.repair_summary());
                return Pass::Done;
            }
            // Something changed since the decision: decide again.
            Ok(Departed::Changed) => continue,
            Ok(Departed::NotHeld(ns)) => {
                let why = format!(
                    "the traffic-manager in {ns} does not have session {id} (it expired, or was ended elsewhere): nothing to end; its cache file is left for Telepresence"
                );
                rec.transition(State::Ended, why);
                ctx.save(rec);
                return Pass::Done;
            }
            Err(e) if e.is_transient() => {
                return Pass::Wait(format!(
                    "cannot reach the traffic-manager yet ({e}); trying again"
                ));
            }
            Err(e) => {
                attention(ctx, rec, &format!("cannot end session {id}: {e}"));
                return Pass::Done;
            }
        }
    }
}

/// Before `action`: in a dry run, says what would be done (NeedsAttention) and stops;
/// otherwise `CleaningUp` (for `why`), on disk before anything is done. `None` to go on.
fn begin(ctx: &Ctx, rec: &mut SessionRecord, action: String, why: String) -> Option<Pass> {
    if ctx.cfg().dry_run {
        let said = format!("dry run: `{action}` would have been done");
        rec.act(action, "dry-run");
        attention(ctx, rec, &said);
        return Some(Pass::Done);
    }
    if rec.state == State::CleaningUp {
        return None;
    }
    rec.transition(State::CleaningUp, why);
    match ctx.save_durably(rec) {
        Ok(()) => None,
        Err(e) => Some(Pass::Wait(format!(
            "not doing `{action}` before the journal takes it: {e}"
        ))),
    }
}

/// What [`depart`] did.
enum Departed {
    /// The session is gone from the traffic-manager, and its cache file too.
    Yes,
    /// Just before `Depart`, a connector for the daemon was running again, or the cache
    /// named another session: nothing was done.
    Changed,
    /// The traffic-manager in that namespace does not have the session: nothing was done.
    NotHeld(String),
}

/// `Depart` (unless done already), then the cache file, each journaled when done. Just
/// before `Depart` the proof is taken again (no connector of the daemon runs, the cache
/// still names the session), which narrows the window in which a `telepresence connect`
/// could resume the session under the agent's hands to the call itself.
async fn depart(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    id: &str,
    departing: bool,
    died_at: SystemTime,
) -> Result<Departed, ManagerError> {
    let ns = tel2(rec).manager_namespace;
    if departing {
        let client = cluster::client_for(&rec.cluster).await?;
        let manager = Manager::connect(&client, &ns).await?;
        // Read first: a session the manager no longer has (expired, or departed before an
        // agent crash) is not departed again.
        let held = manager.session_intercepts(id).await?;
        let action = format!("{DEPART} {id} in the traffic-manager in {ns}");
        let started = rec
            .actions
            .iter()
            .any(|a| a.action == action && a.outcome == "started");
        match held {
            // Departed by this agent before it was stopped: the intent is journaled.
            None if started => rec.act(action, "done: the traffic-manager no longer had it"),
            // Expired, ended elsewhere, or this is not the session's traffic-manager: the
            // cache file is left for Telepresence (its next connect starts afresh).
            None => return Ok(Departed::NotHeld(ns)),
            Some(list) => {
                if connector_running(rec, died_at) || cached_now(rec).as_deref() != Some(id) {
                    return Ok(Departed::Changed);
                }
                // The intent, on disk before the call: a restarted agent that finds the
                // session gone knows it was this agent's doing.
                rec.act(&action, "started");
                if let Err(e) = ctx.save_durably(rec) {
                    return Err(ManagerError::Connect {
                        pod: manager.pod.clone(),
                        namespace: ns,
                        why: format!("not departing before the journal takes it: {e}"),
                    });
                }
                manager.depart(id).await?;
                failpoint::hit("tel2.departed");
                let names: Vec<String> = list
                    .iter()
                    .map(|i| format!("{}/{}", i.namespace, i.workload))
                    .collect();
                let outcome = if names.is_empty() {
                    "done".to_string()
                } else {
                    format!("done (its intercepts of {} went with it)", names.join(", "))
                };
                rec.act(action, outcome);
            }
        }
        ctx.save(rec);
        failpoint::hit("tel2.depart-saved");
    }
    remove_cache(ctx, rec, id);
    Ok(Departed::Yes)
}

/// Removes the session cache file if it still names `id` (what Telepresence does after a
/// successful `Depart`), so that the next `telepresence connect` starts afresh.
fn remove_cache(ctx: &Ctx, rec: &mut SessionRecord, id: &str) {
    let t = tel2(rec);
    let Some((path, Ok(saved))) = session_cache(&t.cache_dir, t.daemon_id.as_deref()) else {
        return;
    };
    if saved.session.session_id != id {
        return;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => rec.act(format!("remove {}", path.display()), "done"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => rec.act(format!("remove {}", path.display()), format!("failed: {e}")),
    }
    ctx.save(rec);
}

/// After an `intercept NAME -- CMD` CLI died: when its connector still runs and the
/// traffic-manager still has the intercept in the connector's session (and no other
/// `intercept NAME` CLI runs), `telepresence leave NAME`, as the CLI would have; the
/// connector is alive, so `leave` starts nothing and needs no sudo.
async fn leave_intercept(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: Option<&HashMap<String, String>>,
) {
    let name = tel2(rec).intercept.unwrap_or_default();
    let mut retry = Retry::new(FIRST_BACKOFF, MAX_BACKOFF, 300, ctx.probe.subscribe());
    loop {
        let tried = tokio::time::Instant::now();
        match leave_pass(ctx, rec, &name, env).await {
            Pass::Done => {
                ctx.board.done(&rec.key);
                return;
            }
            Pass::Wait(problem) => {
                ctx.board.failed(&rec.key, problem);
                retry.pause(tried, MAX_BACKOFF).await;
            }
        }
    }
}

/// Whether the traffic-manager lists intercept `name` in `session` (`None`: it has no such
/// session).
async fn holds(rec: &SessionRecord, session: &str, name: &str) -> Result<bool, ManagerError> {
    let client = cluster::client_for(&rec.cluster).await?;
    let list = Manager::connect(&client, &tel2(rec).manager_namespace)
        .await?
        .session_intercepts(session)
        .await?;
    Ok(list.is_some_and(|l| l.iter().any(|i| i.name == name)))
}

/// One look, and the `leave` when it is due.
async fn leave_pass(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    name: &str,
    env: Option<&HashMap<String, String>>,
) -> Pass {
    let ended = |rec: &mut SessionRecord, why: &str| {
        rec.transition(State::Ended, why.to_string());
        ctx.save(rec);
        info!(session = %rec.key, "intercept {name}: {why}");
        Pass::Done
    };
    let Some(session) = tel2(rec).session_id else {
        return ended(rec, "no connector session was seen while its command ran");
    };
    if !connector_alive(rec) {
        return ended(
            rec,
            "its connector is gone too: ending the connector's session ends the intercept",
        );
    }
    if cached_now(rec).as_deref() != Some(session.as_str()) {
        return ended(rec, "the connector holds another session now");
    }
    let unsure = |rec: &mut SessionRecord, e: ManagerError| {
        if e.is_transient() {
            Pass::Wait(format!(
                "cannot reach the traffic-manager yet ({e}); trying again"
            ))
        } else {
            attention(
                ctx,
                rec,
                &format!("cannot tell whether intercept {name} is left behind: {e}"),
            );
            Pass::Done
        }
    };
    match holds(rec, &session, name).await {
        Ok(true) => {}
        Ok(false) => return ended(rec, "the intercept is gone: its CLI left it"),
        Err(e) => return unsure(rec, e),
    }
    if other_intercept_cli(rec, name) {
        return ended(
            rec,
            "another `telepresence intercept` of the same name runs: it holds the intercept now",
        );
    }
    let command = format!("telepresence leave {name}");
    let why = format!("leaving intercept {name}: its command's CLI died while the connector runs");
    if let Some(pass) = begin(ctx, rec, command.clone(), why) {
        return pass;
    }
    let said = run_leave(rec, name, env).await;
    match holds(rec, &session, name).await {
        Ok(false) => {
            rec.act(&command, "done");
            rec.transition(State::Cleaned, format!("left intercept {name}"));
            ctx.save(rec);
            info!(session = %rec.key, "left intercept {name}: its command's CLI had died");
            Pass::Done
        }
        Ok(true) => {
            rec.act(&command, format!("failed: {said}"));
            attention(
                ctx,
                rec,
                &format!("`{command}` did not remove intercept {name} ({said}); run it yourself"),
            );
            Pass::Done
        }
        Err(e) => unsure(rec, e),
    }
}

/// Whether a connector process runs for the record's daemon (a live process: a daemon file
/// touched a moment ago may be a dead connector's last touch).
fn connector_alive(rec: &SessionRecord) -> bool {
    live_connectors(rec).is_some_and(|pids| !pids.is_empty())
}

/// The live connector processes of the record's user with its cache dir and `--name`, but
/// for the record's own process; `None` when the process list cannot be read.
fn live_connectors(rec: &SessionRecord) -> Option<Vec<u32>> {
    let t = tel2(rec);
    let all = platform::all_argv().ok()?;
    let mine = |pid: u32, argv: &[String]| {
        let Some(i) = argv
            .iter()
            .position(|a| a == CONNECTOR_COMMAND)
            .filter(|i| *i >= 1)
        else {
            return false;
        };
        pid != rec.process.pid
            && platform::process_info(pid).is_ok_and(|p| p.uid == rec.uid)
            && name_flag(&argv[i + 1..]) == t.name
            && cache_dir_of(
                &environ_map(pid).0,
                platform::process_cwd(pid).ok().as_deref(),
            )
            .as_deref()
                == Some(t.cache_dir.as_path())
    };
    Some(
        all.into_iter()
            .filter(|(pid, argv)| mine(*pid, argv))
            .map(|(pid, _)| pid)
            .collect(),
    )
}

/// Whether another live `intercept NAME -- CMD` of the user runs with the same cache dir.
fn other_intercept_cli(rec: &SessionRecord, name: &str) -> bool {
    let cache_dir = tel2(rec).cache_dir;
    platform::all_argv()
        .unwrap_or_default()
        .into_iter()
        .any(|(pid, argv)| {
            pid != rec.process.pid
                && argv.iter().position(|a| a == "intercept").is_some_and(|i| {
                    bound_intercept(&argv[i..]).ok().flatten().as_deref() == Some(name)
                })
                && platform::process_info(pid).is_ok_and(|p| p.uid == rec.uid)
                && cache_dir_of(
                    &environ_map(pid).0,
                    platform::process_cwd(pid).ok().as_deref(),
                )
                .as_deref()
                    == Some(cache_dir.as_path())
        })
}

/// Runs `<telepresence> leave NAME` with the CLI's environment (what it was when the agent
/// found it, else the record's), for at most 30 s; what it said.
async fn run_leave(
    rec: &SessionRecord,
    name: &str,
    env: Option<&HashMap<String, String>>,
) -> String {
    let t = tel2(rec);
    let program = t
        .program
        .clone()
        .unwrap_or_else(|| PathBuf::from(rec.argv.first().cloned().unwrap_or_default()));
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(["leave", name])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(cwd) = &rec.cwd {
        cmd.current_dir(cwd);
    }
    match env {
        Some(env) => {
            cmd.env_clear().envs(env);
        }
        None => {
            cmd.envs(rec.cluster.exec_env.iter().cloned());
            if let Some(cache_home) = t.cache_dir.parent() {
                cmd.env("XDG_CACHE_HOME", cache_home);
            }
            if let Ok(k) = std::env::join_paths(&rec.cluster.kubeconfig) {
                cmd.env("KUBECONFIG", k);
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let text = if text.is_empty() {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            } else {
                text
            };
            format!("{}: {}", out.status, text)
        }
        Ok(Err(e)) => format!("{} could not run: {e}", program.display()),
        Err(_) => "no answer within 30 s".to_string(),
    }
}

/// NeedsAttention, with what a person can run.
fn attention(ctx: &Ctx, rec: &mut SessionRecord, why: &str) {
    let command = match (rec.cluster.context.as_str(), rec.cluster.namespace.as_str()) {
        ("", _) | (_, "") => "`telepresence connect` then `telepresence quit`".to_string(),
        (c, n) => {
            format!("`telepresence connect --context {c} --namespace {n}` then `telepresence quit`")
        }
    };
    let text = format!(
        "{why}; to end the session yourself, run {command} (it resumes the session, then departs it)"
    );
    warn!(session = %rec.key, "{text}");
    rec.transition(State::NeedsAttention, text);
    ctx.save(rec);
}
