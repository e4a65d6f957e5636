//! After a session's process died: comparing the cluster with the record and repairing,
//! retrying while the cluster cannot be reached; and the manual `repair` command.

use std::time::Duration;

use tracing::{info, warn};

use super::knock;
use super::retry::Retry;
use super::{Ctx, is_running};
use crate::config::Config;
use crate::effects::cluster::{self, ClusterError};
use crate::effects::helpers;
use crate::effects::journal::Journal;
use crate::failpoint;
use crate::lifecycle::{self, Action, Event, Wait, Why, twin};
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
        super::waiting::test_retry_pause().map_or((FIRST_BACKOFF, MAX_BACKOFF), |p| (p, p));
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
                let wait = match (&e, e.status_code()) {
                    (RepairError::Cluster(_), Some(code)) => Wait::Answered(code),
                    (RepairError::Cluster(_), None) if no_client => Wait::NoClient,
                    (RepairError::Cluster(_), None) => Wait::Unreachable,
                    (RepairError::Journal(_), _) => Wait::Journal,
                };
                let problem = lifecycle::waiting_problem(wait, &e.to_string());
                ctx.board.failed(&rec.key, problem.clone());
                if problem != last_wait {
                    last_wait = problem.clone();
                    for why in ctx.record(rec, Event::Unreachable(problem)).why {
                        warn!(session = %rec.key, "{why}");
                    }
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
                    && !super::waiting::test_no_knock()
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
                let code = e.status_code();
                ctx.record(
                    rec,
                    Event::Refused {
                        problem: e.to_string(),
                        code,
                    },
                );
                break;
            }
        }
    }
    ctx.board.done(&rec.key);
}

/// The first pause after a failed try.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between tries (plus up to 300 ms of jitter).
pub(super) const MAX_BACKOFF: Duration = Duration::from_millis(1500);
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
    Journal(#[from] crate::effects::journal::JournalError),
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
    let now = cluster_now(ctx, rec, &client, cfg.dry_run).await?;
    // Team mode: the heartbeat Lease is renewed just before acting; one a sweeper took
    // means the sweeper repairs the cluster, and this agent only its own laptop. (Started
    // here if it is not running: resumed with a cluster that could not be reached then.)
    if cfg.team_writes() && ctx.heartbeats.beat(&rec.key).is_none() {
        ctx.heartbeats.start(rec, &client, None);
    }
    if let super::heartbeat::Fence::Taken(holder) = ctx.heartbeats.fence(&rec.key).await {
        let step = lifecycle::step(rec, Event::TakenOver { holder });
        stop_helpers(ctx, &cfg, rec);
        lifecycle::apply(rec, &step);
        warn!(session = %rec.key, "{}", step.why.first().map(ToString::to_string).unwrap_or_default());
        ctx.save(rec);
        return Ok(());
    }
    let step = lifecycle::step(rec, now);
    if step.stop_helpers {
        stop_helpers(ctx, &cfg, rec);
    }
    lifecycle::apply(rec, &step);
    match step.why.first() {
        Some(Why::RepairWasComplete) => log_repaired(rec),
        Some(Why::NothingToRepair) => info!(session = %rec.key, "session ended cleanly"),
        Some(why @ Why::Attention(_)) if step.stop_helpers => {
            warn!(session = %rec.key, "needs attention: {why}");
        }
        _ => {}
    }
    if step.execute.is_empty() {
        ctx.save(rec);
        return Ok(());
    }
    // Write-ahead: the plan is durable before any of it is carried out.
    ctx.save_durably(rec)?;
    failpoint::hit("cleanup.planned");
    let attention = carry_out(ctx, rec, &client, step).await?;
    let step = lifecycle::step(rec, Event::Carried { attention });
    stop_helpers(ctx, &cfg, rec);
    failpoint::hit("cleanup.helpers-stopped");
    lifecycle::apply(rec, &step);
    if rec.state == State::Cleaned {
        log_repaired(rec);
    } else {
        for why in &step.why {
            warn!(session = %rec.key, "needs attention: {why}");
        }
    }
    ctx.save(rec);
    Ok(())
}

/// The cluster as it is now, as far as the dead session `rec` is concerned, and whether a
/// live session holds the same Telepresence session or workload.
async fn cluster_now(
    ctx: &Ctx,
    rec: &SessionRecord,
    client: &kube::Client,
    dry_run: bool,
) -> Result<Event, ClusterError> {
    let recorded: Vec<(ProxyKind, String)> = rec
        .proxies
        .iter()
        .map(|p| (p.kind, p.name.clone()))
        .collect();
    let observed = cluster::observe(
        client,
        &rec.cluster.namespace,
        lifecycle::swapped(rec),
        rec.telepresence_id.as_deref(),
        &recorded,
        platform::process_start_time(rec.process)
            .map(|t| t.checked_sub(Duration::from_secs(2)).unwrap_or(t)),
    )
    .await?;
    let (records, _) = ctx.journal.load_all().unwrap_or_default();
    let twin =
        twin::live_twin(rec, &records, platform::is_alive).map(|o| (o.key.clone(), o.process.pid));
    Ok(Event::ClusterNow {
        observed,
        twin,
        dry_run,
    })
}

/// Carries out a journaled plan, one action at a time, each outcome journaled after it;
/// returns what needs a person (the plan's own, and the actions refused). A failure that
/// may pass stops it: the next attempt re-plans from the cluster as it is.
async fn carry_out(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    client: &kube::Client,
    step: lifecycle::Step,
) -> Result<Vec<lifecycle::Attention>, RepairError> {
    let mut attention = step.then_attention;
    for a in &step.execute {
        match cluster::execute(client, &rec.cluster.namespace, a).await {
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
                let why = lifecycle::refused_action(a, e.to_string(), e.status_code(), &rec.key);
                rec.act(a.to_string(), format!("refused: {why}"));
                attention.push(why);
            }
        }
        ctx.save(rec);
        failpoint::hit("cleanup.action-saved");
    }
    Ok(attention)
}

/// Stops the session's local helpers (processes and, for the container method, its
/// Docker containers) and removes its temp dir.
fn stop_helpers(ctx: &Ctx, cfg: &Config, rec: &mut SessionRecord) {
    stop_containers(cfg, rec);
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

/// Stops the Docker containers of a session that used the container method.
fn stop_containers(cfg: &Config, rec: &mut SessionRecord) {
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
}

/// Why `telepolice-agent repair` could not run.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] crate::effects::journal::JournalError),
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
    if rec.tel2.is_some() {
        if replicas.is_some() {
            return Err(CleanupError::NoOriginal(rec.key.clone()));
        }
        let ctx = Ctx::new(cfg, journal);
        super::tel2::hand_repair(&ctx, &mut rec).await;
        return Ok(rec);
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
    ctx.record(&mut rec, Event::HandRepair);
    if let Err(e) = attempt(&ctx, &mut rec, &mut None).await {
        ctx.record(&mut rec, Event::HandRepairFailed(e.to_string()));
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
