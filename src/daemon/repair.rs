//! After a session's process died: comparing the cluster with the record and repairing,
//! retrying while the cluster cannot be reached; and the manual `cleanup` command.

use std::time::Duration;

use tracing::{info, warn};

use super::knock;
use super::retry::Retry;
use super::{Ctx, is_running};
use crate::cluster::{self, ClusterError};
use crate::config::Config;
use crate::failpoint;
use crate::helpers;
use crate::journal::Journal;
use crate::plan::{self, Action};
use crate::platform;
use crate::session::{ProxyKind, ReplicaSource, SessionRecord, State};
use crate::telepresence::{self, Mode};

/// After the process died: compare the cluster with the record and repair, retrying while
/// the cluster cannot be reached.
///
/// Retries back off from 0.5 s to at most 1.5 s (plus jitter), and a resume or a network
/// change ([`Ctx::probe_now`]) makes the next try happen at once, no sooner than
/// [`super::retry::MIN_SPACING`] after the last one. While the server does not answer at
/// all, it is knocked at ([`knock`]) and the next try comes as soon as it takes connections
/// again. While it waits, the repair is on the board `status` shows.
pub(super) async fn repair(ctx: &Ctx, rec: &mut SessionRecord) {
    let (first, max) =
        crate::wake::test_retry_pause().map_or((FIRST_BACKOFF, MAX_BACKOFF), |p| (p, p));
    // Capped low on purpose: a dead session's repair is waiting, and the queue must drain
    // within about two seconds of the API server answering again.
    let mut retry = Retry::new(first, max, 300, ctx.probe.subscribe());
    let mut last_wait = String::new();
    let mut waiting_since = None;
    // Built once (kubeconfig read, server checked, TLS set up), reused across retries.
    let mut client = None;
    loop {
        let tried = tokio::time::Instant::now();
        let result = attempt(ctx, rec, &mut client).await;
        match result {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                let no_client = matches!(e, RepairError::Cluster(ClusterError::Client { .. }));
                let problem = match (&e, e.status_code()) {
                    (RepairError::Cluster(_), Some(code)) => {
                        format!("the API server answered {code}: {e}")
                    }
                    (RepairError::Cluster(_), None) if no_client => format!(
                        "no client for the cluster (if a credential plugin fails, log in again): {e}"
                    ),
                    (RepairError::Cluster(_), None) => format!("cluster unreachable: {e}"),
                    (RepairError::Journal(_), _) => e.to_string(),
                };
                let why = format!("{problem}; will retry");
                ctx.board.failed(&rec.key, problem);
                if why != last_wait {
                    warn!(session = %rec.key, "{why}");
                    rec.transition(State::Orphaned, why.clone());
                    ctx.save(rec);
                    last_wait = why;
                }
                // A credential plugin is a program run per try (often slow, and failing
                // until someone logs in): tried less often, unless woken.
                let cap = if no_client {
                    CLIENT_MAX_BACKOFF
                } else {
                    Duration::ZERO
                };
                let since = *waiting_since.get_or_insert(tried);
                // Unanswered (no status, a client built): knock until it answers.
                let addrs = if matches!(e, RepairError::Cluster(_))
                    && e.status_code().is_none()
                    && !no_client
                    && !crate::wake::test_no_knock()
                {
                    knock::resolve(&rec.cluster.server).await
                } else {
                    Vec::new()
                };
                retry
                    .pause_or(tried, cap, knock::until_answered(&addrs, since))
                    .await;
            }
            Err(e) => {
                rec.transition(
                    State::NeedsAttention,
                    refusal(&e, e.status_code(), &rec.key),
                );
                ctx.save(rec);
                break;
            }
        }
    }
    ctx.board.done(&rec.key);
}

/// Why a repair needs a person, and what to run once the cause is dealt with (the same
/// plan and preconditions, by hand).
fn refusal(e: &dyn std::fmt::Display, code: Option<u16>, key: &str) -> String {
    let why = match code {
        Some(403) => format!("the cluster refused (RBAC): {e}"),
        _ => e.to_string(),
    };
    format!("{why}; once that is fixed, run: telepolice-agent repair {key}")
}

/// The first pause after a failed try.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between tries (plus up to 300 ms of jitter).
const MAX_BACKOFF: Duration = Duration::from_millis(1500);
/// The longest pause between tries when no client could be built.
const CLIENT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why one repair attempt stopped.
#[derive(Debug, thiserror::Error)]
enum RepairError {
    /// The cluster refused or could not be reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The planned steps could not be journaled, so none was carried out.
    #[error("the journal cannot record the planned repair, so nothing was done yet: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl RepairError {
    fn is_transient(&self) -> bool {
        match self {
            RepairError::Cluster(e) => e.is_transient(),
            RepairError::Journal(_) => true,
        }
    }

    fn status_code(&self) -> Option<u16> {
        match self {
            RepairError::Cluster(e) => e.status_code(),
            RepairError::Journal(_) => None,
        }
    }
}

