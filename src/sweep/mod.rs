//! `telepolice-agent sweep`: team mode's in-cluster half. Run as a Deployment (two
//! replicas), it repairs the sessions of laptops that never came back.
//!
//! - [`elect`]: leader election on a Lease, client-go's rule; only the leader acts.
//! - Every replica watches the heartbeat Leases (label
//!   `app.kubernetes.io/managed-by=telepolice-agent`) and notes, on its own clock, when each
//!   last changed ([`crate::team::election::Observer`]); one unchanged for the grace (30 min
//!   by default) is a session whose laptop is gone.
//! - [`repair`]: the leader takes that Lease (the fence a returning laptop sees) and repairs
//!   from the facts on it, with the laptop's own plan and safety rules, journaling each step
//!   on the Lease; 2.x sessions are departed in their traffic-manager.
//! - [`leftovers`]: Telepresence 0.x proxies no agent recorded: Events naming what a person
//!   should run; nothing is guessed.
//! - [`http`]: `/healthz`, `/readyz` for the probes and `/status` for a person.
//!
//! Idle means idle: watches only; the one timer is the next Lease's grace running out.

pub mod elect;
pub mod http;
pub mod leftovers;
pub mod optout;
pub mod repair;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::effects::cluster::lease::ReadLease;
use crate::team::{self, election::Observer};
use repair::{Outcome, Repairer};

/// How the sweeper runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a heartbeat must stay unchanged before its session is repaired.
    pub grace: Duration,
    /// Only this namespace (`None`: the whole cluster).
    pub namespace: Option<String>,
    /// The election Lease's namespace.
    pub election_namespace: String,
    /// The election Lease's name.
    pub election_name: String,
    /// This replica's identity.
    pub identity: String,
    /// Plan and report (Events) only.
    pub dry_run: bool,
    /// Where `/healthz`, `/readyz` and `/status` are served.
    pub listen: std::net::SocketAddr,
    /// The election's timing.
    pub timing: team::election::Timing,
}

/// What `/status` shows.
#[derive(Debug, Default)]
pub struct Status {
    /// This replica's identity.
    pub identity: String,
    /// Whether its watches have listed once.
    pub synced: bool,
    /// One line per session Lease watched.
    pub sessions: Vec<String>,
    /// What was done, newest last (at most 100).
    pub done: Vec<String>,
    /// Leftovers no agent recorded.
    pub leftovers: Vec<String>,
}

/// Shared with the HTTP server.
pub type SharedStatus = Arc<Mutex<Status>>;

fn lock(s: &SharedStatus) -> std::sync::MutexGuard<'_, Status> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why the sweeper could not run.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// No in-cluster configuration (and no kubeconfig).
    #[error(
        "no cluster to sweep: {0} (in a cluster, the pod's service account is used: is automountServiceAccountToken off?)"
    )]
    Config(String),
    /// The status port could not be opened.
    #[error("listening on {addr} for the probes: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The client: the pod's service account when run in a cluster (`KUBERNETES_SERVICE_HOST`
/// set), else the kubeconfig (to run it by hand).
pub async fn client() -> Result<(kube::Client, String), SweepError> {
    let cfg = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster().map_err(|e| SweepError::Config(e.to_string()))?
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| SweepError::Config(e.to_string()))?
    };
    let mut cfg = cfg;
    // No request may hang for good (kube-rs sets no read timeout); the watches end at
    // 290 s on the server's side, well within this.
    cfg.read_timeout = Some(Duration::from_secs(330));
    // Named in the API server's audit log.
    cfg.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(concat!("telepolice-sweeper/", env!("CARGO_PKG_VERSION"))),
    ));
    let ns = cfg.default_namespace.clone();
    let c = kube::Client::try_from(cfg).map_err(|e| SweepError::Config(e.to_string()))?;
    Ok((c, ns))
}

/// One watched session Lease.
#[derive(Debug)]
struct Tracked {
    lease: ReadLease,
    observer: Observer,
    /// Tried and left (opted out, dry run, needs a person): not tried again until it changes.
    settled: Option<String>,
    /// Not tried again before this (a failure that may pass; an opt-out, looked at again
    /// after a grace).
    not_before: Option<Instant>,
}

