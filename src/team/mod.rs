//! Team mode, the pure part: the recovery facts a laptop agent leaves in the cluster, the
//! names of its heartbeat Leases, and the leader-election rule the in-cluster sweeper
//! follows ([`election`]).
//!
//! The facts are annotations under [`PREFIX`], written on the proxy object (a 0.x proxy Pod
//! or Deployment) and copied onto the session's heartbeat Lease: with them, a sweeper that
//! never saw the laptop can plan the same repair the laptop would
//! ([`Facts::record`] feeds [`crate::lifecycle::plan`]).

pub mod election;

use std::collections::BTreeMap;

use crate::session::{
    ClusterBinding, Original, ProxyKind, ProxyObject, ReplicaSource, SessionRecord, State,
};
use crate::telepresence::{Invocation, Mode};

/// The prefix of every annotation and label of ours.
pub const PREFIX: &str = "telepolice.dev/";
/// The schema of the facts this build writes; a higher one is refused, not misread.
pub const FACTS_SCHEMA: u32 = 1;
/// The label every heartbeat Lease carries, which the sweeper watches.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "telepolice-agent");
/// The opt-out annotation: `"false"` on a workload or namespace keeps the sweeper away.
pub const SWEEP_OPT_OUT: &str = "telepolice.dev/sweep";
/// How often a laptop renews a session's heartbeat (as the kubelet renews its node Lease).
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// The duration a heartbeat Lease declares (the kubelet's 40 s).
pub const HEARTBEAT_SECS: i32 = 40;

/// The annotation keys, without [`PREFIX`].
mod key {
    pub const SCHEMA: &str = "schema";
    pub const SESSION: &str = "session";
    pub const KIND: &str = "session-kind";
    pub const NAMESPACE: &str = "namespace";
    pub const MODE: &str = "mode";
    pub const ORIGINAL_KIND: &str = "original-kind";
    pub const ORIGINAL_NAME: &str = "original-name";
    pub const ORIGINAL_UID: &str = "original-uid";
    pub const ORIGINAL_REPLICAS: &str = "original-replicas";
    pub const REPLICAS_EVIDENCE: &str = "replicas-evidence";
    pub const PROXIES: &str = "proxies";
    pub const OWNER_HOST: &str = "owner-host";
    pub const OWNER_USER: &str = "owner-user";
    pub const AGENT_VERSION: &str = "agent-version";
    pub const MANAGER_NAMESPACE: &str = "manager-namespace";
}

/// `telepolice.dev/<key>`.
pub fn annotation(key: &str) -> String {
    format!("{PREFIX}{key}")
}

/// Which Telepresence made the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// 0.x: a proxy in the cluster, maybe a swapped original.
    Legacy,
    /// 2.x: a traffic-manager session.
    Tel2,
}

/// What a sweeper needs to repair a session it never saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// 0.x: the `telepresence` label's session id; 2.x: the traffic-manager session id.
    pub session: String,
    /// Which Telepresence.
    pub kind: SessionKind,
    /// The namespace the session's objects live in.
    pub namespace: String,
    /// 0.x: the swapped Deployment (`None`: no swap).
    pub swapped: Option<String>,
    /// 0.x: the original as recorded.
    pub original: Option<Original>,
    /// 0.x: the proxies recorded, with uids.
    pub proxies: Vec<ProxyObject>,
    /// The laptop that recorded it.
    pub owner_host: String,
    /// Its user.
    pub owner_user: String,
    /// The agent's version.
    pub agent_version: String,
    /// 2.x: the traffic-manager's namespace.
    pub manager_namespace: Option<String>,
}

