//! Talking to a session's cluster exactly as the session did: the same kubeconfig files and
//! context, exec credential plugins run with the session's `PATH`, and nothing else. Thin:
//! observing what a session left, and carrying out planned actions with preconditions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;

use crate::lifecycle::{Action, Observed, ObservedObject, ObservedWorkload, WorkloadNow};
use crate::session::{ClusterBinding, ProxyKind};

/// Why the agent could not talk to a session's cluster or act on it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig file could be read.
    #[error("no readable kubeconfig among {paths:?}: {why}")]
    NoKubeconfig { paths: Vec<PathBuf>, why: String },
    /// A kubeconfig file is malformed.
    #[error("reading kubeconfig {path}: {source}")]
    BadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The context does not exist (any more).
    #[error("kube context {context:?} is not in {paths:?}")]
    NoContext {
        context: String,
        paths: Vec<PathBuf>,
    },
    /// No context was given and the kubeconfig has no current context.
    #[error("no --context given and no current-context in {paths:?}")]
    NoCurrentContext { paths: Vec<PathBuf> },
    /// The context now points at another API server than when the session was recorded.
    #[error(
        "kube context {context:?} now points at {now}, not {recorded} where the session ran; refusing to act on another cluster"
    )]
    ServerChanged {
        context: String,
        recorded: String,
        now: String,
    },
    /// The client could not be configured.
    #[error("configuring a client for context {context:?}: {source}")]
    Client {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server refused or failed a request.
    #[error("{step}: {source}")]
    Api {
        step: String,
        #[source]
        source: kube::Error,
    },
}

impl ClusterError {
    /// Whether retrying later may help (network, 5xx, 429), as opposed to a refusal that
    /// needs a person (403, 409 precondition, a changed cluster).
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Api { source, .. } => match source {
                kube::Error::Api(s) => s.code == 429 || s.code >= 500,
                _ => true,
            },
            ClusterError::Client { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status of an API refusal, if this is one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ClusterError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}

/// One permission the agent needs in a session's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The Kubernetes verb (`get`, `list`, `watch`, `patch`, `delete`).
    pub verb: &'static str,
    /// The API group (empty for the core group).
    pub group: &'static str,
    /// The resource (plural).
    pub resource: &'static str,
    /// What the agent does with it, for people reading `doctor`'s output.
    pub why: &'static str,
}

impl Permission {
    /// The resource as RBAC names it: `deployments.apps`, `pods`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// Every permission the agent uses in a session's namespace, from recording a session to
/// repairing it: the calls in this module (reading the original, listing and reading the
/// labelled proxies, the restore patch, the deletes) and the label watches of
/// `daemon::follow` (a watch is a list, then a watch). Nothing else is asked of the cluster;
/// in particular the restore patches the Deployment itself, never its `scale` subresource.
///
/// Keep it in step with the calls: `doctor` checks each entry with a
/// SelfSubjectAccessReview, and the README's "doctor" section lists them (a unit test
/// compares the two).
pub const NEEDED_PERMISSIONS: &[Permission] = &[
    Permission {
        verb: "get",
        group: "apps",
        resource: "deployments",
        why: "read the original's replica count before Telepresence scales it down",
    },
    Permission {
        verb: "list",
        group: "apps",
        resource: "deployments",
        why: "find the session's proxy Deployment by its label",
    },
    Permission {
        verb: "watch",
        group: "apps",
        resource: "deployments",
        why: "notice the proxy Deployment as Telepresence creates it",
    },
    Permission {
        verb: "patch",
        group: "apps",
        resource: "deployments",
        why: "scale the original back",
    },
    Permission {
        verb: "delete",
        group: "apps",
        resource: "deployments",
        why: "delete the proxy Deployment",
    },
    Permission {
        verb: "get",
        group: "",
        resource: "pods",
        why: "read a recorded proxy pod by name",
    },
    Permission {
        verb: "list",
        group: "",
        resource: "pods",
        why: "find the session's proxy pod by its label",
    },
    Permission {
        verb: "watch",
        group: "",
        resource: "pods",
        why: "notice the proxy pod as Telepresence creates it",
    },
    Permission {
        verb: "delete",
        group: "",
        resource: "pods",
        why: "delete the proxy pod",
    },
    Permission {
        verb: "get",
        group: "",
        resource: "services",
        why: "read a recorded proxy Service by name",
    },
    Permission {
        verb: "list",
        group: "",
        resource: "services",
        why: "find the session's proxy Service by its label",
    },
    Permission {
        verb: "watch",
        group: "",
        resource: "services",
        why: "notice the proxy Service as Telepresence creates it",
    },
    Permission {
        verb: "delete",
        group: "",
        resource: "services",
        why: "delete the proxy Service",
    },
];

/// The kubeconfig files a process reads: its `KUBECONFIG` (colon-separated, empty entries
/// ignored), else `$HOME/.kube/config`.
pub fn kubeconfig_paths(env: &HashMap<String, String>, cwd: Option<&Path>) -> Vec<PathBuf> {
    match env.get("KUBECONFIG").filter(|v| !v.is_empty()) {
        // Relative entries are relative to the session's working directory, not ours.
        Some(v) => std::env::split_paths(v)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| match cwd {
                Some(c) if p.is_relative() => c.join(p),
                _ => p,
            })
            .collect(),
        None => env
            .get("HOME")
            .map(|h| vec![Path::new(h).join(".kube").join("config")])
            .unwrap_or_default(),
    }
}

