//! While a session's process lives: recording the original workload, learning
//! Telepresence's session id, recording the proxy objects, and reacting to the death of the
//! session's shell.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tracing::{debug, info, warn};

use super::retry::Retry;
use super::{Ctx, environ_map};
use crate::effects::cluster::{self, ClusterError};
use crate::effects::helpers;
use crate::failpoint;
use crate::lifecycle::{self, Event, Fallbacks, evidence};
use crate::platform::{self, Signal};
use crate::session::{ProxyKind, ProxyObject, SessionRecord, State};
use crate::telepresence::{self, Mode};

fn log_path(rec: &SessionRecord) -> Option<PathBuf> {
    match rec.invocation.logfile.as_deref() {
        Some("-") => None,
        Some(p) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => rec.cwd.as_ref().map(|c| c.join(p)),
        None => rec.cwd.as_ref().map(|c| c.join("telepresence.log")),
    }
}

/// What the session's `telepresence.log` says; only its first [`telepresence::MAX_LOG_BYTES`]
/// are read (the rest is the proxy's log, which grows as long as the session lives).
fn read_log(rec: &SessionRecord, deployment: Option<&str>) -> telepresence::LogFacts {
    use std::io::Read;
    let mut bytes = Vec::new();
    if let Some(f) = log_path(rec).and_then(|p| std::fs::File::open(p).ok()) {
        let limit = u64::try_from(telepresence::MAX_LOG_BYTES).unwrap_or(u64::MAX);
        if let Err(e) = f.take(limit).read_to_end(&mut bytes) {
            debug!(session = %rec.key, "reading telepresence.log: {e}");
        }
    }
    telepresence::read_log(&String::from_utf8_lossy(&bytes), deployment)
}

/// Records the original workload of a swap, before Telepresence scales it down if the agent
/// is in time, else from the fallbacks (see [`lifecycle::evidence`]).
async fn record_original(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    client: &kube::Client,
) -> Result<(), ClusterError> {
    let Some(deployment) = lifecycle::swapped(rec).map(str::to_string) else {
        ctx.record(rec, Event::NoWorkload);
        return Ok(());
    };
    let now = cluster::get_workload(client, &rec.cluster.namespace, &deployment).await?;
    let fallbacks = match &now {
        Some(w) if evidence::needs_fallbacks(w) => {
            let (records, _) = ctx.journal.load_all().unwrap_or_default();
            let log = read_log(rec, Some(&deployment));
            Fallbacks {
                earlier: evidence::earlier_observation(&records, rec, &deployment, &w.uid),
                log: log.original_replicas.map(|n| (n, log.original_uid.clone())),
            }
        }
        _ => Fallbacks::default(),
    };
    ctx.record(
        rec,
        Event::Workload {
            name: deployment,
            now,
            fallbacks,
        },
    );
    failpoint::hit("record.original");
    Ok(())
}

/// Telepresence's session id candidates: `tel-*` dirs under `tmp_root` (always `/tmp` for
/// 0.x, whatever the session's `TMPDIR`) whose `session_id.txt` was written after the
/// process started (0.1 s of slack for the clock granularity of the start time), not
/// claimed by another session.
fn session_id_candidates(
    ctx: &Ctx,
    rec: &SessionRecord,
    tmp_root: &Path,
    started: Option<std::time::SystemTime>,
) -> Vec<telepresence::Candidate> {
    let claimed = ctx.claimed_by_others(&rec.key);
    helpers::find_session_dirs(tmp_root, ctx.uid)
        .into_iter()
        .filter(|(_, id)| !claimed.contains(id))
        .filter(|(dir, _)| {
            let written = std::fs::symlink_metadata(dir.join("session_id.txt"))
                .and_then(|m| m.modified())
                .ok();
            match (written, started) {
                (Some(w), Some(s)) => w + Duration::from_millis(100) >= s,
                _ => false,
            }
        })
        .map(|(dir, id)| telepresence::Candidate { id, dir })
        .collect()
}

/// The command lines of the process's children of the same user: its synchronous
/// `kubectl` calls and its helpers, which name its proxy, id or temp dir.
fn children_argv(rec: &SessionRecord) -> Vec<Vec<String>> {
    platform::children(rec.process)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| platform::process_info(pid).ok())
        .filter(|p| p.uid == rec.uid && p.ppid == rec.process.pid)
        .map(|p| p.argv)
        .collect()
}