/// One repair attempt. `client` is the session's client once built; attempts that follow
/// reuse it.
async fn attempt(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    client: &mut Option<kube::Client>,
) -> Result<(), RepairError> {
    // One reading of the configuration for the whole attempt: a reload in the middle must
    // not make some steps real and others a dry run.
    let cfg = ctx.cfg();
    let client = match client {
        Some(c) => c.clone(),
        None => client
            .insert(cluster::client_for(&rec.cluster).await?)
            .clone(),
    };
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
        platform::process_start_time(rec.process)
            .map(|t| t.checked_sub(Duration::from_secs(2)).unwrap_or(t)),
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
        stop_helpers(ctx, &cfg, rec);
        if repair_under_way(rec) {
            rec.transition(
                State::Cleaned,
                "nothing left to repair: the repair begun earlier is complete (its last steps were carried out, but not journaled, before the agent stopped or lost the cluster)",
            );
            log_repaired(rec);
        } else {
            rec.transition(
                State::Ended,
                "Telepresence's own cleanup left nothing to repair",
            );
            info!(session = %rec.key, "session ended cleanly");
        }
        ctx.save(rec);
        return Ok(());
    }
    if cfg.dry_run {
        for a in &plan.actions {
            rec.act(a.to_string(), "dry-run: not done");
        }
        let mut why = vec![format!(
            "dry run: repairs planned but not done (to carry them out: telepolice-agent repair {})",
            rec.key
        )];
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
    ctx.save_durably(rec)?;
    failpoint::hit("cleanup.planned");
    let mut attention = plan.attention.clone();
    for a in &plan.actions {
        match cluster::execute(&client, &rec.cluster.namespace, a).await {
            Ok(()) => {
                // Done in the cluster, not yet in the journal: a restart re-plans from the
                // cluster as it is, so the step is not repeated.
                failpoint::hit(match a {
                    Action::Restore { .. } => "cleanup.restored",
                    Action::Delete { .. } => "cleanup.deleted",
                });
                info!(session = %rec.key, "{a}: done");
                rec.act(a.to_string(), "done");
            }
            Err(e) if e.is_transient() => {
                rec.act(a.to_string(), format!("failed, will retry: {e}"));
                ctx.save(rec);
                return Err(e.into());
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
                    (_, code) => refusal(&e, code, &rec.key),
                };
                rec.act(a.to_string(), format!("refused: {why}"));
                attention.push(why);
            }
        }
        ctx.save(rec);
        failpoint::hit("cleanup.action-saved");
    }
    stop_helpers(ctx, &cfg, rec);
    failpoint::hit("cleanup.helpers-stopped");
    if attention.is_empty() {
        rec.transition(State::Cleaned, "repaired what the session left");
        log_repaired(rec);
    } else {
        rec.transition(State::NeedsAttention, attention.join("; "));
        warn!(session = %rec.key, "needs attention: {}", attention.join("; "));
    }
    ctx.save(rec);
    Ok(())
}

/// Whether an earlier attempt (of this agent, or of one that was killed) began carrying out
/// a repair that is not journaled as finished: then a cluster that needs nothing more was
/// put back by the agent, not by Telepresence's own cleanup.
fn repair_under_way(rec: &SessionRecord) -> bool {
    !rec.state.is_final() && rec.history.iter().any(|t| t.state == State::CleaningUp)
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

/// Stops the session's local helpers (processes and, for the container method, its
/// Docker containers) and removes its temp dir.
fn stop_helpers(ctx: &Ctx, cfg: &Config, rec: &mut SessionRecord) {
    let container_method =
        rec.invocation.docker_run || rec.invocation.method.as_deref() == Some("container");
    if container_method
        && let Some(start) = platform::process_start_time(rec.process)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        for (cid, name) in helpers::find_containers(rec.process.pid, start.as_secs()) {
            let outcome = if cfg.dry_run {
                "dry-run: not done".to_string()
            } else {
                helpers::stop_container(&cid)
            };
            rec.act(format!("stop container {name} ({cid})"), outcome);
        }
    }
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
    // In /tmp (records of agents before 0.x's hard-coded /tmp was known may name the
    // session's TMPDIR instead: looked in too).
    let dir = helpers::session_dir(&cfg.paths.tmp_dir, ctx.uid, &id).or_else(|| {
        rec.tmp_root
            .as_deref()
            .and_then(|root| helpers::session_dir(root, ctx.uid, &id))
    });
    let found = helpers::find(
        ctx.uid,
        rec.process.start_ticks,
        Some((rec.cluster.context.as_str(), rec.cluster.namespace.as_str())),
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
        let outcome = if cfg.dry_run {
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
        && !cfg.dry_run
        && !platform::is_alive(rec.process)
    {
        let outcome = if helpers::has_mount_inside(&dir) {
            format!(
                "skipped: {}/fs is still mounted (run `fusermount -u {}/fs`)",
                dir.display(),
                dir.display()
            )
        } else {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => "done".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        };
        rec.act(format!("remove temp dir {}", dir.display()), outcome);
    }
}

/// Why `telepolice-agent repair` could not run.
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
    let ctx = Ctx::new(cfg, journal);
    rec.transition(rec.state, "repair by hand requested");
    ctx.save(&rec);
    if let Err(e) = attempt(&ctx, &mut rec, &mut None).await {
        rec.transition(State::NeedsAttention, format!("repair by hand failed: {e}"));
        ctx.save(&rec);
    }
    Ok(rec)
}

/// The log line of a repair: the workload, where, and what was done.
fn log_repaired(rec: &SessionRecord) {
    info!(
        session = %rec.key,
        target = %rec.target(),
        context = %rec.cluster.context,
        namespace = %rec.cluster.namespace,
        "session repaired: {}",
        rec.repair_summary()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_is_under_way_from_its_plan_until_a_final_state() {
        let orphaned = SessionRecord::test().in_state(State::Orphaned, "the process exited");
        assert!(!repair_under_way(&orphaned), "nothing planned yet");
        let planned = orphaned
            .clone()
            .in_state(State::CleaningUp, "2 repair action(s) planned");
        assert!(repair_under_way(&planned), "killed while repairing");
        let retrying = planned
            .clone()
            .in_state(State::Orphaned, "cluster unreachable, will retry");
        assert!(
            repair_under_way(&retrying),
            "the cluster was lost while repairing"
        );
        let refused = retrying.in_state(State::NeedsAttention, "refused");
        assert!(!repair_under_way(&refused), "a final state ends it");
    }
}
