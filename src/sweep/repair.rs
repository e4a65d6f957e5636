//! The leader's repair of one session whose heartbeat stopped: fence (take the Lease), then
//! the laptop's own plan from the recovery facts, every step journaled on the Lease before
//! and after it is carried out, and an Event on every object touched.
//!
//! # Guarantees
//! - Nothing is written unless this replica leads ([`Leadership::leads`], asked before each
//!   write) and holds the session's Lease (taken with an update pinned to the version read).
//! - The plan is [`crate::lifecycle::plan`]'s: deletes only of objects labelled with the
//!   session's id, each with its uid; the original restored only from 0, same uid, from a
//!   count with evidence. Whatever needs a person is an Event, never a guess.
//! - Exactly once across a crash at any step: a step journaled done is not planned again,
//!   and one begun but not journaled is re-planned from the cluster as it is.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::{info, warn};

use super::elect::Leadership;
use crate::effects::cluster::lease::{self, Involved, ReadLease, Written};
use crate::effects::cluster::{self, ClusterError};
use crate::effects::manager::{Manager, ManagerError};
use crate::lifecycle::{self, Action};
use crate::session::ProxyKind;
use crate::team::{self, Facts, SessionKind};

/// The annotation saying where a sweeper's repair is.
pub const STATE: &str = "telepolice.dev/sweep-state";
/// The annotation journaling the sweeper's steps, one `action -> outcome` per line.
pub const JOURNAL: &str = "telepolice.dev/sweep-journal";
/// The annotation naming the laptop a session was taken from.
pub const TAKEN_FROM: &str = "telepolice.dev/taken-from";

/// How one repair went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Repaired; the Lease deleted.
    Repaired(String),
    /// Repaired as far as safe; the rest is for a person (Events written).
    Attention(String),
    /// Another writer won the Lease, or the lead was lost: nothing more done.
    Lost,
    /// Dry run: the plan, as Events.
    DryRun(String),
    /// The workload or namespace opted out.
    OptedOut(String),
}

/// What a repair needs.
#[derive(Clone)]
pub struct Repairer {
    /// The sweeper's client.
    pub client: kube::Client,
    /// Whether this replica may act.
    pub leadership: Leadership,
    /// Its identity.
    pub me: String,
    /// Plan and report only.
    pub dry_run: bool,
}

impl std::fmt::Debug for Repairer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "repairer {} (dry run: {})", self.me, self.dry_run)
    }
}

fn involved(kind: ProxyKind, name: &str, ns: &str, uid: Option<&str>) -> Involved {
    Involved {
        api_version: lease::api_version(kind).to_string(),
        kind: lease::kind_name(kind).to_string(),
        name: name.to_string(),
        namespace: ns.to_string(),
        uid: uid.map(str::to_string),
    }
}

fn lease_involved(l: &ReadLease) -> Involved {
    Involved {
        api_version: "coordination.k8s.io/v1".to_string(),
        kind: "Lease".to_string(),
        name: l.object.metadata.name.clone().unwrap_or_default(),
        namespace: l.object.metadata.namespace.clone().unwrap_or_default(),
        uid: l.object.metadata.uid.clone(),
    }
}

impl Repairer {
    async fn event(&self, about: &Involved, reason: &str, message: &str, warning: bool) {
        if !self.leadership.leads() {
            return;
        }
        if let Err(e) = lease::event(&self.client, about, reason, message, warning, &self.me).await
        {
            warn!("{e}");
        }
    }

    /// Takes the session's Lease for this sweeper, or keeps it: an update pinned to the
    /// version read that also drops its owner (so that the journal outlives the proxy).
    async fn hold(
        &self,
        l: &ReadLease,
        edit: impl FnOnce(&mut ObjectMeta),
    ) -> Result<Option<ReadLease>, ClusterError> {
        if !self.leadership.leads() {
            return Ok(None);
        }
        let mut r = l.record.clone();
        let now = jiff::Timestamp::now();
        if r.holder != self.me {
            r.transitions = r.transitions.saturating_add(1);
            r.acquire = Some(now);
        }
        r.holder = self.me.clone();
        r.renew = Some(now);
        let from = l.record.holder.clone();
        let write = lease::update(&self.client, l, &r, |m| {
            m.owner_references = None;
            let a = m.annotations.get_or_insert_with(BTreeMap::new);
            if !team::is_sweeper(&from) && !from.is_empty() {
                a.insert(TAKEN_FROM.to_string(), from);
            }
            a.entry(STATE.to_string())
                .or_insert_with(|| "repairing".to_string());
            edit(m);
        });
        Ok(match write.await? {
            Written::Done(l) => Some(*l),
            Written::Lost => None,
        })
    }