/// Weighs the candidates against what only this process has (its children now, and the
/// proxies its command line makes), reading the cluster only when `read_cluster`.
async fn weigh(
    rec: &SessionRecord,
    candidates: &[telepresence::Candidate],
    client: &kube::Client,
    objects: &mut Vec<telepresence::Labelled>,
    read_cluster: bool,
) -> telepresence::IdPick {
    if candidates.is_empty() {
        return telepresence::IdPick::Unproven;
    }
    if read_cluster {
        match cluster::labelled_objects(client, &rec.cluster.namespace).await {
            Ok(o) => *objects = o,
            Err(e) => debug!(session = %rec.key, "looking for the session's proxies: {e}"),
        }
    }
    let children = children_argv(rec);
    let no_selector = Default::default();
    let evidence = telepresence::Evidence {
        pid: rec.process.pid,
        mode: &rec.invocation.mode,
        selector: rec.original.as_ref().map_or(&no_selector, |o| &o.selector),
        children: &children,
        objects,
    };
    telepresence::pick_session_id(candidates, &evidence)
}

/// One kind of object carrying the session's label, as (kind, name, uid, owned), watched
/// with backoff; watch errors are logged, not fatal.
fn labelled<K>(
    client: &kube::Client,
    namespace: &str,
    id: &str,
    kind: ProxyKind,
) -> futures::stream::BoxStream<'static, (ProxyKind, String, String, bool)>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let cfg = watcher::Config::default().labels(&format!("telepresence={id}"));
    watcher(kube::Api::<K>::namespaced(client.clone(), namespace), cfg)
        .default_backoff()
        .filter_map(move |e| async move {
            match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let m = o.meta();
                    Some((
                        kind,
                        m.name.clone().unwrap_or_default(),
                        m.uid.clone().unwrap_or_default(),
                        m.owner_references.as_ref().is_some_and(|o| !o.is_empty()),
                    ))
                }
                Err(e) => {
                    warn!("watching the session's proxy objects (retrying with backoff): {e}");
                    None
                }
                _ => None,
            }
        })
        .boxed()
}

/// A stream of the objects carrying the session's label, as (kind, name, uid, owned).
fn proxy_events(
    client: &kube::Client,
    namespace: &str,
    id: &str,
) -> futures::stream::BoxStream<'static, (ProxyKind, String, String, bool)> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Pod, Service};
    futures::stream::select_all([
        labelled::<Deployment>(client, namespace, id, ProxyKind::Deployment),
        labelled::<Pod>(client, namespace, id, ProxyKind::Pod),
        labelled::<Service>(client, namespace, id, ProxyKind::Service),
    ])
    .boxed()
}

/// How often the cluster is asked for labelled proxies while a session's id is unproven
/// (its children, read from `/proc`, are looked at every 100 ms): often while a proxy is
/// being made, rarely once the session has run for a while without one.
const CLUSTER_LOOK_EVERY: Duration = Duration::from_millis(500);
const CLUSTER_LOOK_LATER: Duration = Duration::from_secs(5);
const CLUSTER_LOOK_SLOWS_AFTER: Duration = Duration::from_secs(15);

