//! Why a session changed state, typed: what the journal's history says, and what a person
//! is told when a session needs them. Each reason renders to the line the journal, `status`,
//! the log and the desktop notification show.

use std::fmt;

use crate::session::{ProxyKind, ReplicaSource};

/// Why a session needs a person (each with the command they could run, where there is
/// one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attention {
    /// The session ended before the kubeconfig named a cluster.
    EndedBeforeCluster(String),
    /// No client could be made for the session's cluster, and trying again will not help.
    NoClient(String),
    /// The session's workload could not be read, and trying again will not help.
    WorkloadUnreadable(String),
    /// The original Deployment is gone.
    OriginalGone { name: String },
    /// The original Deployment was replaced by another of the same name.
    OriginalReplaced {
        name: String,
        was: Option<String>,
        now: String,
        run: String,
    },
    /// The original was rescaled by someone during the session.
    Rescaled {
        name: String,
        now: i32,
        want: i32,
        run: String,
    },
    /// The original is at 0 and no evidence gives its count.
    ReplicasUnknown { name: String, run: String },
    /// The session died before its original could be read.
    OriginalNeverRecorded { name: String },
    /// Proxies were recorded, but which session they belong to was never proven.
    ProxiesWithoutId,
    /// Labelled objects were made during a session whose id was never proven.
    LabelledWithoutId { objects: Vec<String> },
    /// A recorded proxy lost the session's label.
    LabelLost {
        kind: ProxyKind,
        name: String,
        id: String,
        uid: String,
    },
    /// A recorded proxy was replaced by another object with the session's label.
    ProxyReplaced {
        kind: ProxyKind,
        name: String,
        was: String,
        now: String,
    },
    /// The restore's preconditions failed: the original changed meanwhile.
    RestoreConflict { name: String },
    /// The delete's uid precondition failed: the object was replaced meanwhile.
    DeleteConflict { kind: ProxyKind, name: String },
    /// The cluster refused, or a step failed for good; `rbac` when the answer was 403.
    Refused {
        problem: String,
        rbac: bool,
        key: String,
    },
    /// Another live session uses the same Telepresence session or workload.
    LiveTwin { key: String, pid: u32 },
    /// `dry_run` is on: the plan is shown, not carried out.
    DryRun { key: String },
    /// `telepolice-agent repair` failed.
    HandRepairFailed(String),
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attention::EndedBeforeCluster(e) => {
                write!(f, "the session ended before its cluster could be known: {e}")
            }
            Attention::NoClient(e) => write!(f, "cannot talk to the session's cluster: {e}"),
            Attention::WorkloadUnreadable(e) => write!(f, "cannot read the session's workload: {e}"),
            Attention::OriginalGone { name } => {
                write!(f, "deployment/{name} no longer exists; nothing to scale back")
            }
            Attention::OriginalReplaced { name, was, now, run } => write!(
                f,
                "deployment/{name} was replaced (uid {} -> {now}) since the session started; check it and, if needed, run: {run}",
                was.as_deref().unwrap_or("?")
            ),
            Attention::Rescaled {
                name,
                now,
                want,
                run,
            } => write!(
                f,
                "deployment/{name} has {now} replicas, neither 0 nor the original {want}: someone rescaled it during the session; left as is (to restore: {run})"
            ),
            Attention::ReplicasUnknown { name, run } => write!(
                f,
                "deployment/{name} is at 0 replicas and its original count is unknown (the agent saw the session too late and Telepresence's log did not have it); run: {run}"
            ),
            Attention::OriginalNeverRecorded { name } => write!(
                f,
                "the original deployment/{name} was never recorded (the session died before the agent could read it); check its replica count"
            ),
            Attention::ProxiesWithoutId => f.write_str(
                "proxy objects were recorded but the Telepresence session id is unknown; not deleting anything",
            ),
            Attention::LabelledWithoutId { objects } => write!(
                f,
                "the Telepresence session id was never learned; objects with a telepresence label were created during the session and may be its own: {}; not deleting them",
                objects.join(", ")
            ),
            Attention::LabelLost { kind, name, id, uid } => write!(
                f,
                "{}/{name} no longer carries telepresence={id} (uid {uid}); not deleting it",
                kind.resource()
            ),
            Attention::ProxyReplaced {
                kind,
                name,
                was,
                now,
            } => write!(
                f,
                "{}/{name} was replaced (uid {was} -> {now}) by another object carrying the same session label; not deleting it",
                kind.resource()
            ),
            Attention::RestoreConflict { name } => write!(
                f,
                "deployment/{name} changed while being restored (uid or replicas no longer as recorded); left as is"
            ),
            Attention::DeleteConflict { kind, name } => write!(
                f,
                "{}/{name} was replaced by another object; not deleted",
                kind.resource()
            ),
            Attention::Refused { problem, rbac, key } => {
                if *rbac {
                    f.write_str("the cluster refused (RBAC): ")?;
                }
                write!(
                    f,
                    "{problem}; once that is fixed, run: telepolice-agent repair {key}"
                )
            }
            Attention::LiveTwin { key, pid } => write!(
                f,
                "session {key} (pid {pid}) is alive and uses the same Telepresence session or workload; not repairing while it runs"
            ),
            Attention::DryRun { key } => write!(
                f,
                "dry run: repairs planned but not done (to carry them out: telepolice-agent repair {key})"
            ),
            Attention::HandRepairFailed(e) => write!(f, "repair by hand failed: {e}"),
        }
    }
}