    /// Appends `line` to the journal on the Lease (pinned); `None`: lost it.
    async fn journal(&self, l: &ReadLease, line: &str) -> Result<Option<ReadLease>, ClusterError> {
        let mut text = l.annotations().get(JOURNAL).cloned().unwrap_or_default();
        // A step retried after a failure that may pass is journaled started once: the
        // journal stays bounded however often the API server fails.
        if text.lines().last() == Some(line) {
            return self.hold(l, |_| {}).await;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
        self.hold(l, |m| {
            m.annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(JOURNAL.to_string(), text);
        })
        .await
    }

    /// Repairs the session of Lease `l` (stale, or already being repaired by a sweeper).
    pub async fn repair(&self, l: ReadLease) -> Result<Outcome, ClusterError> {
        let about_lease = lease_involved(&l);
        let facts = match Facts::from_annotations(&l.annotations()) {
            Ok(f) => f,
            Err(e) => {
                let why = format!("the session's recovery facts cannot be used: {e}");
                return self.attention(&l, &[about_lease], &why).await;
            }
        };
        if let Some(why) = facts.untrusted(&name_ns(&l)) {
            return self.attention(&l, &[about_lease], &why).await;
        }
        if let Some(who) = super::optout::opted_out(&self.client, &facts).await? {
            return Ok(Outcome::OptedOut(who));
        }
        if self.dry_run {
            let plan = self.plan_text(&facts).await?;
            self.event(
                &about_lease,
                "SweepDryRun",
                &format!("dry run: would {plan}"),
                false,
            )
            .await;
            return Ok(Outcome::DryRun(plan));
        }
        let Some(l) = self.hold(&l, |_| {}).await? else {
            return Ok(Outcome::Lost);
        };
        match facts.kind {
            SessionKind::Legacy => self.repair_legacy(l, &facts).await,
            SessionKind::Tel2 => self.depart(l, &facts).await,
        }
    }

    async fn plan_text(&self, facts: &Facts) -> Result<String, ClusterError> {
        if facts.kind == SessionKind::Tel2 {
            return Ok(format!("depart Telepresence 2 session {}", facts.session));
        }
        let rec = facts.record();
        let obs = observe(&self.client, facts).await?;
        let p = lifecycle::plan::plan(&rec, &obs);
        let mut parts: Vec<String> = p.actions.iter().map(ToString::to_string).collect();
        parts.extend(
            p.attention
                .iter()
                .map(|a| format!("leave for a person: {a}")),
        );
        Ok(if parts.is_empty() {
            "do nothing: the session left nothing".to_string()
        } else {
            parts.join("; ")
        })
    }

    async fn repair_legacy(
        &self,
        mut l: ReadLease,
        facts: &Facts,
    ) -> Result<Outcome, ClusterError> {
        let ns = &facts.namespace;
        let rec = facts.record();
        let obs = observe(&self.client, facts).await?;
        let plan = lifecycle::plan::plan(&rec, &obs);
        let journaled = l.annotations().get(JOURNAL).cloned().unwrap_or_default();
        let mut done = Vec::new();
        let mut attention: Vec<String> = plan.attention.iter().map(ToString::to_string).collect();
        for a in &plan.actions {
            let text = a.to_string();
            if journaled.lines().any(|j| j == format!("{text} -> done")) {
                continue;
            }
            let Some(next) = self.journal(&l, &format!("{text} -> started")).await? else {
                return Ok(Outcome::Lost);
            };
            l = next;
            crate::failpoint::hit("sweep.started");
            if !self.leadership.leads() {
                return Ok(Outcome::Lost);
            }
            let outcome = match cluster::execute(&self.client, ns, a).await {
                Ok(()) => "done".to_string(),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    let why = lifecycle::refused_action(a, e.to_string(), e.status_code(), "");
                    attention.push(why.to_string());
                    format!("refused: {why}")
                }
            };
            crate::failpoint::hit("sweep.carried");
            let (about, reason) = match a {
                Action::Restore { name, uid, .. } => (
                    involved(ProxyKind::Deployment, name, ns, Some(uid)),
                    "RestoredAfterTelepresence",
                ),
                Action::Delete { kind, name, uid } => (
                    involved(*kind, name, ns, Some(uid)),
                    "DeletedTelepresenceProxy",
                ),
            };
            let message = format!(
                "{text}: {outcome} (Telepresence session {} of {}@{}, whose heartbeat stopped)",
                facts.session, facts.owner_user, facts.owner_host
            );
            self.event(&about, reason, &message, outcome != "done")
                .await;
            info!(session = %facts.session, "{text}: {outcome}");
            if outcome == "done" {
                done.push(text.clone());
            }
            let Some(next) = self.journal(&l, &format!("{text} -> {outcome}")).await? else {
                return Ok(Outcome::Lost);
            };
            l = next;
        }
        if !attention.is_empty() {
            let mut about = vec![lease_involved(&l)];
            if let Some(o) = &facts.original {
                about.push(involved(
                    ProxyKind::Deployment,
                    &o.name,
                    ns,
                    o.uid.as_deref(),
                ));
            }
            if let Some(p) = facts.anchor() {
                about.push(involved(p.kind, &p.name, ns, Some(&p.uid)));
            }
            return self.attention(&l, &about, &attention.join("; ")).await;
        }
        if !self.leadership.leads() || !lease::delete(&self.client, &l).await? {
            return Ok(Outcome::Lost);
        }
        let summary = if done.is_empty() {
            "nothing left to repair".to_string()
        } else {
            done.join("; ")
        };
        Ok(Outcome::Repaired(summary))
    }