/// The kubeconfig files `paths` merged as kubectl merges them (the first file to set a
/// value wins); missing files are skipped.
///
/// # Errors
/// [`ClusterError::NoKubeconfig`] when none of them exists, [`ClusterError::BadKubeconfig`]
/// naming the file that does not parse or merge.
pub fn load_merged(paths: &[PathBuf]) -> Result<Kubeconfig, ClusterError> {
    let mut merged: Option<Kubeconfig> = None;
    let mut why = String::from("none exists");
    for p in paths {
        if !p.exists() {
            continue;
        }
        let kc = Kubeconfig::read_from(p).map_err(|source| ClusterError::BadKubeconfig {
            path: p.clone(),
            source,
        })?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(|e| {
                why = e.to_string();
                ClusterError::BadKubeconfig {
                    path: p.clone(),
                    source: e,
                }
            })?,
        });
    }
    merged.ok_or(ClusterError::NoKubeconfig {
        paths: paths.to_vec(),
        why,
    })
}

/// Resolves which cluster a session talks to: its context (the flag, else the current
/// context), namespace (the flag, else the context's, else `default`) and API server URL.
pub fn resolve_binding(
    env: &HashMap<String, String>,
    cwd: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<ClusterBinding, ClusterError> {
    let paths = kubeconfig_paths(env, cwd);
    let kc = load_merged(&paths)?;
    let context = match context {
        Some(c) => c.to_string(),
        None => kc
            .current_context
            .clone()
            .ok_or_else(|| ClusterError::NoCurrentContext {
                paths: paths.clone(),
            })?,
    };
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| ClusterError::NoContext {
            context: context.clone(),
            paths: paths.clone(),
        })?;
    let server = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    let namespace = namespace
        .map(str::to_string)
        .or(ctx.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let exec_env = ["PATH", "HOME"]
        .iter()
        .filter_map(|k| env.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    Ok(ClusterBinding {
        kubeconfig: paths,
        context,
        namespace,
        server,
        exec_env,
    })
}

/// A client for a recorded session's cluster. Refuses when the context now points at
/// another API server than the one recorded.
pub async fn client_for(b: &ClusterBinding) -> Result<Client, ClusterError> {
    let mut kc = load_merged(&b.kubeconfig)?;
    let now = resolve_server(&kc, &b.context)?;
    if now != b.server {
        return Err(ClusterError::ServerChanged {
            context: b.context.clone(),
            recorded: b.server.clone(),
            now,
        });
    }
    // Exec credential plugins run with the session's PATH and HOME, not the service's.
    for ai in &mut kc.auth_infos {
        if let Some(exec) = ai.auth_info.as_mut().and_then(|a| a.exec.as_mut()) {
            let env = exec.env.get_or_insert_with(Vec::new);
            for (k, v) in &b.exec_env {
                if !env.iter().any(|e| e.get("name") == Some(k)) {
                    env.push(HashMap::from([
                        ("name".to_string(), k.clone()),
                        ("value".to_string(), v.clone()),
                    ]));
                }
            }
        }
    }
    let opts = KubeConfigOptions {
        context: Some(b.context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| ClusterError::Client {
            context: b.context.clone(),
            source: Box::new(e),
        })?;
    // Building the client runs an exec credential plugin (`aws`, `gcloud`, ...) with a
    // blocking wait: on a blocking thread, bounded, so that a plugin that hangs (or waits for
    // a login on a terminal) stalls neither the daemon nor `doctor`.
    let context = b.context.clone();
    let build = tokio::task::spawn_blocking(move || Client::try_from(config));
    match tokio::time::timeout(CLIENT_BUILD_TIMEOUT, build).await {
        Ok(Ok(Ok(client))) => Ok(client),
        Ok(Ok(Err(e))) => Err(ClusterError::Client {
            context,
            source: Box::new(e),
        }),
        Ok(Err(join)) => Err(ClusterError::Client {
            context,
            source: Box::new(join),
        }),
        Err(_) => Err(ClusterError::Client {
            context,
            source: format!(
                "no client after {CLIENT_BUILD_TIMEOUT:?}: its credential plugin did not finish"
            )
            .into(),
        }),
    }
}

/// How long building a client (and running its credential plugin) may take.
const CLIENT_BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn resolve_server(kc: &Kubeconfig, context: &str) -> Result<String, ClusterError> {
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| ClusterError::NoContext {
            context: context.to_string(),
            paths: Vec::new(),
        })?;
    Ok(kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default())
}

fn api_err(step: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let step = step.into();
    move |source| ClusterError::Api { step, source }
}

/// The original workload's uid and replica count (`None` when it does not exist), and the
/// replicas in its `last-applied-configuration` annotation, if any.
pub async fn get_workload(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<WorkloadNow>, ClusterError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("reading deployment/{name} in {namespace}")))?;
    Ok(d.map(|d| {
        let last_applied = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| {
                v.pointer("/spec/replicas")
                    .and_then(serde_json::Value::as_i64)
            })
            .and_then(|r| i32::try_from(r).ok());
        WorkloadNow {
            uid: d.metadata.uid.clone().unwrap_or_default(),
            replicas: d.spec.replicas.unwrap_or(1),
            last_applied,
            selector: d.spec.selector.match_labels.clone().unwrap_or_default(),
        }
    }))
}