/// Why annotations are not usable facts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// No annotation of ours: not recorded by an agent.
    #[error("no {PREFIX} annotations: no telepolice agent recorded it")]
    Absent,
    /// Written by a newer agent.
    #[error(
        "the facts have schema {0}, newer than this build's {FACTS_SCHEMA}: upgrade the sweeper"
    )]
    Newer(u32),
    /// A value that does not parse.
    #[error("annotation {PREFIX}{key} is {value:?}: {why}")]
    Bad {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The longest annotation value this writes (the API server caps all of an object's
/// annotations at 256 KiB together; ours stay far below).
const MAX_VALUE: usize = 1024;

fn evidence_name(s: ReplicaSource) -> &'static str {
    match s {
        ReplicaSource::Observed => "observed",
        ReplicaSource::Earlier => "earlier",
        ReplicaSource::Log => "log",
        ReplicaSource::LastApplied => "last-applied",
        ReplicaSource::Uncertain => "uncertain",
        ReplicaSource::Manual => "manual",
    }
}

fn evidence_from(s: &str) -> Option<ReplicaSource> {
    Some(match s {
        "observed" => ReplicaSource::Observed,
        "earlier" => ReplicaSource::Earlier,
        "log" => ReplicaSource::Log,
        "last-applied" => ReplicaSource::LastApplied,
        "uncertain" => ReplicaSource::Uncertain,
        "manual" => ReplicaSource::Manual,
        _ => return None,
    })
}

fn kind_from(s: &str) -> Option<ProxyKind> {
    Some(match s {
        "deployment" => ProxyKind::Deployment,
        "pod" => ProxyKind::Pod,
        "service" => ProxyKind::Service,
        _ => return None,
    })
}

impl Facts {
    /// The facts of a recorded session; `None` until there is something to repair from
    /// (a 0.x session's id, a 2.x session id).
    pub fn of(rec: &SessionRecord, host: &str, user: &str) -> Option<Facts> {
        let common = |session: String, kind| Facts {
            session,
            kind,
            namespace: rec.cluster.namespace.clone(),
            swapped: None,
            original: None,
            proxies: Vec::new(),
            owner_host: host.to_string(),
            owner_user: user.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            manager_namespace: None,
        };
        if let Some(t) = &rec.tel2 {
            let mut f = common(t.session_id.clone()?, SessionKind::Tel2);
            f.manager_namespace = Some(t.manager_namespace.clone());
            return Some(f);
        }
        let mut f = common(rec.telepresence_id.clone()?, SessionKind::Legacy);
        if let Mode::Swap { deployment, .. } = &rec.invocation.mode {
            f.swapped = Some(deployment.clone());
        }
        // The selector only tells proxies apart while following; a repair does not use it.
        f.original = rec.original.clone().map(|o| Original {
            selector: BTreeMap::new(),
            ..o
        });
        f.proxies = rec.proxies.clone();
        Some(f)
    }

    /// The facts as annotations (every key under [`PREFIX`]).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            let mut v = v;
            v.truncate(MAX_VALUE);
            a.insert(annotation(k), v);
        };
        put(key::SCHEMA, FACTS_SCHEMA.to_string());
        put(key::SESSION, self.session.clone());
        put(
            key::KIND,
            match self.kind {
                SessionKind::Legacy => "telepresence-0",
                SessionKind::Tel2 => "telepresence-2",
            }
            .into(),
        );
        put(key::NAMESPACE, self.namespace.clone());
        put(key::OWNER_HOST, self.owner_host.clone());
        put(key::OWNER_USER, self.owner_user.clone());
        put(key::AGENT_VERSION, self.agent_version.clone());
        if let Some(ns) = &self.manager_namespace {
            put(key::MANAGER_NAMESPACE, ns.clone());
        }
        if let Some(d) = &self.swapped {
            put(key::MODE, format!("swap-deployment={d}"));
        }
        if let Some(o) = &self.original {
            put(key::ORIGINAL_KIND, "Deployment".into());
            put(key::ORIGINAL_NAME, o.name.clone());
            if let Some(uid) = &o.uid {
                put(key::ORIGINAL_UID, uid.clone());
            }
            if let Some(r) = o.replicas {
                put(key::ORIGINAL_REPLICAS, r.to_string());
            }
            put(key::REPLICAS_EVIDENCE, evidence_name(o.source).into());
        }
        if !self.proxies.is_empty() {
            let list: Vec<String> = self
                .proxies
                .iter()
                .map(|p| format!("{}/{}/{}", p.kind.resource(), p.name, p.uid))
                .collect();
            put(key::PROXIES, list.join(","));
        }
        a
    }

    /// Reads facts back from an object's annotations.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Result<Facts, FactsError> {
        let get = |k: &str| a.get(&annotation(k)).map(String::as_str);
        let Some(schema) = get(key::SCHEMA) else {
            return Err(FactsError::Absent);
        };
        let bad = |key: &'static str, value: &str, why: &'static str| FactsError::Bad {
            key,
            value: value.to_string(),
            why,
        };
        let schema: u32 = schema
            .parse()
            .map_err(|_| bad(key::SCHEMA, schema, "not a number"))?;
        if schema > FACTS_SCHEMA {
            return Err(FactsError::Newer(schema));
        }
        let need = |k: &'static str| get(k).ok_or_else(|| bad(k, "", "missing"));
        let kind = match need(key::KIND)? {
            "telepresence-0" => SessionKind::Legacy,
            "telepresence-2" => SessionKind::Tel2,
            other => return Err(bad(key::KIND, other, "neither telepresence-0 nor -2")),
        };
        let swapped = match get(key::MODE) {
            Some(m) => Some(
                m.strip_prefix("swap-deployment=")
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| bad(key::MODE, m, "not swap-deployment=NAME"))?
                    .to_string(),
            ),
            None => None,
        };
        let original = match get(key::ORIGINAL_NAME) {
            Some(name) => {
                if let Some(k) = get(key::ORIGINAL_KIND).filter(|k| *k != "Deployment") {
                    return Err(bad(key::ORIGINAL_KIND, k, "only Deployment is known"));
                }
                let replicas = match get(key::ORIGINAL_REPLICAS) {
                    Some(r) => Some(
                        r.parse::<i32>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| bad(key::ORIGINAL_REPLICAS, r, "not a count"))?,
                    ),
                    None => None,
                };
                let ev = need(key::REPLICAS_EVIDENCE)?;
                let source = evidence_from(ev)
                    .ok_or_else(|| bad(key::REPLICAS_EVIDENCE, ev, "unknown evidence"))?;
                Some(Original {
                    name: name.to_string(),
                    uid: get(key::ORIGINAL_UID).map(str::to_string),
                    replicas,
                    source,
                    selector: BTreeMap::new(),
                })
            }
            None => None,
        };
        let mut proxies = Vec::new();
        if let Some(list) = get(key::PROXIES) {
            for item in list.split(',').filter(|s| !s.is_empty()) {
                let mut parts = item.splitn(3, '/');
                let (Some(k), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad(key::PROXIES, list, "not kind/name/uid,..."));
                };
                let kind = kind_from(k).ok_or_else(|| bad(key::PROXIES, list, "unknown kind"))?;
                proxies.push(ProxyObject {
                    kind,
                    name: name.to_string(),
                    uid: uid.to_string(),
                });
            }
        }
        Ok(Facts {
            session: need(key::SESSION)?.to_string(),
            kind,
            namespace: need(key::NAMESPACE)?.to_string(),
            swapped,
            original,
            proxies,
            owner_host: get(key::OWNER_HOST).unwrap_or_default().to_string(),
            owner_user: get(key::OWNER_USER).unwrap_or_default().to_string(),
            agent_version: get(key::AGENT_VERSION).unwrap_or_default().to_string(),
            manager_namespace: get(key::MANAGER_NAMESPACE).map(str::to_string),
        })
    }

    /// A record a sweeper plans from: the laptop's record as far as the facts carry it,
    /// bound to the sweeper's own cluster (no kubeconfig, no context).
    pub fn record(&self) -> SessionRecord {
        let process = crate::platform::ProcessId {
            pid: 0,
            start_ticks: 0,
        };
        let mode = match &self.swapped {
            Some(d) => Mode::Swap {
                deployment: d.clone(),
                container: None,
            },
            None => Mode::NewDeployment { name: None },
        };
        SessionRecord {
            schema: crate::session::SCHEMA,
            key: format!("sweep-{}", self.session),
            process,
            argv: Vec::new(),
            cwd: None,
            parent: None,
            tty: 0,
            sid: 0,
            uid: 0,
            invocation: Invocation {
                mode,
                namespace: Some(self.namespace.clone()),
                ..Invocation::default()
            },
            cluster: ClusterBinding {
                kubeconfig: Vec::new(),
                context: String::new(),
                namespace: self.namespace.clone(),
                server: String::new(),
                exec_env: Vec::new(),
            },
            telepresence_id: (self.kind == SessionKind::Legacy).then(|| self.session.clone()),
            tmp_root: None,
            original: self.original.clone(),
            proxies: self.proxies.clone(),
            state: State::Orphaned,
            history: Vec::new(),
            actions: Vec::new(),
            tel2: None,
        }
    }

    /// Why a sweeper must not act on these facts, read from an object in `namespace`, if
    /// anything. Anyone who may write a Lease or a pod's annotations can write facts, so a
    /// sweeper acts only on what they could not point elsewhere: a 0.x session's objects
    /// in the namespace the facts were found in, and a restore only of the original whose
    /// uid the facts name (a swap's facts without it are for a person).
    pub fn untrusted(&self, namespace: &str) -> Option<String> {
        if self.kind != SessionKind::Legacy {
            return None;
        }
        if self.namespace != namespace {
            return Some(format!(
                "the facts name namespace {:?} but were found in {namespace:?}: a sweeper acts only in the namespace of the facts' own object",
                self.namespace
            ));
        }
        match &self.original {
            Some(o) if o.uid.is_none() => Some(format!(
                "the facts do not name deployment/{}'s uid: a sweeper restores only the object the laptop saw",
                o.name
            )),
            _ => None,
        }
    }

    /// The object a laptop annotates and owns its Lease by: the proxy Deployment (0.105),
    /// else the proxy Pod (0.106+); `None` for 2.x and before a proxy is recorded.
    pub fn anchor(&self) -> Option<&ProxyObject> {
        self.proxies
            .iter()
            .find(|p| p.kind == ProxyKind::Deployment)
            .or_else(|| self.proxies.iter().find(|p| p.kind == ProxyKind::Pod))
    }
}

