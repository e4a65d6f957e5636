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
//!
//! - `laptop`: what the agent reads on the laptop (the cache, the connector processes);
//! - `live`: following a live connector (its daemon, cluster, session, manager namespace
//!   and intercepts);
//! - `end`: ending a dead connector's session (the verdict, `Depart`, the cache file);
//! - `leave`: an intercept whose command's CLI died (`telepresence leave`).

mod end;
mod laptop;
mod leave;
mod live;

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

pub(in crate::daemon) use end::hand_repair;
use end::*;
use laptop::*;
use leave::*;
use live::*;

/// How often a live connector's files are read until its session is recorded (a connector
/// killed before that leaves a session the agent cannot prove was its own), and after.
const READ_UNTIL_RECORDED: Duration = Duration::from_millis(100);
const READ_EVERY: Duration = Duration::from_secs(1);
/// The fast reads last this long at most (a connector that never connects, or a 2.x that
/// keeps no session cache, is then read every second).
const FAST_READS_FOR: Duration = Duration::from_secs(30);

/// The action line of a `Depart` (the journal's record that it was done).
const DEPART: &str = "depart session";

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
    // Resumed from the journal: the heartbeat is kept until the session is ended.
    live::start_heartbeat(ctx, rec).await;
    // Known to the second from the journal when the agent restarted meanwhile.
    let died_at = died_at
        .or_else(|| orphaned_at(rec))
        .unwrap_or_else(SystemTime::now);
    tokio::time::sleep(ctx.cfg().telepresence2_grace).await;
    // Before the session's end is journaled, so that a final record changes no more.
    remove_stale_socket(ctx, rec);
    end_session(ctx, rec, died_at).await;
}

/// The connector's socket, left by a killed connector: removed once it refuses connections
/// and no connector of the user runs, whatever becomes of the session (the user's own
/// file; `telepresence connect` would otherwise have to clear it).
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

/// How one pass at ending a dead connector's session went.
enum Pass {
    /// A final state is journaled.
    Done,
    /// Not now: the cluster, the traffic-manager or the journal cannot be reached (why).
    Wait(String),
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