/// The Pods and Deployments in `namespace` that carry a `telepresence` label, whatever its
/// value: the evidence a session's id is weighed against
/// ([`telepresence::pick_session_id`](crate::telepresence::pick_session_id)).
///
/// # Errors
/// [`ClusterError`] naming the list that failed.
pub async fn labelled_objects(
    client: &Client,
    namespace: &str,
) -> Result<Vec<crate::telepresence::Labelled>, ClusterError> {
    use crate::telepresence::Labelled;
    let lp = ListParams::default().labels("telepresence");
    let step = |what: &str| format!("listing {what} labelled telepresence in {namespace}");
    let label = |labels: &Option<BTreeMap<String, String>>| {
        labels
            .as_ref()
            .and_then(|l| l.get("telepresence"))
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for p in pods.list(&lp).await.map_err(api_err(step("pods")))? {
        out.push(Labelled {
            name: p.metadata.name.clone().unwrap_or_default(),
            id: label(&p.metadata.labels),
            pod_labels: p.metadata.labels.unwrap_or_default(),
        });
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for d in deps.list(&lp).await.map_err(api_err(step("deployments")))? {
        out.push(Labelled {
            name: d.metadata.name.clone().unwrap_or_default(),
            id: label(&d.metadata.labels),
            pod_labels: d
                .spec
                .template
                .metadata
                .and_then(|m| m.labels)
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

fn observed(
    kind: ProxyKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObservedObject {
    ObservedObject {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        labels: meta
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        owned: meta
            .owner_references
            .as_ref()
            .is_some_and(|o| !o.is_empty()),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

/// Everything in `namespace` that carries `telepresence=<id>` (Deployments, Pods, Services),
/// plus recorded proxies by name (to notice one whose label was changed).
pub async fn observe_objects(
    client: &Client,
    namespace: &str,
    id: &str,
    recorded: &[(ProxyKind, String)],
) -> Result<Vec<ObservedObject>, ClusterError> {
    let lp = ListParams::default().labels(&format!("telepresence={id}"));
    let mut out = Vec::new();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let svcs: Api<Service> = Api::namespaced(client.clone(), namespace);
    let step = |what: &str| format!("listing {what} labelled telepresence={id} in {namespace}");
    for d in deps.list(&lp).await.map_err(api_err(step("deployments")))? {
        out.push(observed(ProxyKind::Deployment, &d.metadata));
    }
    for p in pods.list(&lp).await.map_err(api_err(step("pods")))? {
        out.push(observed(ProxyKind::Pod, &p.metadata));
    }
    for s in svcs.list(&lp).await.map_err(api_err(step("services")))? {
        out.push(observed(ProxyKind::Service, &s.metadata));
    }
    for (kind, name) in recorded {
        if out.iter().any(|o| o.kind == *kind && o.name == *name) {
            continue;
        }
        let step = format!("reading {}/{name} in {namespace}", kind.resource());
        let meta = match kind {
            ProxyKind::Deployment => deps
                .get_opt(name)
                .await
                .map_err(api_err(step))?
                .map(|d| d.metadata),
            ProxyKind::Pod => pods
                .get_opt(name)
                .await
                .map_err(api_err(step))?
                .map(|p| p.metadata),
            ProxyKind::Service => svcs
                .get_opt(name)
                .await
                .map_err(api_err(step))?
                .map(|s| s.metadata),
        };
        if let Some(m) = meta {
            out.push(observed(*kind, &m));
        }
    }
    Ok(out)
}

/// Observes the original (if `original` names one) and the session's objects: those
/// labelled with its id, or, when the id is unknown, any `telepresence`-labelled object
/// created since `since` (the session's start).
pub async fn observe(
    client: &Client,
    namespace: &str,
    original: Option<&str>,
    id: Option<&str>,
    recorded: &[(ProxyKind, String)],
    since: Option<std::time::SystemTime>,
) -> Result<Observed, ClusterError> {
    let original = match original {
        Some(name) => get_workload(client, namespace, name)
            .await?
            .map(|w| ObservedWorkload {
                uid: w.uid,
                replicas: w.replicas,
            }),
        None => None,
    };
    let objects = match (id, since) {
        (Some(id), _) => observe_objects(client, namespace, id, recorded).await?,
        (None, Some(since)) => labelled_since(client, namespace, since).await?,
        (None, None) => Vec::new(),
    };
    Ok(Observed { original, objects })
}

/// Objects of the namespace carrying any `telepresence` label that were created at or after
/// `since`: what a session whose id was never learned may have left (for a report only).
async fn labelled_since(
    client: &Client,
    namespace: &str,
    since: std::time::SystemTime,
) -> Result<Vec<ObservedObject>, ClusterError> {
    let lp = ListParams::default().labels("telepresence");
    let since = jiff::Timestamp::try_from(since).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let recent = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.creation_timestamp.as_ref().is_none_or(|t| t.0 >= since)
    };
    let step = |what: &str| format!("listing {what} with a telepresence label in {namespace}");
    let mut out = Vec::new();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for d in deps.list(&lp).await.map_err(api_err(step("deployments")))? {
        if recent(&d.metadata) {
            out.push(observed(ProxyKind::Deployment, &d.metadata));
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for p in pods.list(&lp).await.map_err(api_err(step("pods")))? {
        if recent(&p.metadata) {
            out.push(observed(ProxyKind::Pod, &p.metadata));
        }
    }
    let svcs: Api<Service> = Api::namespaced(client.clone(), namespace);
    for s in svcs.list(&lp).await.map_err(api_err(step("services")))? {
        if recent(&s.metadata) {
            out.push(observed(ProxyKind::Service, &s.metadata));
        }
    }
    Ok(out)
}

/// The API server's version (`GET /version`, which every authenticated user may read):
/// the cheapest request that proves the server answers and accepts the credentials.
pub async fn server_version(client: &Client) -> Result<String, ClusterError> {
    client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .map_err(api_err("asking the API server for its version"))
}

/// What a SelfSubjectAccessReview answered: whether the permission is granted, and the
/// authorizer's reason (often empty for a refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAnswer {
    /// Whether the current user may do it.
    pub allowed: bool,
    /// Why, as the authorizer says (with any evaluation error appended).
    pub reason: String,
}

/// Asks the API server whether the client's user holds `perm` in `namespace`, with a
/// SelfSubjectAccessReview (`POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`),
/// as `kubectl auth can-i` does. Nothing is changed in the cluster.
pub async fn review_access(
    client: &Client,
    namespace: &str,
    perm: &Permission,
) -> Result<AccessAnswer, ClusterError> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some(perm.verb.to_string()),
                group: Some(perm.group.to_string()),
                resource: Some(perm.resource.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(api_err(format!(
            "asking whether it may {} {} in {namespace}",
            perm.verb,
            perm.qualified_resource()
        )))?;
    let status = answer.status.unwrap_or_default();
    let mut reason = status.reason.unwrap_or_default();
    if let Some(e) = status.evaluation_error.filter(|e| !e.is_empty()) {
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str(&e);
    }
    Ok(AccessAnswer {
        allowed: status.allowed,
        reason,
    })
}

/// Carries out one action with its preconditions.
pub async fn execute(
    client: &Client,
    namespace: &str,
    action: &Action,
) -> Result<(), ClusterError> {
    match action {
        Action::Restore {
            name,
            uid,
            replicas,
        } => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "test", "path": "/spec/replicas", "value": 0},
                {"op": "replace", "path": "/spec/replicas", "value": replicas},
            ]))
            .map_err(|e| ClusterError::Client {
                context: String::new(),
                source: Box::new(e),
            })?;
            // The Deployment itself, not its scale subresource: a real server leaves
            // `spec.replicas` out of an autoscaling/v1 Scale at 0 (omitempty), so a `test`
            // op on the Scale could never pass; a Deployment always carries it.
            api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(api_err(format!(
                    "scaling deployment/{name} in {namespace} back to {replicas}"
                )))?;
        }
        Action::Delete { kind, name, uid } => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            let step = format!("deleting {}/{name} in {namespace}", kind.resource());
            let result = match kind {
                ProxyKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
                ProxyKind::Pod => Api::<Pod>::namespaced(client.clone(), namespace)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
                ProxyKind::Service => Api::<Service>::namespaced(client.clone(), namespace)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {}
                // Already gone: the goal is reached.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(step)(e)),
            }
        }
    }
    Ok(())
}
