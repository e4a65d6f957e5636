//! The repair planner: from a session's record and what the cluster holds now, decide what
//! to do. Pure: no I/O, table-tested.
//!
//! # Guarantees
//! - Only objects that carry `telepresence=<session id>` are ever deleted, each with its
//!   observed uid as precondition; a recorded object whose uid changed is left alone.
//! - The original is only rescaled when it is the same object (uid) and still at 0 replicas,
//!   and when its original count is known; every other case is reported for a person.

use std::collections::BTreeMap;

use crate::session::{ProxyKind, ReplicaSource, SessionRecord};
use crate::telepresence::Mode;

/// The original workload as the cluster holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedWorkload {
    /// Its uid.
    pub uid: String,
    /// `spec.replicas` (a missing value means 1).
    pub replicas: i32,
}

/// An object carrying the session's label, as the cluster holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedObject {
    /// Its kind.
    pub kind: ProxyKind,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether another object owns it (a pod of a proxy Deployment): the garbage collector
    /// removes it with its owner, so it is not deleted directly.
    pub owned: bool,
}

/// What the cluster holds now, as far as the session is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The original workload (`None`: it does not exist).
    pub original: Option<ObservedWorkload>,
    /// Objects with the label `telepresence=<session id>` and recorded proxies by name.
    pub objects: Vec<ObservedObject>,
}

/// One repair step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Scale the original back, pinned to its uid and to `spec.replicas == 0`.
    Restore {
        /// The Deployment.
        name: String,
        /// The uid it must still have.
        uid: String,
        /// The count to restore.
        replicas: i32,
    },
    /// Delete an object with a uid precondition.
    Delete {
        /// Its kind.
        kind: ProxyKind,
        /// Its name.
        name: String,
        /// The uid it must still have.
        uid: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Restore {
                name,
                replicas,
                uid,
            } => write!(
                f,
                "scale deployment/{name} to {replicas} (uid {uid}, if still at 0)"
            ),
            Action::Delete { kind, name, uid } => {
                write!(f, "delete {}/{name} (uid {uid})", kind.resource())
            }
        }
    }
}

/// The decision for a dead session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What to do, in order: the original first (as Telepresence does), then the proxies.
    pub actions: Vec<Action>,
    /// Why a person must look, each with the command they could run.
    pub attention: Vec<String>,
}

impl Plan {
    /// Whether Telepresence's own cleanup left nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.attention.is_empty()
    }
}

/// Plans the repair of a session whose process is gone.
pub fn plan(rec: &SessionRecord, obs: &Observed) -> Plan {
    let mut p = Plan::default();
    let ns = &rec.cluster.namespace;
    let ctx = &rec.cluster.context;
    if let Mode::Swap { .. } = rec.invocation.mode
        && let Some(orig) = &rec.original
    {
        let scale_cmd = |n: &str| {
            format!(
                "kubectl --context {ctx} --namespace {ns} scale deployment {} --replicas={n}",
                orig.name
            )
        };
        match (&obs.original, orig.replicas, orig.source) {
            (None, _, _) => p.attention.push(format!(
                "deployment/{} no longer exists; nothing to scale back",
                orig.name
            )),
            (Some(now), _, _) if orig.uid.as_ref().is_some_and(|u| *u != now.uid) => {
                p.attention.push(format!(
                    "deployment/{} was replaced (uid {} -> {}) since the session started; check it and, if needed, run: {}",
                    orig.name,
                    orig.uid.as_deref().unwrap_or("?"),
                    now.uid,
                    scale_cmd(&orig.replicas.map_or("<replicas>".into(), |r| r.to_string()))
                ))
            }
            (Some(now), Some(want), src) if src != ReplicaSource::Uncertain => {
                if now.replicas == want {
                    // Already back (Telepresence's own cleanup, or a person).
                } else if now.replicas == 0 && want > 0 {
                    p.actions.push(Action::Restore {
                        name: orig.name.clone(),
                        uid: now.uid.clone(),
                        replicas: want,
                    });
                } else {
                    p.attention.push(format!(
                        "deployment/{} has {} replicas, neither 0 nor the original {want}: someone rescaled it during the session; left as is (to restore: {})",
                        orig.name,
                        now.replicas,
                        scale_cmd(&want.to_string())
                    ));
                }
            }
            (Some(now), _, _) if now.replicas != 0 => {
                // The count was never known, but the workload runs again: nothing to do.
            }
            (Some(_), _, _) => p.attention.push(format!(
                "deployment/{} is at 0 replicas and its original count is unknown (the agent saw the session too late and Telepresence's log did not have it); run: {}",
                orig.name,
                scale_cmd("<replicas>")
            )),
        }
    }
    let Some(id) = rec.telepresence_id.as_deref() else {
        if !rec.proxies.is_empty() {
            p.attention.push(
                "proxy objects were recorded but the Telepresence session id is unknown; not deleting anything".to_string(),
            );
        }
        return p;
    };
    let mut seen = std::collections::BTreeSet::new();
    for o in &obs.objects {
        if o.labels.get("telepresence").map(String::as_str) != Some(id) {
            if rec
                .proxies
                .iter()
                .any(|r| r.kind == o.kind && r.name == o.name)
            {
                p.attention.push(format!(
                    "{}/{} no longer carries telepresence={id} (uid {}); not deleting it",
                    o.kind.resource(),
                    o.name,
                    o.uid
                ));
            }
            continue;
        }
        if o.owned {
            continue;
        }
        if let Some(r) = rec
            .proxies
            .iter()
            .find(|r| r.kind == o.kind && r.name == o.name)
            && r.uid != o.uid
        {
            p.attention.push(format!(
                "{}/{} was replaced (uid {} -> {}) by another object carrying the same session label; not deleting it",
                o.kind.resource(),
                o.name,
                r.uid,
                o.uid
            ));
            continue;
        }
        if seen.insert((o.kind, o.name.clone())) {
            p.actions.push(Action::Delete {
                kind: o.kind,
                name: o.name.clone(),
                uid: o.uid.clone(),
            });
        }
    }
    // Delete in Telepresence's order: the proxy workload, then its service.
    p.actions.sort_by_key(|a| match a {
        Action::Restore { .. } => (0, String::new()),
        Action::Delete { kind, name, .. } => (1 + *kind as u8, name.clone()),
    });
    p
}
