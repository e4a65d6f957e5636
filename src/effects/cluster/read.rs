//! What the cluster holds of a session: its original Deployment, and the objects that carry
//! its label (or any `telepresence` label, for a session whose id was never learned).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use super::{ClusterError, Step, api_err};
use crate::lifecycle::{Observed, ObservedObject, ObservedWorkload, WorkloadNow};
use crate::session::ProxyKind;

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
        .map_err(api_err(Step::ReadWorkload {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }))?;
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
    let step = |what| Step::List {
        what,
        label: "labelled telepresence".to_string(),
        namespace: namespace.to_string(),
    };
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
    let step = |what| Step::List {
        what,
        label: format!("labelled telepresence={id}"),
        namespace: namespace.to_string(),
    };
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
        let step = Step::ReadObject {
            kind: *kind,
            name: name.clone(),
            namespace: namespace.to_string(),
        };
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
    let step = |what| Step::List {
        what,
        label: "with a telepresence label".to_string(),
        namespace: namespace.to_string(),
    };
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
