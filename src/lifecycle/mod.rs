//! A session's life, decided without I/O: given its record and what the agent just
//! learnt (an [`Event`]), [`step`] says what the record learns, which state comes next and
//! why (typed: [`Why`], [`Attention`]), and which cluster actions to carry out. The daemon
//! gathers the events (processes, the cluster, the journal) and carries out the steps; every
//! decision is here and table-tested.
//!
//! # The lifecycle
//! ```text
//! Found ─────────────────────────► Seen ──ClusterFound──► Seen
//!                                   │  └─OutOfScope──────► Ended (forgotten)
//!                                   │  └─EndedBeforeCluster, NoClient,
//!                                   │    WorkloadUnreadable ► NeedsAttention
//!                                   ├─Workload / NoWorkload► Recorded
//! Recorded, Active ──IdProven, ShellDied──► (same state)
//!                  ──ProxySeen (new)──────► Active
//!                  ──Exited───────────────► Orphaned
//! Orphaned ──Unreachable──► Orphaned (the repair waits)
//!          ──Refused──────► NeedsAttention
//!          ──ClusterNow───► Ended       (nothing to repair)
//!                         ► Cleaned     (a repair begun earlier had finished)
//!                         ► NeedsAttention (a live twin; a dry run; nothing to
//!                                          carry out, only things for a person)
//!                         ► CleaningUp  (actions planned, journaled first)
//! CleaningUp ──Carried────► Cleaned | NeedsAttention
//!            ──Unreachable► Orphaned (re-planned from the cluster as it is)
//! any ──HandRepair──► (same state) ──HandRepairFailed──► NeedsAttention
//! any ──TakenOver───► Ended (an in-cluster sweeper holds the session's heartbeat Lease)
//! ```
//!
//! # Where a new kind of session plugs in
//! A kind of session (Telepresence 0.x today) brings its own parsing (`crate::telepresence`)
//! and its own events; the states, the reasons and the write-ahead rule are shared.

pub mod evidence;
pub mod plan;
pub mod reason;
pub mod twin;

pub use evidence::{Fallbacks, WorkloadNow};
pub use plan::{Action, Observed, ObservedObject, ObservedWorkload, Plan};
pub use reason::{Attention, Why};

use crate::config::OnShellDeath;
use crate::session::{ClusterBinding, Original, ProxyKind, ProxyObject, SessionRecord, State};
use crate::telepresence::Mode;

/// What the agent learnt about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its process was found; `blind`: what cannot be read of it; `cluster_problem`: why
    /// its cluster is not known yet.
    Found {
        pid: u32,
        blind: Vec<String>,
        cluster_problem: Option<String>,
    },
    /// Its kubeconfig names a cluster now; `in_scope`: the configuration covers it.
    ClusterFound {
        binding: ClusterBinding,
        in_scope: bool,
    },
    /// It ended while its cluster was unknown.
    EndedBeforeCluster(String),
    /// No client can be made for its cluster, for good.
    NoClient(String),
    /// Its workload cannot be read, for good.
    WorkloadUnreadable(String),
    /// Its mode changes no workload.
    NoWorkload,
    /// The workload it swaps, as read now, with the evidence read when the agent was late.
    Workload {
        name: String,
        now: Option<WorkloadNow>,
        fallbacks: Fallbacks,
    },
    /// Its Telepresence session id is proven and claimed.
    IdProven { id: String, because: String },
    /// Its shell died, and Telepresence was sent SIGTERM (see [`terminate_on_shell_death`]).
    ShellDied,
    /// An object carrying its label; `owned`: another object owns it.
    ProxySeen { proxy: ProxyObject, owned: bool },
    /// Its process exited.
    Exited,
    /// Its repair cannot reach the cluster (the problem, as [`waiting_problem`] words it).
    Unreachable(String),
    /// Its repair was refused for good (the error, and the HTTP status if any).
    Refused { problem: String, code: Option<u16> },
    /// Its process is dead and this is the cluster now; `twin`: a live session holding the
    /// same Telepresence session or workload (key, pid).
    ClusterNow {
        observed: Observed,
        twin: Option<(String, u32)>,
        dry_run: bool,
    },
    /// The planned actions were carried out; `attention`: the plan's own, and the actions
    /// refused (see [`refused_action`]).
    Carried { attention: Vec<Attention> },
    /// A person ran `telepolice-agent repair`.
    HandRepair,
    /// It failed.
    HandRepairFailed(String),
    /// An in-cluster sweeper took the session's heartbeat Lease (its holder identity): the
    /// session is the sweeper's to repair now; the agent stops its local helpers only.
    TakenOver { holder: String },
}

/// What the record learns from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learn {
    /// The cluster its kubeconfig names.
    Cluster(ClusterBinding),
    /// The original workload.
    Original(Original),
    /// Telepresence's session id.
    Id(String),
    /// A proxy object.
    Proxy(ProxyObject),
}

