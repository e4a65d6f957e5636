//! The journal's unit: one Telepresence session as the agent recorded it, its lifecycle
//! state, and the history of how it got there.
//!
//! The record is the single source of truth for a repair: what the original workload was
//! (uid and replica count, and where that count came from), which proxy objects the session
//! created (with uids), and which cluster the session talked to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::platform::ProcessId;
use crate::telepresence::Invocation;

/// The journal schema this build writes and reads. A record with a higher number was
/// written by a newer agent and is refused rather than misread.
pub const SCHEMA: u32 = 1;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// The process was found; nothing about the cluster is known yet.
    Seen,
    /// The target workload and its original replicas are journaled.
    Recorded,
    /// Proxy objects were found and journaled.
    Active,
    /// The process exited and Telepresence's own cleanup left nothing to do.
    Ended,
    /// The process is gone and the cluster still holds what it changed.
    Orphaned,
    /// Repair actions are being carried out.
    CleaningUp,
    /// The agent repaired what the session left.
    Cleaned,
    /// Something forbids a safe automatic repair; a person must look.
    NeedsAttention,
}

impl State {
    /// Every state, in the order of a session's life.
    pub const ALL: [State; 8] = [
        State::Seen,
        State::Recorded,
        State::Active,
        State::Ended,
        State::Orphaned,
        State::CleaningUp,
        State::Cleaned,
        State::NeedsAttention,
    ];

    /// Whether the session needs no more work from the agent.
    pub fn is_final(self) -> bool {
        matches!(self, State::Ended | State::Cleaned | State::NeedsAttention)
    }

    /// The name `status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Seen => "Seen",
            State::Recorded => "Recorded",
            State::Active => "Active",
            State::Ended => "Ended",
            State::Orphaned => "Orphaned",
            State::CleaningUp => "CleaningUp",
            State::Cleaned => "Cleaned",
            State::NeedsAttention => "NeedsAttention",
        }
    }
}

/// Where the original replica count came from, in order of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaSource {
    /// Read from the cluster before Telepresence scaled the workload down.
    Observed,
    /// The agent's own observation of the same Deployment (same uid) in an earlier session.
    Earlier,
    /// Read from the JSON of the original that Telepresence 0.106+ writes to its log.
    Log,
    /// Read from the `kubectl.kubernetes.io/last-applied-configuration` annotation.
    LastApplied,
    /// Not known: the agent will not guess.
    Uncertain,
    /// Given by a person (`telepolice-agent repair --replicas N`).
    Manual,
}

/// The workload a swap replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// The Deployment's name.
    pub name: String,
    /// Its uid when recorded (a different uid later means it was redeployed).
    pub uid: Option<String>,
    /// Its replica count before the swap, when known.
    pub replicas: Option<i32>,
    /// Where `replicas` came from.
    pub source: ReplicaSource,
    /// Its `spec.selector.matchLabels` when recorded: a swap's proxy carries them, which
    /// tells it from the proxy of another Deployment with the same first 17 characters.
    /// Empty when unknown (records of older agents, a Deployment that was not found).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub selector: std::collections::BTreeMap<String, String>,
}

/// The kinds of object a Telepresence 0.x session creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProxyKind {
    /// A proxy Deployment (0.105, or `TELEPRESENCE_USE_DEPLOYMENT`).
    Deployment,
    /// A bare proxy Pod (0.106+).
    Pod,
    /// A Service for `--expose`.
    Service,
}

impl ProxyKind {
    /// The kubectl resource name.
    pub fn resource(self) -> &'static str {
        match self {
            ProxyKind::Deployment => "deployment",
            ProxyKind::Pod => "pod",
            ProxyKind::Service => "service",
        }
    }
}

/// A cluster object the session created.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProxyObject {
    /// Its kind.
    pub kind: ProxyKind,
    /// Its name.
    pub name: String,
    /// Its uid, the precondition of its deletion.
    pub uid: String,
}

/// The cluster a session talked to, pinned when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBinding {
    /// The kubeconfig files the session's kubectl read, in `KUBECONFIG` order.
    pub kubeconfig: Vec<PathBuf>,
    /// The context it used.
    pub context: String,
    /// The namespace it used.
    pub namespace: String,
    /// The API server URL the context pointed at; cleanup refuses any other.
    pub server: String,
    /// The session's `PATH` and `HOME`, for kubeconfig exec credential plugins.
    pub exec_env: Vec<(String, String)>,
}