impl Tracked {
    /// When this Lease's session is due for the leader: a laptop's heartbeat once unchanged
    /// for the grace, a repair a sweeper began at once; `None`: not due (live, settled, or
    /// left for a person).
    fn due_at(&self, now: Instant, grace: Duration) -> Option<Instant> {
        if self.settled.is_some() && self.not_before.is_none() {
            return None;
        }
        let holder = &self.lease.record.holder;
        let at = if team::is_sweeper(holder) {
            let state = self.lease.annotations().get(repair::STATE).cloned();
            (state.as_deref() == Some("repairing")).then_some(now)?
        } else {
            self.observer.since().unwrap_or(now) + grace
        };
        Some(self.not_before.map_or(at, |nb| at.max(nb)))
    }
}

/// Runs the sweeper until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SweepError> {
    let status: SharedStatus = Arc::new(Mutex::new(Status {
        identity: opts.identity.clone(),
        ..Status::default()
    }));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| SweepError::Listen {
            addr: opts.listen,
            source,
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (mut leadership, election) = elect::start(
        client.clone(),
        elect::Ballot {
            namespace: opts.election_namespace.clone(),
            name: opts.election_name.clone(),
            me: opts.identity.clone(),
            timing: opts.timing,
        },
        stop_rx,
    );
    let server = tokio::spawn(http::serve(listener, status.clone(), leadership.clone()));
    info!(
        identity = %opts.identity,
        grace_secs = opts.grace.as_secs(),
        scope = opts.namespace.as_deref().unwrap_or("all namespaces"),
        dry_run = opts.dry_run,
        "telepolice sweeper started"
    );
    let repairer = Repairer {
        client: client.clone(),
        leadership: leadership.clone(),
        me: opts.identity.clone(),
        dry_run: opts.dry_run,
    };
    let api: kube::Api<Lease> = match &opts.namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let selector = format!("{}={}", team::MANAGED_BY.0, team::MANAGED_BY.1);
    let mut leases = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut left = leftovers::Leftovers::new(client.clone(), &opts, status.clone());
    let mut proxies = left.watch();
    let mut watched = Watched::default();
    let mut shown: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let due = next_due(&watched.tracked, opts.grace, Instant::now());
        let leads = leadership.leads();
        tokio::select! {
            () = &mut shutdown => break,
            ev = leases.next() => match ev {
                Some(Ok(e)) => apply(&mut watched, e, &status),
                Some(Err(e)) => warn!("watching the heartbeat leases (retrying): {e}"),
                None => break,
            },
            ev = proxies.next() => {
                if let Some(ev) = ev {
                    left.apply(ev);
                }
            }
            () = sleep_until(due), if leads => {}
            () = left.next_due(), if leads => {}
            () = leadership.acquired(), if !leads => {}
        }
        // With a thousand sessions renewing every 10 s, this runs a hundred times a
        // second: only what is due is looked at, and /status is refreshed once a second.
        if leadership.leads() {
            // Every renew already delivered is seen first: a repair takes seconds, and a
            // heartbeat waiting in the watch's buffer meanwhile is not a stopped one.
            while let Some(Some(ev)) = leases.next().now_or_never() {
                match ev {
                    Ok(e) => apply(&mut watched, e, &status),
                    Err(e) => warn!("watching the heartbeat leases (retrying): {e}"),
                }
            }
            let now = Instant::now();
            if next_due(&watched.tracked, opts.grace, now).is_some_and(|t| t <= now) {
                act(&repairer, &mut watched.tracked, &opts, &status).await;
            }
            if left.due(now) {
                let names = tracked_names(&watched.tracked);
                if tokio::time::timeout(REPAIR_TIMEOUT, left.report(&names, &leadership))
                    .await
                    .is_err()
                {
                    warn!(
                        "looking at the unrecorded proxies did not finish within {} s",
                        REPAIR_TIMEOUT.as_secs()
                    );
                }
            }
        }
        if shown.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
            shown = Some(Instant::now());
            show(&watched.tracked, &status, opts.grace);
        }
    }
    info!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    server.abort();
    Ok(())
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn key_of(l: &Lease) -> (String, String) {
    (
        l.metadata.namespace.clone().unwrap_or_default(),
        l.metadata.name.clone().unwrap_or_default(),
    )
}