/// What follows an event: applied to the record by [`apply`], then journaled (durably
/// before any of `execute` is carried out).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// What the record learns.
    pub learn: Option<Learn>,
    /// The state after the event.
    pub next: Option<State>,
    /// Why, one history line each (none: nothing to journal).
    pub why: Vec<Why>,
    /// Actions journaled with their outcome, as (action, outcome).
    pub acts: Vec<(String, &'static str)>,
    /// Cluster actions to carry out, in order, once the step is on disk.
    pub execute: Vec<Action>,
    /// What the plan asks a person to look at, said once `execute` is carried out (the
    /// start of [`Event::Carried`]'s `attention`).
    pub then_attention: Vec<Attention>,
    /// Whether the session's local helpers are stopped (before the step is applied).
    pub stop_helpers: bool,
    /// Whether the record is no longer kept (a session out of scope).
    pub forget: bool,
}

impl Step {
    fn to(state: State, why: Why) -> Self {
        Self {
            next: Some(state),
            why: vec![why],
            ..Self::default()
        }
    }

    fn attention(reasons: Vec<Attention>) -> Self {
        Self::to(State::NeedsAttention, Why::Attention(reasons))
    }

    fn learning(mut self, learn: Learn) -> Self {
        self.learn = Some(learn);
        self
    }

    /// Whether the step changes nothing.
    pub fn is_nothing(&self) -> bool {
        self.learn.is_none() && self.why.is_empty() && self.acts.is_empty()
    }
}

/// What follows `event` for the session `rec`.
pub fn step(rec: &SessionRecord, event: Event) -> Step {
    let here = rec.state;
    match event {
        Event::Found {
            pid,
            blind,
            cluster_problem,
        } => Step {
            next: Some(State::Seen),
            why: std::iter::once(Why::Found { pid })
                .chain(blind.into_iter().map(Why::Blind))
                .chain(cluster_problem.map(Why::ClusterNotYet))
                .collect(),
            ..Step::default()
        },
        Event::ClusterFound { binding, in_scope } => cluster_found(binding, in_scope),
        Event::EndedBeforeCluster(e) => Step::attention(vec![Attention::EndedBeforeCluster(e)]),
        Event::NoClient(e) => Step::attention(vec![Attention::NoClient(e)]),
        Event::WorkloadUnreadable(e) => Step::attention(vec![Attention::WorkloadUnreadable(e)]),
        Event::NoWorkload => Step::to(State::Recorded, Why::NothingToRecord),
        Event::Workload {
            name,
            now,
            fallbacks,
        } => {
            let original = evidence::original(&name, now, &fallbacks);
            let why = Why::Original {
                name,
                replicas: original.replicas,
                source: original.source,
            };
            Step::to(State::Recorded, why).learning(Learn::Original(original))
        }
        Event::IdProven { id, because } => Step::to(
            here,
            Why::SessionId {
                id: id.clone(),
                because,
            },
        )
        .learning(Learn::Id(id)),
        Event::ShellDied => Step::to(here, Why::ShellDied),
        Event::ProxySeen { proxy, owned } => proxy_seen(rec, proxy, owned),
        Event::Exited if matches!(here, State::Orphaned | State::CleaningUp) => Step::default(),
        Event::Exited => Step::to(State::Orphaned, Why::Exited),
        Event::Unreachable(problem) => Step::to(State::Orphaned, Why::Waiting(problem)),
        Event::Refused { problem, code } => Step::attention(vec![Attention::Refused {
            problem,
            rbac: code == Some(403),
            key: rec.key.clone(),
        }]),
        Event::ClusterNow {
            observed,
            twin,
            dry_run,
        } => decide_repair(rec, &observed, twin, dry_run),
        Event::Carried { attention } if attention.is_empty() => Step {
            stop_helpers: true,
            ..Step::to(State::Cleaned, Why::Repaired)
        },
        Event::Carried { attention } => Step {
            stop_helpers: true,
            ..Step::attention(attention)
        },
        Event::HandRepair => Step::to(here, Why::HandRepair),
        Event::HandRepairFailed(e) => Step::attention(vec![Attention::HandRepairFailed(e)]),
        Event::TakenOver { holder } => Step {
            stop_helpers: true,
            ..Step::to(State::Ended, Why::TakenOver { holder })
        },
    }
}

/// The session's kubeconfig names its cluster now: followed if in scope, else forgotten.
fn cluster_found(binding: ClusterBinding, in_scope: bool) -> Step {
    if !in_scope {
        return Step {
            forget: true,
            ..Step::to(State::Ended, Why::OutOfScope)
        };
    }
    let why = Why::ClusterFound {
        server: binding.server.clone(),
        context: binding.context.clone(),
    };
    Step::to(State::Seen, why).learning(Learn::Cluster(binding))
}