/// What the agent records of a Telepresence 2 session: the connector's daemon id and
/// where its files are, and the traffic-manager session it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tel2 {
    /// The `--name` the connector was started with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its Telepresence cache dir (`~/.cache/telepresence`), from its environment.
    pub cache_dir: PathBuf,
    /// The daemon id its files are named after, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_id: Option<String>,
    /// The session cache file the session id was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_file: Option<PathBuf>,
    /// The traffic-manager session id, once read from that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The cluster id the session names (the manager namespace's uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The traffic-manager's namespace.
    pub manager_namespace: String,
    /// The session's intercepts, as the traffic-manager listed them when last asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intercepts: Vec<String>,
    /// For a `telepresence intercept NAME -- CMD` process (not a connector): the intercept
    /// it holds while its command runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<String>,
    /// The `telepresence` program the process runs (what `leave` is run with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<PathBuf>,
}

/// One state change, kept as the session's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When (RFC 3339).
    pub at: String,
    /// The state entered.
    pub state: State,
    /// Why.
    pub reason: String,
}

/// One repair action and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// When (RFC 3339).
    pub at: String,
    /// What was (or, in dry-run mode, would have been) done.
    pub action: String,
    /// `done`, `skipped: ...`, `failed: ...`, `dry-run`.
    pub outcome: String,
}

/// Everything the agent knows about one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The journal schema version (see [`SCHEMA`]).
    pub schema: u32,
    /// The agent's key for the session: `<pid>-<start ticks>`, also the journal file name.
    pub key: String,
    /// The Telepresence process.
    pub process: ProcessId,
    /// Its command line.
    pub argv: Vec<String>,
    /// Its working directory (where `telepresence.log` is by default).
    pub cwd: Option<PathBuf>,
    /// The process that started it (usually the user's shell).
    pub parent: Option<ProcessId>,
    /// Its controlling terminal (0 = none).
    pub tty: u32,
    /// Its session id (`setsid`), which its terminal's shell leads.
    #[serde(default)]
    pub sid: u32,
    /// The user it runs as.
    pub uid: u32,
    /// What it was asked to do.
    pub invocation: Invocation,
    /// The cluster it talks to.
    pub cluster: ClusterBinding,
    /// Telepresence's own session id (32 hex), once known.
    pub telepresence_id: Option<String>,
    /// Where the session makes its `tel-*` dir (its `TMPDIR`), read while it was alive.
    #[serde(default)]
    pub tmp_root: Option<PathBuf>,
    /// The workload a swap replaced.
    pub original: Option<Original>,
    /// The proxy objects found, with their uids.
    pub proxies: Vec<ProxyObject>,
    /// The current state.
    pub state: State,
    /// Every state change.
    pub history: Vec<Transition>,
    /// Every repair action.
    pub actions: Vec<ActionRecord>,
    /// A Telepresence 2 session's connector and traffic-manager session (absent for 0.x,
    /// whose `invocation`, `original` and `proxies` say what it changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tel2: Option<Tel2>,
}

impl SessionRecord {
    /// The journal key for a process.
    pub fn key_for(process: ProcessId) -> String {
        format!("{}-{}", process.pid, process.start_ticks)
    }

    /// Moves to `state`, remembering why.
    pub fn transition(&mut self, state: State, reason: impl Into<String>) {
        self.state = state;
        self.history.push(Transition {
            at: now(),
            state,
            reason: reason.into(),
        });
    }

    /// Remembers an action and its outcome.
    pub fn act(&mut self, action: impl Into<String>, outcome: impl Into<String>) {
        self.actions.push(ActionRecord {
            at: now(),
            action: action.into(),
            outcome: outcome.into(),
        });
    }

    /// What a repair did, in one line: the actions carried out (the first five, then how
    /// many more), for the log and `status`.
    pub fn repair_summary(&self) -> String {
        let done: Vec<&str> = self
            .actions
            .iter()
            .filter(|a| a.outcome == "done")
            .map(|a| a.action.as_str())
            .collect();
        if done.is_empty() {
            return "nothing needed doing".to_string();
        }
        let mut text = done.iter().take(5).copied().collect::<Vec<_>>().join("; ");
        if done.len() > 5 {
            text.push_str(&format!("; and {} more", done.len() - 5));
        }
        text
    }

    /// A short description of the target for `status`.
    pub fn target(&self) -> String {
        use crate::telepresence::Mode;
        if let Some(t) = &self.tel2 {
            if let Some(name) = &t.intercept {
                return format!("2.x intercept {name} bound to a command");
            }
            return match (&t.daemon_id, &t.session_id) {
                (Some(d), Some(s)) => format!("2.x {d} session {s}"),
                (Some(d), None) => format!("2.x {d}"),
                (None, _) => "2.x connector".to_string(),
            };
        }
        match &self.invocation.mode {
            Mode::Swap { deployment, .. } => format!("swap deployment/{deployment}"),
            Mode::NewDeployment { name: Some(n) } => format!("new {n}"),
            Mode::NewDeployment { name: None } => "new (default name)".to_string(),
            Mode::ExistingDeployment { name } => format!("existing deployment/{name}"),
        }
    }

    /// When the session was first seen (RFC 3339), if known.
    pub fn seen_at(&self) -> Option<&str> {
        self.history.first().map(|t| t.at.as_str())
    }

