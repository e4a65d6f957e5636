//! Team mode on the laptop: once a session is recorded, its recovery facts go onto its
//! proxy and a heartbeat Lease is kept for it, renewed every 10 s until the session reaches
//! a final state (deleted then, unless a person must look: a sweeper may still repair it).
//!
//! # Guarantees
//! - The Lease is created before the facts are written, so facts on a proxy mean a
//!   heartbeat was kept for it.
//! - Every renew is pinned to the `resourceVersion` read; a Lease whose holder is a sweeper
//!   is never written again, and the session's repair then stops ([`Fence::Taken`]).
//! - Refusals (RBAC) and an unreachable cluster never stop the laptop's own work: the
//!   heartbeat says so once and tries again later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::effects::cluster::lease::{self, NewLease, Written};
use crate::effects::cluster::{self, ClusterError};
use crate::session::{SessionRecord, State};
use crate::team::{self, Facts, SessionKind};

/// The longest a fence may take before the repair goes on without it.
const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a session's heartbeat is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// Not written yet.
    Starting,
    /// Held and renewed (the Lease's namespace/name).
    Held(String),
    /// The cluster refused or failed (the problem); tried again later.
    Failing(String),
    /// A sweeper holds it (its identity): the session is the sweeper's.
    Taken(String),
    /// Held once, deleted since (by a sweeper that finished, a person, or with its proxy):
    /// not made again.
    Gone,
}

/// What the repair learns from fencing just before it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// This agent holds the Lease (just renewed), or keeps none: go on.
    Clear,
    /// A sweeper holds it: leave the session to it.
    Taken(String),
}

#[derive(Debug)]
struct Entry {
    task: JoinHandle<()>,
    beat: Arc<Mutex<Beat>>,
    lease: Arc<LeaseRef>,
}

/// Which Lease a session's heartbeat is, and who holds it.
struct LeaseRef {
    client: kube::Client,
    namespace: String,
    name: String,
    me: String,
    /// The facts as last recorded (a later proxy, an `--expose` Service, adds to them).
    facts: Mutex<Facts>,
    /// Whether this agent held the Lease at least once.
    held_once: Mutex<bool>,
    /// The facts on the proxy as written last (`None`: not written yet, or a write failed:
    /// tried again with the next renew).
    on_proxy: Mutex<Option<Facts>>,
}

impl std::fmt::Debug for LeaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lease {}/{} held as {}",
            self.namespace, self.name, self.me
        )
    }
}

impl LeaseRef {
    fn facts(&self) -> Facts {
        lock(&self.facts).clone()
    }
}

/// Every session's heartbeat, by session key.
#[derive(Debug, Default)]
pub(super) struct Heartbeats {
    entries: Mutex<HashMap<String, Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The user name written into the facts.
fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", crate::platform::current_uid()))
}

impl Heartbeats {
    /// Starts the heartbeat of `rec` if it has facts to give and none runs yet;
    /// `lease_namespace` is where a 2.x session's Lease goes.
    pub(super) fn start(
        &self,
        rec: &SessionRecord,
        client: &kube::Client,
        lease_namespace: Option<&str>,
    ) {
        let host = crate::platform::hostname();
        let Some(facts) = Facts::of(rec, &host, &user_name()) else {
            return;
        };
        // 0.x: beside (and owned by) the proxy; none recorded yet means nothing to keep.
        let namespace = match facts.kind {
            SessionKind::Legacy if facts.anchor().is_none() => return,
            SessionKind::Legacy => rec.cluster.namespace.clone(),
            SessionKind::Tel2 => {
                lease_namespace.map_or_else(|| rec.cluster.namespace.clone(), str::to_string)
            }
        };
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get(&rec.key) {
            if !e.task.is_finished() {
                // Written with the next renew.
                *lock(&e.lease.facts) = facts;
                return;
            }
            // Taken by a sweeper, or deleted after this agent held it: never made again.
            if matches!(&*lock(&e.beat), Beat::Taken(_) | Beat::Gone) {
                return;
            }
        }
        let lease = Arc::new(LeaseRef {
            client: client.clone(),
            name: team::lease_name(facts.kind, &facts.session),
            namespace,
            me: team::laptop_identity(&host, &user_name(), &rec.key),
            facts: Mutex::new(facts),
            on_proxy: Mutex::new(None),
            held_once: Mutex::new(false),
        });
        let beat = Arc::new(Mutex::new(Beat::Starting));
        let task = tokio::spawn(keep(lease.clone(), beat.clone(), rec.key.clone()));
        entries.insert(rec.key.clone(), Entry { task, beat, lease });
    }