/// Why a session moved to its next state (or, staying in it, what was learnt): one line of
/// its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The Telepresence process was found.
    Found { pid: u32 },
    /// Something the agent cannot read of a session it follows.
    Blind(String),
    /// The kubeconfig does not name a cluster yet.
    ClusterNotYet(String),
    /// The kubeconfig names the cluster now.
    ClusterFound { server: String, context: String },
    /// The cluster is outside the configured scope.
    OutOfScope,
    /// The mode changes no workload.
    NothingToRecord,
    /// The original workload and its replica count, with where that count came from.
    Original {
        name: String,
        replicas: Option<i32>,
        source: ReplicaSource,
    },
    /// Telepresence's session id, and the evidence for it.
    SessionId { id: String, because: String },
    /// The session's shell died (and Telepresence was sent SIGTERM).
    ShellDied,
    /// A proxy object of the session.
    Proxy {
        kind: ProxyKind,
        name: String,
        uid: String,
    },
    /// The Telepresence process exited.
    Exited,
    /// The repair waits for the cluster.
    Waiting(String),
    /// The repair's steps are journaled.
    Planned(usize),
    /// Every step was carried out.
    Repaired,
    /// A repair begun earlier had done everything before it was journaled as done.
    RepairWasComplete,
    /// Telepresence cleaned up after itself.
    NothingToRepair,
    /// `telepolice-agent repair` was run.
    HandRepair,
    /// An in-cluster sweeper holds the session's heartbeat Lease.
    TakenOver { holder: String },
    /// A person must look (one reason or several).
    Attention(Vec<Attention>),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Found { pid } => write!(f, "Telepresence process {pid} found"),
            Why::Blind(why) => f.write_str(why),
            Why::ClusterNotYet(p) => write!(
                f,
                "cannot tell which cluster the session uses yet: {p}; will look again"
            ),
            Why::ClusterFound { server, context } => {
                write!(f, "cluster {server} (context {context}) found")
            }
            Why::OutOfScope => f.write_str("out of the configured scope"),
            Why::NothingToRecord => f.write_str("no workload to record in this mode"),
            Why::Original {
                name,
                replicas,
                source,
            } => match (replicas, source) {
                (Some(r), ReplicaSource::Observed) => {
                    write!(f, "deployment/{name} has {r} replicas (observed)")
                }
                (Some(r), ReplicaSource::Earlier) => write!(
                    f,
                    "deployment/{name} had {r} replicas (the agent's own earlier observation; it was late this time)"
                ),
                (Some(r), ReplicaSource::Log) => write!(
                    f,
                    "deployment/{name} had {r} replicas (from telepresence.log; the agent was late)"
                ),
                (Some(r), ReplicaSource::LastApplied) => write!(
                    f,
                    "deployment/{name} had {r} replicas (from last-applied-configuration; the agent was late)"
                ),
                _ => write!(
                    f,
                    "the original replica count of deployment/{name} is unknown"
                ),
            },
            Why::SessionId { id, because } => {
                write!(f, "Telepresence session id {id} ({because})")
            }
            Why::ShellDied => f.write_str("the session's shell died"),
            Why::Proxy { kind, name, uid } => {
                write!(f, "proxy {}/{name} (uid {uid})", kind.resource())
            }
            Why::Exited => f.write_str("the Telepresence process exited"),
            Why::Waiting(problem) => write!(f, "{problem}; will retry"),
            Why::Planned(n) => write!(f, "{n} repair action(s) planned"),
            Why::Repaired => f.write_str("repaired what the session left"),
            Why::RepairWasComplete => f.write_str(
                "nothing left to repair: the repair begun earlier is complete (its last steps were carried out, but not journaled, before the agent stopped or lost the cluster)",
            ),
            Why::NothingToRepair => f.write_str("Telepresence's own cleanup left nothing to repair"),
            Why::HandRepair => f.write_str("repair by hand requested"),
            Why::TakenOver { holder } => write!(
                f,
                "the in-cluster sweeper {holder} took the session's heartbeat Lease and repairs the cluster; this agent only stopped the local helpers (the sweeper's Events on the Lease and the session's objects say what it did)"
            ),
            Why::Attention(all) => {
                for (i, a) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{a}")?;
                }
                Ok(())
            }
        }
    }
}