/// The name of a session's heartbeat Lease.
pub fn lease_name(kind: SessionKind, session: &str) -> String {
    let clean: String = session
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63 - 16)
        .collect();
    match kind {
        SessionKind::Legacy => format!("telepolice-{clean}"),
        SessionKind::Tel2 => format!("telepolice-tel2-{clean}"),
    }
}

/// The labels of a session's heartbeat Lease (what the sweeper watches, and the session).
pub fn lease_labels(session: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (annotation("session"), session.to_string()),
    ]
    .into()
}

/// A heartbeat record held by `holder` from now.
pub fn fresh_heartbeat(holder: &str) -> election::Record {
    let now = jiff::Timestamp::now();
    election::Record {
        holder: holder.to_string(),
        duration_secs: HEARTBEAT_SECS,
        acquire: Some(now),
        renew: Some(now),
        transitions: 0,
    }
}

/// The holder identity a laptop writes into its session Leases.
pub fn laptop_identity(host: &str, user: &str, key: &str) -> String {
    format!("laptop/{user}@{host}/{key}")
}

/// Whether a holder identity is a sweeper's (sweepers take Leases over as `sweeper/<id>`).
pub fn is_sweeper(holder: &str) -> bool {
    holder.starts_with("sweeper/")
}

#[cfg(test)]
mod tests;