fn tracked_names(t: &HashMap<(String, String), Tracked>) -> Vec<String> {
    t.values()
        .filter_map(|x| {
            crate::team::Facts::from_annotations(&x.lease.annotations())
                .ok()
                .map(|f| format!("{}/{}", f.namespace, f.session))
        })
        .collect()
}

/// The watched session Leases, and those seen during a re-list (after which any not seen
/// again is gone: kube-runtime's watcher re-lists after a 410 and says nothing of the
/// objects deleted meanwhile).
#[derive(Debug, Default)]
struct Watched {
    tracked: HashMap<(String, String), Tracked>,
    relisting: Option<std::collections::HashSet<(String, String)>>,
}

fn apply(w: &mut Watched, e: watcher::Event<Lease>, status: &SharedStatus) {
    let now = Instant::now();
    match e {
        watcher::Event::Apply(l) | watcher::Event::InitApply(l) => {
            let key = key_of(&l);
            if let Some(seen) = w.relisting.as_mut() {
                seen.insert(key.clone());
            }
            let read = crate::effects::cluster::lease::ReadLease::from(l);
            let t = w.tracked.entry(key).or_insert_with(|| Tracked {
                lease: read.clone(),
                observer: Observer::default(),
                settled: None,
                not_before: None,
            });
            // A change by a laptop or a person makes the session worth a new look; a
            // sweeper's own writes (its fence, its journal) do not lift a pause after a
            // failure, or the failure would be retried as fast as the API answers.
            if t.observer.see(Some(&read.record), now) == now
                && !team::is_sweeper(&read.record.holder)
            {
                t.settled = None;
                t.not_before = None;
            }
            t.lease = read;
        }
        watcher::Event::Delete(l) => {
            w.tracked.remove(&key_of(&l));
        }
        watcher::Event::Init => w.relisting = Some(Default::default()),
        watcher::Event::InitDone => {
            if let Some(seen) = w.relisting.take() {
                w.tracked.retain(|k, _| seen.contains(k));
            }
            lock(status).synced = true;
        }
    }
}

/// When the next session is due (see [`Tracked::due_at`]).
fn next_due(
    tracked: &HashMap<(String, String), Tracked>,
    grace: Duration,
    now: Instant,
) -> Option<Instant> {
    tracked.values().filter_map(|t| t.due_at(now, grace)).min()
}

/// The longest one repair may take.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(120);

/// How long after a failure that may pass a session is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The leader's pass: the most overdue Lease is repaired.
async fn act(
    r: &Repairer,
    tracked: &mut HashMap<(String, String), Tracked>,
    opts: &Options,
    status: &SharedStatus,
) {
    let now = Instant::now();
    let due: Vec<(String, String)> = tracked
        .iter()
        .filter_map(|(k, t)| {
            t.due_at(now, opts.grace)
                .filter(|at| *at <= now)
                .map(|at| (at, k.clone()))
        })
        .min()
        .map(|(_, k)| k)
        .into_iter()
        .collect();
    // One at a time, the most overdue first: the loop sees the watch again between two.
    for key in due {
        if !r.leadership.leads() {
            return;
        }
        let Some(t) = tracked.get_mut(&key) else {
            continue;
        };
        let name = format!("{}/{}", key.0, key.1);
        let stale_for = t.observer.unchanged_for(Instant::now());
        info!(lease = %name, holder = %t.lease.record.holder, unchanged_secs = stale_for.as_secs(), "the session's heartbeat stopped: repairing it");
        // A request the API server never answers must not hold the sweeper for good.
        let outcome = match tokio::time::timeout(REPAIR_TIMEOUT, r.repair(t.lease.clone())).await {
            Ok(o) => o,
            Err(_) => {
                warn!(lease = %name, "the repair did not finish within {} s; trying again", REPAIR_TIMEOUT.as_secs());
                Ok(Outcome::Lost)
            }
        };
        let line = match &outcome {
            Ok(Outcome::Repaired(s)) => format!("{name}: repaired: {s}"),
            Ok(Outcome::Attention(s)) => format!("{name}: needs a person: {s}"),
            Ok(Outcome::DryRun(s)) => format!("{name}: dry run: would {s}"),
            Ok(Outcome::OptedOut(who)) => format!(
                "{name}: left alone: {who} opted out ({}: \"false\")",
                team::SWEEP_OPT_OUT
            ),
            Ok(Outcome::Lost) => format!("{name}: left: the lease changed or the lead was lost"),
            Err(e) => format!("{name}: will retry: {e}"),
        };
        info!("{line}");
        let now = Instant::now();
        (t.settled, t.not_before) = match outcome {
            // Until the Lease changes.
            Ok(Outcome::Attention(_) | Outcome::DryRun(_)) => (Some(line.clone()), None),
            // The opt-out may be lifted: looked at again after a grace.
            Ok(Outcome::OptedOut(_)) => (Some(line.clone()), Some(now + opts.grace)),
            Err(_) => (None, Some(now + RETRY_AFTER)),
            Ok(Outcome::Repaired(_)) => (None, None),
            // The watch brings the Lease as it is now; not before a second.
            Ok(Outcome::Lost) => (None, Some(now + Duration::from_secs(1))),
        };
        // Its Lease is deleted: not looked at again (the watch's deletion may come later).
        // A lost one may be gone too (a 404 is lost): asked once, not retried for good.
        let gone = match &outcome {
            Ok(Outcome::Repaired(_)) => true,
            Ok(Outcome::Lost) => {
                matches!(
                    crate::effects::cluster::lease::get(&r.client, &key.0, &key.1).await,
                    Ok(None)
                )
            }
            _ => false,
        };
        if gone {
            tracked.remove(&key);
        }
        let mut s = lock(status);
        s.done.push(format!("{} {line}", jiff::Timestamp::now()));
        let excess = s.done.len().saturating_sub(100);
        s.done.drain(..excess);
    }
}

