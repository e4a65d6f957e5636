//! The repair planner: from a session's record and what the cluster holds now, decide what
//! to do. Pure: no I/O, table-tested.
//!
//! # Guarantees
//! - Only objects that carry `telepresence=<session id>` are ever deleted, each with its
//!   observed uid as precondition; a recorded object whose uid changed is left alone.
//! - The original is only rescaled when it is the same object (uid) and still at 0 replicas,
//!   and when its original count is known; every other case is reported for a person.

use std::collections::BTreeMap;

use super::reason::Attention;
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
    /// Whether its deletion has begun (it has a `deletionTimestamp`): a pod stays
    /// `Terminating` for its grace period after a delete, and deleting it again changes
    /// nothing, so it is not planned again.
    pub deleting: bool,
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
    pub attention: Vec<Attention>,
}

impl Plan {
    /// Whether Telepresence's own cleanup left nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.attention.is_empty()
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Plans the repair of a session whose process is gone.
pub fn plan(rec: &SessionRecord, obs: &Observed) -> Plan {
    let mut p = Plan::default();
    plan_original(rec, obs, &mut p);
    match rec.telepresence_id.as_deref() {
        Some(id) => plan_proxies(rec, obs, id, &mut p),
        // Without the id nothing is provably the session's: report, never delete.
        None if !rec.proxies.is_empty() => p.attention.push(Attention::ProxiesWithoutId),
        None if !obs.objects.is_empty() => {
            let objects = obs
                .objects
                .iter()
                .map(|o| format!("{}/{}", o.kind.resource(), o.name))
                .collect();
            p.attention.push(Attention::LabelledWithoutId { objects });
        }
        None => {}
    }
    p
}

/// The original of a swap: restored only when it is the same object, at 0, with a count
/// from evidence; anything else is for a person.
fn plan_original(rec: &SessionRecord, obs: &Observed, p: &mut Plan) {
    let ns = &rec.cluster.namespace;
    let ctx = &rec.cluster.context;
    if let Mode::Swap { .. } = rec.invocation.mode
        && let Some(orig) = &rec.original
    {
        let kubeconfig = std::env::join_paths(&rec.cluster.kubeconfig)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A sweeper's record has neither (it runs with its own in-cluster account).
        let env = if kubeconfig.is_empty() {
            String::new()
        } else {
            format!("KUBECONFIG={} ", shell_quote(&kubeconfig))
        };
        let context = if ctx.is_empty() {
            String::new()
        } else {
            format!("--context {} ", shell_quote(ctx))
        };
        let scale_cmd = |n: &str| {
            format!(
                "{env}kubectl {context}--namespace {} scale deployment {} --replicas={n}",
                shell_quote(ns),
                shell_quote(&orig.name)
            )
        };
        let name = orig.name.clone();
        match (&obs.original, orig.replicas, orig.source) {
            (None, _, _) => p.attention.push(Attention::OriginalGone { name }),
            (Some(now), _, _) if orig.uid.as_ref().is_some_and(|u| *u != now.uid) => {
                p.attention.push(Attention::OriginalReplaced {
                    name,
                    was: orig.uid.clone(),
                    now: now.uid.clone(),
                    run: scale_cmd(&orig.replicas.map_or("<replicas>".into(), |r| r.to_string())),
                })
            }
            (Some(now), Some(want), src) if src != ReplicaSource::Uncertain => {
                if now.replicas == want {
                    // Already back (Telepresence's own cleanup, or a person).
                } else if now.replicas == 0 && want > 0 {
                    p.actions.push(Action::Restore {
                        name,
                        uid: now.uid.clone(),
                        replicas: want,
                    });
                } else {
                    p.attention.push(Attention::Rescaled {
                        name,
                        now: now.replicas,
                        want,
                        run: scale_cmd(&want.to_string()),
                    });
                }
            }
            (Some(now), _, _) if now.replicas != 0 => {
                // The count was never known, but the workload runs again: nothing to do.
            }
            (Some(_), _, _) => p.attention.push(Attention::ReplicasUnknown {
                name,
                run: scale_cmd("<replicas>"),
            }),
        }
    }
    if let Mode::Swap { deployment, .. } = &rec.invocation.mode
        && rec.original.is_none()
    {
        p.attention.push(Attention::OriginalNeverRecorded {
            name: deployment.clone(),
        });
    }
}

/// The objects that carry the session's label `id`: each deleted with its observed uid,
/// unless it is on its way out, owned by a proxy Deployment, or not what was recorded.
fn plan_proxies(rec: &SessionRecord, obs: &Observed, id: &str, p: &mut Plan) {
    let mut seen = std::collections::BTreeSet::new();
    for o in &obs.objects {
        // Already on its way out: deleted by Telepresence, a person, or this agent before it
        // was restarted (or lost the cluster's answer).
        if o.deleting {
            continue;
        }
        if o.labels.get("telepresence").map(String::as_str) != Some(id) {
            if rec
                .proxies
                .iter()
                .any(|r| r.kind == o.kind && r.name == o.name)
            {
                p.attention.push(Attention::LabelLost {
                    kind: o.kind,
                    name: o.name.clone(),
                    id: id.to_string(),
                    uid: o.uid.clone(),
                });
            }
            continue;
        }
        // Pods of a proxy Deployment go with it (garbage collection). Any other object
        // with the label is the session's even if it has an owner: a 0.105 proxy is a deep
        // copy of the original's metadata, ownerReferences included.
        if o.owned && o.kind == ProxyKind::Pod {
            continue;
        }
        if let Some(r) = rec
            .proxies
            .iter()
            .find(|r| r.kind == o.kind && r.name == o.name)
            && r.uid != o.uid
        {
            p.attention.push(Attention::ProxyReplaced {
                kind: o.kind,
                name: o.name.clone(),
                was: r.uid.clone(),
                now: o.uid.clone(),
            });
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
}

#[cfg(test)]
mod tests;