    /// A 2.x session: departed in its traffic-manager, as its connector would have.
    async fn depart(&self, mut l: ReadLease, facts: &Facts) -> Result<Outcome, ClusterError> {
        let ns = facts
            .manager_namespace
            .clone()
            .unwrap_or_else(|| "ambassador".to_string());
        let about = lease_involved(&l);
        let manager = match Manager::connect(&self.client, &ns).await {
            Ok(m) => m,
            Err(ManagerError::Cluster(e)) if e.is_transient() => return Err(e),
            Err(e) => {
                let why = format!("cannot reach the traffic-manager in {ns}: {e}");
                return self.attention(&l, &[about], &why).await;
            }
        };
        let id = &facts.session;
        let held = manager.session_intercepts(id).await;
        let text = match held {
            Ok(None) => format!("the traffic-manager in {ns} no longer has session {id}"),
            Ok(Some(list)) => {
                if !self.leadership.leads() {
                    return Ok(Outcome::Lost);
                }
                let Some(next) = self.journal(&l, &format!("depart {id} -> started")).await? else {
                    return Ok(Outcome::Lost);
                };
                l = next;
                if let Err(e) = manager.depart(id).await {
                    let why = format!("ending session {id} failed: {e}");
                    return self.attention(&l, &[about], &why).await;
                }
                format!(
                    "departed Telepresence 2 session {id} in {ns} ({} intercept(s) ended)",
                    list.len()
                )
            }
            Err(e) => {
                let why = format!("cannot ask the traffic-manager about session {id}: {e}");
                return self.attention(&l, &[about], &why).await;
            }
        };
        self.event(
            &about,
            "DepartedTelepresenceSession",
            &format!(
                "{text} (its heartbeat from {}@{} stopped)",
                facts.owner_user, facts.owner_host
            ),
            false,
        )
        .await;
        if !self.leadership.leads() || !lease::delete(&self.client, &l).await? {
            return Ok(Outcome::Lost);
        }
        Ok(Outcome::Repaired(text))
    }

    /// Leaves the session for a person: Warning Events on `about`, the Lease kept, held by
    /// this sweeper and marked, so that it is not tried again.
    async fn attention(
        &self,
        l: &ReadLease,
        about: &[Involved],
        why: &str,
    ) -> Result<Outcome, ClusterError> {
        for a in about {
            self.event(a, "TelepresenceSessionNeedsAttention", why, true)
                .await;
        }
        warn!(lease = %name_of(l), "needs a person: {why}");
        if self.dry_run {
            return Ok(Outcome::DryRun(format!("leave it for a person: {why}")));
        }
        let _ = self
            .hold(l, |m| {
                m.annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(STATE.to_string(), "needs-attention".to_string());
            })
            .await?;
        Ok(Outcome::Attention(why.to_string()))
    }
}

fn name_of(l: &ReadLease) -> String {
    l.object.metadata.name.clone().unwrap_or_default()
}

fn name_ns(l: &ReadLease) -> String {
    l.object.metadata.namespace.clone().unwrap_or_default()
}

/// The cluster as it is now for the session the facts describe.
async fn observe(
    client: &kube::Client,
    facts: &Facts,
) -> Result<lifecycle::Observed, ClusterError> {
    let recorded: Vec<(ProxyKind, String)> = facts
        .proxies
        .iter()
        .map(|p| (p.kind, p.name.clone()))
        .collect();
    cluster::observe(
        client,
        &facts.namespace,
        facts.swapped.as_deref(),
        Some(&facts.session),
        &recorded,
        None,
    )
    .await
}