/// Learns the session's Telepresence id (see [`telepresence::pick_session_id`]) and claims
/// it for this session alone, waiting while the evidence is missing or ambiguous; after the
/// process exits, one last look at the cluster. Returns whether the process exited (and
/// `exit` must not be polled again).
async fn learn_session_id<F: std::future::Future<Output = ()>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    tmp_root: &Path,
    client: &kube::Client,
    exit: &mut std::pin::Pin<&mut F>,
) -> bool {
    use telepresence::IdPick;
    let mut objects = Vec::new();
    let mut last_look: Option<tokio::time::Instant> = None;
    let mut said_ambiguous = false;
    let mut last_said = Some(tokio::time::Instant::now());
    let mut exited = false;
    let began = tokio::time::Instant::now();
    // `--deployment` makes no proxy: nothing labelled in the cluster can be its own.
    let makes_proxies = !matches!(rec.invocation.mode, Mode::ExistingDeployment { .. });
    // The process's start on the wall clock, worked out once: a clock stepped later would
    // otherwise move it past its own session dir's time.
    let started = platform::process_start_time(rec.process);
    while rec.telepresence_id.is_none() {
        let candidates = session_id_candidates(ctx, rec, tmp_root, started);
        let every = if began.elapsed() < CLUSTER_LOOK_SLOWS_AFTER {
            CLUSTER_LOOK_EVERY
        } else {
            CLUSTER_LOOK_LATER
        };
        let read_cluster =
            makes_proxies && (exited || last_look.is_none_or(|t| t.elapsed() >= every));
        if read_cluster && !candidates.is_empty() {
            last_look = Some(tokio::time::Instant::now());
        }
        match weigh(rec, &candidates, client, &mut objects, read_cluster).await {
            IdPick::Proven { id, because } => match ctx.claim(&id, &rec.key) {
                Ok(()) => {
                    ctx.record(rec, Event::IdProven { id, because });
                    failpoint::hit("record.session-id");
                    return exited;
                }
                Err(holder) => {
                    debug!(session = %rec.key, "session id {id} was claimed by {holder} meanwhile");
                    continue;
                }
            },
            IdPick::Ambiguous(ids) if !said_ambiguous => {
                said_ambiguous = true;
                warn!(session = %rec.key, candidates = ?ids, "several Telepresence session dirs could be this session's; waiting for evidence that only one of them belongs to it");
            }
            _ => {}
        }
        if exited {
            let tried = candidates.iter().map(|c| c.id.as_str()).collect::<Vec<_>>();
            info!(session = %rec.key, candidates = ?tried, "the session ended before its Telepresence session id could be proven");
            return true;
        }
        // Every 5 s without proof, what was weighed (at debug: for a person reading why).
        if tracing::enabled!(tracing::Level::DEBUG)
            && last_said.is_none_or(|t: tokio::time::Instant| t.elapsed() >= Duration::from_secs(5))
        {
            last_said = Some(tokio::time::Instant::now());
            say_unproven(ctx, rec, tmp_root, started, candidates.len(), objects.len());
        }
        tokio::select! {
            _ = exit.as_mut() => exited = true,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    exited
}

/// Says (at debug) what was weighed for a session whose id is not proven yet.
fn say_unproven(
    ctx: &Ctx,
    rec: &SessionRecord,
    tmp_root: &Path,
    started: Option<std::time::SystemTime>,
    candidates: usize,
    labelled: usize,
) {
    let dirs: Vec<String> = helpers::find_session_dirs(tmp_root, ctx.uid)
        .into_iter()
        .map(|(dir, id)| {
            let written = std::fs::symlink_metadata(dir.join("session_id.txt"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|w| jiff::Timestamp::try_from(w).ok());
            format!("{} ({id}, written {written:?})", dir.display())
        })
        .collect();
    debug!(
        session = %rec.key,
        started = ?started.and_then(|s| jiff::Timestamp::try_from(s).ok()),
        candidates,
        children = children_argv(rec).len(),
        labelled,
        tel_dirs = ?dirs,
        "the session's Telepresence id is not proven yet"
    );
}

/// While the process lives: record the original, find the session id, record proxies,
/// and handle the death of the session's shell. Each phase returns `None` when following
/// ends (the process exited, or the session reached a final state).
pub(super) async fn follow_live<F: std::future::Future<Output = ()>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    exit: &mut std::pin::Pin<&mut F>,
) {
    // 0.x makes its tel-* dir in /tmp whatever the session's TMPDIR says.
    let tmp_root = ctx.cfg().paths.tmp_dir.clone();
    if rec.cluster.server.is_empty() && bind_cluster(ctx, rec, exit).await.is_none() {
        return;
    }
    let Some(client) = connect(ctx, rec, exit).await else {
        return;
    };
    if rec.state == State::Seen && record_until_read(ctx, rec, &client, exit).await.is_none() {
        return;
    }
    // The session id: Telepresence writes it within its first second, but it is the
    // session's only once evidence that belongs to this process alone says so.
    if learn_session_id(ctx, rec, &tmp_root, &client, exit).await {
        return;
    }
    if rec.telepresence_id.is_some() {
        watch_proxies_and_shell(ctx, rec, &client, exit).await;
    }
}

/// The kubeconfig was missing or broken when the session was found (or its environment
/// not readable yet): reads both again every second until they name a cluster (or the
/// session ends).
async fn bind_cluster<F: std::future::Future<Output = ()>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    exit: &mut std::pin::Pin<&mut F>,
) -> Option<()> {
    loop {
        let (env, _) = environ_map(rec.process.pid);
        let inv = &rec.invocation;
        match cluster::resolve_binding(
            &env,
            rec.cwd.as_deref(),
            inv.context.as_deref(),
            inv.namespace.as_deref(),
        ) {
            Ok(b) => {
                let in_scope = ctx.cfg().in_scope(&b.context, &b.namespace);
                if !in_scope {
                    super::pass_over_out_of_scope(ctx, rec.process, &rec.argv, &b);
                }
                let step = ctx.record(
                    rec,
                    Event::ClusterFound {
                        binding: b,
                        in_scope,
                    },
                );
                return (!step.forget).then_some(());
            }
            Err(e) => {
                debug!(session = %rec.key, "still no cluster: {e}");
                tokio::select! {
                    _ = exit.as_mut() => {
                        ctx.record(rec, Event::EndedBeforeCluster(e.to_string()));
                        return None;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// A client for the session's cluster, retried while building it fails for a reason that
/// may pass.
async fn connect<F: std::future::Future<Output = ()>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    exit: &mut std::pin::Pin<&mut F>,
) -> Option<kube::Client> {
    let mut retry = Retry::new(
        Duration::from_millis(200),
        Duration::from_secs(30),
        0,
        ctx.probe.subscribe(),
    );
    loop {
        let tried = tokio::time::Instant::now();
        match cluster::client_for(&rec.cluster).await {
            Ok(c) => return Some(c),
            Err(e) if !e.is_transient() => {
                ctx.record(rec, Event::NoClient(e.to_string()));
                return None;
            }
            Err(e) => {
                warn!(session = %rec.key, "{e}; retrying");
                tokio::select! {
                    _ = exit.as_mut() => return None,
                    () = retry.pause(tried, Duration::ZERO) => {}
                }
            }
        }
    }
}

/// Records the original, retrying every 500 ms while the cluster fails for a reason that
/// may pass.
async fn record_until_read<F: std::future::Future<Output = ()>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    client: &kube::Client,
    exit: &mut std::pin::Pin<&mut F>,
) -> Option<()> {
    loop {
        let Err(e) = record_original(ctx, rec, client).await else {
            return Some(());
        };
        warn!(session = %rec.key, "recording the original: {e}");
        if !e.is_transient() {
            ctx.record(rec, Event::WorkloadUnreadable(e.to_string()));
            return None;
        }
        tokio::select! {
            _ = exit.as_mut() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Records every object that carries the session's label, and ends the session when its
/// shell dies (if so configured), until the process exits.
async fn watch_proxies_and_shell<F: std::future::Future<Output = ()>>(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    client: &kube::Client,
    exit: &mut std::pin::Pin<&mut F>,
) {
    let Some(id) = rec.telepresence_id.clone() else {
        return;
    };
    let mut events = proxy_events(client, &rec.cluster.namespace, &id);
    let parent = rec.parent;
    // A shell that died before this point (while the session id was still being proven,
    // which takes longer under load) has died all the same: `exited` returns at once for
    // it. (Waiting only for a parent still alive here missed those deaths for good.)
    let parent_exit = async move {
        match parent {
            Some(p) => super::exited(p).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(parent_exit);
    let mut parent_gone = false;
    // Resumed with proxies already recorded: the heartbeat goes on.
    if ctx.cfg().team_writes() {
        ctx.heartbeats.start(rec, client, None);
    }
    loop {
        tokio::select! {
            _ = exit.as_mut() => return,
            _ = &mut parent_exit, if !parent_gone => {
                parent_gone = true;
                shell_died(ctx, rec);
            }
            ev = events.next() => {
                let Some((kind, name, uid, owned)) = ev else { return };
                let proxy = ProxyObject { kind, name, uid };
                if !ctx.record(rec, Event::ProxySeen { proxy, owned }).is_nothing() {
                    failpoint::hit("record.proxy");
                    if ctx.cfg().team_writes() {
                        ctx.heartbeats.start(rec, client, None);
                    }
                }
            }
        }
    }
}

/// The session's shell died: SIGTERM to Telepresence, so that it cleans up after itself,
/// when the configuration says so.
fn shell_died(ctx: &Ctx, rec: &mut SessionRecord) {
    let cfg = ctx.cfg();
    if lifecycle::terminate_on_shell_death(
        cfg.on_shell_death,
        cfg.dry_run,
        platform::is_alive(rec.process),
    ) {
        let sent = platform::signal(rec.process, Signal::Term);
        rec.act(
            "SIGTERM to Telepresence (its shell died)",
            match sent {
                Ok(true) => "done".to_string(),
                Ok(false) => "skipped: already gone".to_string(),
                Err(e) => format!("failed: {e}"),
            },
        );
        ctx.record(rec, Event::ShellDied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";
    const C: &str = "00000000000000000000000000000000";

    fn session_dir(root: &Path, name: &str, id: &str) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("session_id.txt"), id).expect("id");
        d
    }

    #[test]
    fn only_session_dirs_written_after_the_process_started_and_unclaimed_are_candidates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ctx = crate::daemon::ctx::testing::ctx(dir.path());
        let tmp = dir.path().join("tmp");
        // A process started now: this test's own child.
        let (mut child, info) = crate::daemon::ctx::testing::sleeping_child();
        std::thread::sleep(Duration::from_millis(300));
        session_dir(&tmp, "tel-new", A);
        session_dir(&tmp, "tel-claimed", B);
        // Written long before the process started: another, older session's.
        let stale = session_dir(&tmp, "tel-old", C);
        let touched = std::process::Command::new("touch")
            .args(["-d", "2020-01-01 00:00:00"])
            .arg(stale.join("session_id.txt"))
            .status()
            .expect("touch runs");
        assert!(touched.success());
        let rec = SessionRecord::test().with_process(info.id.pid, info.id.start_ticks);
        ctx.claim(B, "another session").expect("claimed");
        let started = platform::process_start_time(rec.process);
        let found: Vec<String> = session_id_candidates(&ctx, &rec, &tmp, started)
            .into_iter()
            .map(|c| c.id)
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, [A.to_string()]);
    }
}