    /// Adds a proxy object unless it is already recorded; returns whether it was new.
    pub fn add_proxy(&mut self, obj: ProxyObject) -> bool {
        if self.proxies.contains(&obj) {
            return false;
        }
        self.proxies.push(obj);
        self.proxies.sort();
        true
    }
}

/// Now, RFC 3339 in UTC with seconds.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Test fixtures that read like sentences:
/// `SessionRecord::test().swapping("app", 2).with_id(ID).with_proxy(ProxyKind::Pod, "app-…", "uid-1")`.
#[cfg(test)]
impl SessionRecord {
    /// The uid [`swapping`](Self::swapping) records for the original Deployment.
    pub(crate) const TEST_ORIGINAL_UID: &'static str = "uid-original";

    /// A session of process 4242 in `--new-deployment` mode with a default name, bound to
    /// context `dev` and namespace `ns`, with no Telepresence id, no original and no proxies
    /// yet, in state `Recorded`.
    pub(crate) fn test() -> Self {
        let process = ProcessId {
            pid: 4242,
            start_ticks: 1000,
        };
        Self {
            schema: SCHEMA,
            key: Self::key_for(process),
            process,
            argv: vec!["python3".into(), "/usr/local/bin/telepresence".into()],
            cwd: Some(PathBuf::from("/home/dev/project")),
            parent: Some(ProcessId {
                pid: 4000,
                start_ticks: 900,
            }),
            tty: 34816,
            sid: 4000,
            uid: 1000,
            invocation: Invocation {
                run_shell: true,
                ..Invocation::default()
            },
            cluster: ClusterBinding {
                kubeconfig: vec![PathBuf::from("/home/dev/.kube/config")],
                context: "dev".into(),
                namespace: "ns".into(),
                server: "https://127.0.0.1:6443".into(),
                exec_env: vec![("HOME".into(), "/home/dev".into())],
            },
            telepresence_id: None,
            tmp_root: None,
            original: None,
            proxies: vec![],
            state: State::Recorded,
            history: vec![],
            actions: vec![],
            tel2: None,
        }
    }

    /// The session swaps `deployment`, whose `replicas` were observed before the swap, with
    /// uid [`TEST_ORIGINAL_UID`](Self::TEST_ORIGINAL_UID).
    pub(crate) fn swapping(mut self, deployment: &str, replicas: i32) -> Self {
        use crate::telepresence::Mode;
        self.invocation.mode = Mode::Swap {
            deployment: deployment.into(),
            container: None,
        };
        self.original = Some(Original {
            name: deployment.into(),
            uid: Some(Self::TEST_ORIGINAL_UID.into()),
            replicas: Some(replicas),
            source: ReplicaSource::Observed,
            selector: [("app".to_string(), deployment.to_string())].into(),
        });
        self
    }

    /// The session creates a new proxy named `name` (`--new-deployment NAME`).
    pub(crate) fn creating(mut self, name: &str) -> Self {
        use crate::telepresence::Mode;
        self.invocation.mode = Mode::NewDeployment {
            name: Some(name.into()),
        };
        self
    }

    /// The original's replica count is `replicas`, known from `source`.
    ///
    /// # Panics
    /// When no original was recorded (call [`swapping`](Self::swapping) first).
    pub(crate) fn replicas_from(mut self, source: ReplicaSource, replicas: Option<i32>) -> Self {
        let o = self
            .original
            .as_mut()
            .expect("replicas_from needs an original: call swapping() first");
        o.replicas = replicas;
        o.source = source;
        self
    }

    /// The original's uid was recorded as `uid` (`None`: not known).
    ///
    /// # Panics
    /// When no original was recorded (call [`swapping`](Self::swapping) first).
    pub(crate) fn original_uid(mut self, uid: Option<&str>) -> Self {
        self.original
            .as_mut()
            .expect("original_uid needs an original: call swapping() first")
            .uid = uid.map(String::from);
        self
    }

    /// Telepresence's session id is known to be `id`.
    pub(crate) fn with_id(mut self, id: &str) -> Self {
        self.telepresence_id = Some(id.into());
        self
    }

    /// The session created `kind/name` with `uid`.
    pub(crate) fn with_proxy(mut self, kind: ProxyKind, name: &str, uid: &str) -> Self {
        self.add_proxy(ProxyObject {
            kind,
            name: name.into(),
            uid: uid.into(),
        });
        self
    }

    /// The session's process is `pid` (started at tick `start_ticks`); the key follows.
    pub(crate) fn with_process(mut self, pid: u32, start_ticks: u64) -> Self {
        self.process = ProcessId { pid, start_ticks };
        self.key = Self::key_for(self.process);
        self
    }

    /// The session is in `state`, having got there for `reason`.
    pub(crate) fn in_state(mut self, state: State, reason: &str) -> Self {
        self.transition(state, reason);
        self
    }
}