fn show(tracked: &HashMap<(String, String), Tracked>, status: &SharedStatus, grace: Duration) {
    let now = Instant::now();
    let mut lines: Vec<String> = tracked
        .iter()
        .map(|((ns, name), t)| {
            let unchanged = t.observer.unchanged_for(now).as_secs();
            let state = t
                .settled
                .clone()
                .or_else(|| t.lease.annotations().get(repair::STATE).cloned())
                .unwrap_or_else(|| {
                    if unchanged >= grace.as_secs() {
                        "stale".into()
                    } else {
                        "live".into()
                    }
                });
            format!(
                "{ns}/{name} holder={} unchanged={unchanged}s {state}",
                t.lease.record.holder
            )
        })
        .collect();
    lines.sort();
    lock(status).sessions = lines;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    fn tracked(holder: &str, state: Option<&str>) -> Tracked {
        let mut l = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        if let Some(s) = state {
            l.metadata.annotations = Some([(repair::STATE.to_string(), s.to_string())].into());
        }
        let lease = ReadLease::from(l);
        let mut observer = Observer::default();
        observer.see(Some(&lease.record), Instant::now());
        Tracked {
            lease,
            observer,
            settled: None,
            not_before: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn when_each_session_is_due_for_the_leader() {
        let grace = Duration::from_secs(1800);
        let t0 = Instant::now();
        let laptop = tracked("laptop/dev@h/1", None);
        assert_eq!(
            laptop.due_at(t0, grace),
            Some(t0 + grace),
            "a heartbeat: after the grace"
        );
        let repairing = tracked("sweeper/a", Some("repairing"));
        assert_eq!(
            repairing.due_at(t0, grace),
            Some(t0),
            "a begun repair: at once"
        );
        let attention = tracked("sweeper/a", Some("needs-attention"));
        assert_eq!(attention.due_at(t0, grace), None, "left for a person");
        let mut settled = tracked("laptop/dev@h/1", None);
        settled.settled = Some("dry run".into());
        assert_eq!(settled.due_at(t0, grace), None, "until the lease changes");
        settled.not_before = Some(t0 + grace * 2);
        assert_eq!(
            settled.due_at(t0, grace),
            Some(t0 + grace * 2),
            "an opt-out: a grace later"
        );
        // The same answer whenever it is asked (the main loop compares with its own now).
        tokio::time::advance(grace * 3).await;
        assert_eq!(laptop.due_at(Instant::now(), grace), Some(t0 + grace));
        let map: HashMap<(String, String), Tracked> = [
            (("a".to_string(), "1".to_string()), laptop),
            (("a".to_string(), "2".to_string()), attention),
        ]
        .into();
        assert_eq!(next_due(&map, grace, Instant::now()), Some(t0 + grace));
    }
}