    /// Where the heartbeat of session `key` is (`None`: none kept).
    pub(super) fn beat(&self, key: &str) -> Option<Beat> {
        lock(&self.entries).get(key).map(|e| lock(&e.beat).clone())
    }

    /// Renews the Lease of session `key` now and says whether its repair may go on.
    pub(super) async fn fence(&self, key: &str) -> Fence {
        let (lease, beat) = match lock(&self.entries).get(key) {
            Some(e) => (e.lease.clone(), e.beat.clone()),
            None => return Fence::Clear,
        };
        if let Beat::Taken(h) = &*lock(&beat) {
            return Fence::Taken(h.clone());
        }
        // Bounded: a request the API server never answers must not hold the repair.
        match tokio::time::timeout(FENCE_TIMEOUT, renew(&lease, false))
            .await
            .unwrap_or_else(|_| Ok(Beat::Failing("no answer".into())))
        {
            Ok(Beat::Taken(h)) => {
                *lock(&beat) = Beat::Taken(h.clone());
                Fence::Taken(h)
            }
            Ok(b) => {
                *lock(&beat) = b;
                Fence::Clear
            }
            // The cluster did not answer: the repair's own call will fail the same way.
            Err(_) => Fence::Clear,
        }
    }

    /// Stops the heartbeat of a session that reached `state`: its Lease is deleted when
    /// the session ended or was repaired, left for a sweeper when a person must look.
    pub(super) async fn finish(&self, key: &str, state: State) {
        let Some(e) = lock(&self.entries).remove(key) else {
            return;
        };
        e.task.abort();
        let taken = matches!(&*lock(&e.beat), Beat::Taken(_) | Beat::Gone);
        if !matches!(state, State::Ended | State::Cleaned) || taken {
            return;
        }
        let l = &e.lease;
        match lease::get(&l.client, &l.namespace, &l.name).await {
            Ok(Some(read)) if read.record.holder == l.me => {
                match lease::delete(&l.client, &read).await {
                    Ok(true) => debug!(session = %key, "heartbeat lease deleted"),
                    Ok(false) => debug!(session = %key, "heartbeat lease changed meanwhile; left"),
                    Err(e) => warn!(session = %key, "deleting the heartbeat lease: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!(session = %key, "deleting the heartbeat lease: {e}"),
        }
    }

    /// Stops every heartbeat without touching the Leases (the agent stops).
    pub(super) fn stop_all(&self) {
        for (_, e) in lock(&self.entries).drain() {
            e.task.abort();
        }
    }
}

/// Keeps a session's heartbeat until the Lease is taken or the task is aborted.
async fn keep(lease: Arc<LeaseRef>, beat: Arc<Mutex<Beat>>, key: String) {
    let mut said = String::new();
    loop {
        let b = match tokio::time::timeout(FENCE_TIMEOUT * 3, renew(&lease, true)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => Beat::Failing(e.to_string()),
            Err(_) => Beat::Failing("the API server did not answer the heartbeat".into()),
        };
        let pause = match &b {
            Beat::Failing(p) if *p != said => {
                said = p.clone();
                warn!(session = %key, "team mode: {p}; the agent repairs this session alone until the heartbeat works");
                Duration::from_secs(60)
            }
            Beat::Failing(_) => Duration::from_secs(60),
            Beat::Held(where_) if said != *where_ => {
                said = where_.clone();
                info!(session = %key, lease = %where_, "team mode: recovery facts written, heartbeat kept");
                team::RENEW_EVERY
            }
            _ => team::RENEW_EVERY,
        };
        let taken = matches!(b, Beat::Taken(_) | Beat::Gone);
        match &b {
            Beat::Taken(h) => {
                warn!(session = %key, holder = %h, "the session's heartbeat lease was taken by an in-cluster sweeper; leaving the session to it");
            }
            Beat::Gone => {
                info!(session = %key, "the session's heartbeat lease was deleted (with its proxy, by a sweeper or a person); not made again");
            }
            _ => {}
        }
        *lock(&beat) = b;
        if taken {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// One round: create the Lease (then write the facts onto the proxy) or renew it.
/// `create`: whether a missing Lease is made (the repair's fence only renews). A Lease this
/// agent held once and that is gone now is never made again: a sweeper that finished
/// deletes it, as does the garbage collector with its proxy.
async fn renew(l: &LeaseRef, create: bool) -> Result<Beat, ClusterError> {
    let held = format!("{}/{}", l.namespace, l.name);
    let facts = l.facts();
    let want = facts.to_annotations();
    for _ in 0..3 {
        let Some(read) = lease::get(&l.client, &l.namespace, &l.name).await? else {
            if *lock(&l.held_once) {
                return Ok(Beat::Gone);
            }
            if !create {
                return Ok(Beat::Starting);
            }
            let new = NewLease {
                labels: team::lease_labels(&facts.session),
                annotations: want.clone(),
                owner: facts
                    .anchor()
                    .map(|p| lease::owned_by(p.kind, &p.name, &p.uid)),
            };
            match lease::create(
                &l.client,
                &l.namespace,
                &l.name,
                &team::fresh_heartbeat(&l.me),
                &new,
            )
            .await?
            {
                Written::Done(_) => {
                    *lock(&l.held_once) = true;
                    write_facts(l, &facts).await;
                    return Ok(Beat::Held(held));
                }
                Written::Lost => continue,
            }
        };
        if read.record.holder != l.me {
            if team::is_sweeper(&read.record.holder) {
                return Ok(Beat::Taken(read.record.holder));
            }
            // Another holder that is no sweeper (a person's edit): not ours to overwrite.
            return Ok(Beat::Failing(format!(
                "lease {held} is held by {:?}, not by this agent",
                read.record.holder
            )));
        }
        *lock(&l.held_once) = true;
        let mut next = read.record.clone();
        next.renew = Some(jiff::Timestamp::now());
        let have = read.annotations();
        let changed = want.iter().any(|(k, v)| have.get(k) != Some(v));
        let edit = |m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            if changed {
                m.annotations
                    .get_or_insert_with(Default::default)
                    .extend(want.clone());
            }
        };
        match lease::update(&l.client, &read, &next, edit).await? {
            Written::Done(_) => {
                if lock(&l.on_proxy).as_ref() != Some(&facts) {
                    write_facts(l, &facts).await;
                }
                return Ok(Beat::Held(held));
            }
            Written::Lost => continue,
        }
    }
    Ok(Beat::Failing(format!(
        "lease {held} kept changing under this agent's writes"
    )))
}

/// Writes the facts onto the proxy the Lease belongs to (0.x). A failure is only logged:
/// the heartbeat holds, and the next renew tries again.
async fn write_facts(l: &LeaseRef, facts: &Facts) {
    let Some(p) = facts.anchor() else {
        *lock(&l.on_proxy) = Some(facts.clone());
        return;
    };
    let annotations = facts.to_annotations();
    match lease::annotate(
        &l.client,
        &l.namespace,
        p.kind,
        &p.name,
        &p.uid,
        &annotations,
    )
    .await
    {
        Ok(written) => {
            if !written {
                debug!(proxy = %p.name, "the proxy is gone or replaced; no facts written on it");
            }
            // Written, or nothing left to write on: not tried again until the facts change.
            *lock(&l.on_proxy) = Some(facts.clone());
        }
        Err(e) => warn!(proxy = %p.name, "team mode: {e}; trying again with the next renew"),
    }
}

/// A client for a session's cluster, for a heartbeat resumed after a restart.
pub(super) async fn client(rec: &SessionRecord) -> Option<kube::Client> {
    cluster::client_for(&rec.cluster).await.ok()
}