/// An object with the session's label: recorded once. Pods of a proxy Deployment are the
/// Deployment's; any other labelled object is recorded, owner or not (a 0.105 proxy copies
/// the original's ownerReferences).
fn proxy_seen(rec: &SessionRecord, proxy: ProxyObject, owned: bool) -> Step {
    if (owned && proxy.kind == ProxyKind::Pod) || rec.proxies.contains(&proxy) {
        return Step::default();
    }
    let why = Why::Proxy {
        kind: proxy.kind,
        name: proxy.name.clone(),
        uid: proxy.uid.clone(),
    };
    Step::to(State::Active, why).learning(Learn::Proxy(proxy))
}

/// The repair of a dead session, given the cluster as it is now.
fn decide_repair(
    rec: &SessionRecord,
    observed: &Observed,
    twin: Option<(String, u32)>,
    dry_run: bool,
) -> Step {
    if let Some((key, pid)) = twin {
        return Step::attention(vec![Attention::LiveTwin { key, pid }]);
    }
    let plan = plan::plan(rec, observed);
    if plan.is_empty() {
        let why = if repair_under_way(rec) {
            (State::Cleaned, Why::RepairWasComplete)
        } else {
            (State::Ended, Why::NothingToRepair)
        };
        return Step {
            stop_helpers: true,
            ..Step::to(why.0, why.1)
        };
    }
    let acts = |outcome| {
        plan.actions
            .iter()
            .map(|a| (a.to_string(), outcome))
            .collect()
    };
    if dry_run {
        let mut why = vec![Attention::DryRun {
            key: rec.key.clone(),
        }];
        why.extend(plan.attention.iter().cloned());
        return Step {
            acts: acts("dry-run: not done"),
            ..Step::attention(why)
        };
    }
    if plan.actions.is_empty() {
        // Only for a person: nothing to carry out, the helpers are stopped all the same.
        return Step {
            stop_helpers: true,
            ..Step::attention(plan.attention)
        };
    }
    // Write-ahead: the plan is durable before any of it is carried out.
    Step {
        acts: acts("planned"),
        execute: plan.actions.clone(),
        then_attention: plan.attention,
        ..Step::to(State::CleaningUp, Why::Planned(plan.actions.len()))
    }
}

/// Whether an earlier attempt (of this agent, or of one that was killed) began carrying out
/// a repair that is not journaled as finished: then a cluster that needs nothing more was
/// put back by the agent, not by Telepresence's own cleanup.
pub fn repair_under_way(rec: &SessionRecord) -> bool {
    !rec.state.is_final() && rec.history.iter().any(|t| t.state == State::CleaningUp)
}

/// Applies `step` to the record: what it learns, the actions, the transitions.
pub fn apply(rec: &mut SessionRecord, step: &Step) {
    match &step.learn {
        Some(Learn::Cluster(b)) => rec.cluster = b.clone(),
        Some(Learn::Original(o)) => rec.original = Some(o.clone()),
        Some(Learn::Id(id)) => rec.telepresence_id = Some(id.clone()),
        Some(Learn::Proxy(p)) => {
            rec.add_proxy(p.clone());
        }
        None => {}
    }
    for (action, outcome) in &step.acts {
        rec.act(action.clone(), *outcome);
    }
    if let Some(state) = step.next {
        for why in &step.why {
            rec.transition(state, why.to_string());
        }
    }
}

/// How a refused action reads to a person.
pub fn refused_action(action: &Action, problem: String, code: Option<u16>, key: &str) -> Attention {
    match (action, code) {
        (Action::Restore { name, .. }, Some(409 | 422)) => {
            Attention::RestoreConflict { name: name.clone() }
        }
        (Action::Delete { kind, name, .. }, Some(409)) => Attention::DeleteConflict {
            kind: *kind,
            name: name.clone(),
        },
        (_, code) => Attention::Refused {
            problem,
            rbac: code == Some(403),
            key: key.to_string(),
        },
    }
}

/// Why a repair waits, as a person reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The API server answered with this status.
    Answered(u16),
    /// No client could be built (a credential plugin failing, say).
    NoClient,
    /// The server did not answer.
    Unreachable,
    /// The journal could not record the plan.
    Journal,
}

/// The problem a waiting repair shows (`status`, the log, the record).
pub fn waiting_problem(wait: Wait, error: &str) -> String {
    match wait {
        Wait::Answered(code) => format!("the API server answered {code}: {error}"),
        Wait::NoClient => format!(
            "no client for the cluster (if a credential plugin fails, log in again): {error}"
        ),
        Wait::Unreachable => format!("cluster unreachable: {error}"),
        Wait::Journal => error.to_string(),
    }
}

/// Whether a session whose shell died is ended (SIGTERM to Telepresence): only when the
/// configuration says so, outside a dry run, and while it runs.
pub fn terminate_on_shell_death(policy: OnShellDeath, dry_run: bool, alive: bool) -> bool {
    policy == OnShellDeath::Terminate && !dry_run && alive
}

/// The Deployment a session swaps, whose original is recorded.
pub fn swapped(rec: &SessionRecord) -> Option<&str> {
    match &rec.invocation.mode {
        Mode::Swap { deployment, .. } => Some(deployment),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
