//! Team mode's writes: heartbeat and election Leases (`coordination.k8s.io/v1`), every
//! write pinned to the `resourceVersion` read (so of two writers one gets a conflict), the
//! recovery facts on a proxy (pinned to its uid), and Events on the objects touched.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event as KubeEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::{ClusterError, Step, api_err};
use crate::session::ProxyKind;
use crate::team::election::Record;

/// A Lease as read: its election record and the rest a writer keeps.
#[derive(Debug, Clone)]
pub struct ReadLease {
    /// The election record (holder, times, transitions).
    pub record: Record,
    /// The whole object, written back with the changes (its `resourceVersion` pins it).
    pub object: Lease,
}

impl ReadLease {
    /// Its annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.object.metadata.annotations.clone().unwrap_or_default()
    }

    /// Its uid.
    pub fn uid(&self) -> String {
        self.object.metadata.uid.clone().unwrap_or_default()
    }
}

/// What a write pinned to a `resourceVersion` (or a create) came to.
#[derive(Debug)]
pub enum Written {
    /// Written; the Lease as it is now.
    Done(Box<ReadLease>),
    /// Someone else wrote first (409 on update, AlreadyExists on create, 404 on an update
    /// of a Lease deleted meanwhile): read again.
    Lost,
}

fn record_of(l: &Lease) -> Record {
    let spec = l.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        duration_secs: spec.lease_duration_seconds.unwrap_or(0),
        acquire: spec.acquire_time.map(|t| t.0),
        renew: spec.renew_time.map(|t| t.0),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

impl From<Lease> for ReadLease {
    fn from(l: Lease) -> Self {
        read_lease(l)
    }
}

fn read_lease(l: Lease) -> ReadLease {
    ReadLease {
        record: record_of(&l),
        object: l,
    }
}

fn set_record(l: &mut Lease, r: &Record) {
    let spec = l.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = (!r.holder.is_empty()).then(|| r.holder.clone());
    spec.lease_duration_seconds = Some(r.duration_secs);
    spec.acquire_time = r.acquire.map(MicroTime);
    spec.renew_time = r.renew.map(MicroTime);
    spec.lease_transitions = Some(r.transitions);
}

fn step(verb: &'static str, name: &str, namespace: &str) -> Step {
    Step::Lease {
        verb,
        name: name.to_string(),
        namespace: namespace.to_string(),
    }
}

/// Reads a Lease; `None` when there is none.
pub async fn get(client: &Client, ns: &str, name: &str) -> Result<Option<ReadLease>, ClusterError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .map(|o| o.map(read_lease))
        .map_err(api_err(step("get", name, ns)))
}

/// What a new Lease carries besides its record.
#[derive(Debug, Clone, Default)]
pub struct NewLease {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its owner (the proxy: the Lease goes with it).
    pub owner: Option<OwnerReference>,
}

/// Creates a Lease holding `record`.
pub async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    record: &Record,
    new: &NewLease,
) -> Result<Written, ClusterError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mut l = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(new.labels.clone()),
            annotations: (!new.annotations.is_empty()).then(|| new.annotations.clone()),
            owner_references: new.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: None,
    };
    set_record(&mut l, record);
    match api.create(&PostParams::default(), &l).await {
        Ok(l) => Ok(Written::Done(Box::new(read_lease(l)))),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Lost),
        Err(e) => Err(api_err(step("create", name, ns))(e)),
    }
}

/// Writes `record` (and `edit`'s changes) over the Lease as read, pinned to its
/// `resourceVersion`.
pub async fn update(
    client: &Client,
    read: &ReadLease,
    record: &Record,
    edit: impl FnOnce(&mut ObjectMeta),
) -> Result<Written, ClusterError> {
    let ns = read.object.metadata.namespace.clone().unwrap_or_default();
    let name = read.object.metadata.name.clone().unwrap_or_default();
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut l = read.object.clone();
    set_record(&mut l, record);
    edit(&mut l.metadata);
    match api.replace(&name, &PostParams::default(), &l).await {
        Ok(l) => Ok(Written::Done(Box::new(read_lease(l)))),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Written::Lost),
        Err(e) => Err(api_err(step("update", &name, &ns))(e)),
    }
}

/// Deletes the Lease as read, pinned to its uid and `resourceVersion` (a Lease written
/// meanwhile, by a laptop or another sweeper, is left: `Ok(false)`); gone already is done.
pub async fn delete(client: &Client, read: &ReadLease) -> Result<bool, ClusterError> {
    let ns = read.object.metadata.namespace.clone().unwrap_or_default();
    let name = read.object.metadata.name.clone().unwrap_or_default();
    let (ns, name) = (ns.as_str(), name.as_str());
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: read.object.metadata.uid.clone(),
            resource_version: read.object.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(api_err(step("delete", name, ns))(e)),
    }
}

/// The apiVersion of a proxy kind.
pub fn api_version(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Deployment => "apps/v1",
        ProxyKind::Pod | ProxyKind::Service => "v1",
    }
}

/// The kind's name as Kubernetes writes it.
pub fn kind_name(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Deployment => "Deployment",
        ProxyKind::Pod => "Pod",
        ProxyKind::Service => "Service",
    }
}

/// An owner reference to a proxy.
pub fn owned_by(kind: ProxyKind, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version(kind).to_string(),
        kind: kind_name(kind).to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        ..OwnerReference::default()
    }
}

fn dynamic(client: &Client, ns: &str, kind: ProxyKind) -> Api<kube::api::DynamicObject> {
    let (group, version) = match kind {
        ProxyKind::Deployment => ("apps", "v1"),
        _ => ("", "v1"),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind_name(kind));
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &gvk,
        match kind {
            ProxyKind::Deployment => "deployments",
            ProxyKind::Pod => "pods",
            ProxyKind::Service => "services",
        },
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// JSON Patch escapes `~` and `/` in a path segment.
fn pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Writes `annotations` onto a proxy, pinned to its uid (a JSON Patch whose first op tests
/// `metadata.uid`); other annotations are kept. `Ok(false)`: the object is gone or is
/// another object by now. A proxy changing under the write (a pod's status) is read again,
/// three times at most; then the error says so, and the caller tries later.
pub async fn annotate(
    client: &Client,
    ns: &str,
    kind: ProxyKind,
    name: &str,
    uid: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<bool, ClusterError> {
    let api = dynamic(client, ns, kind);
    let err = || Step::Annotate {
        kind,
        name: name.to_string(),
        namespace: ns.to_string(),
    };
    let mut last = None;
    for _ in 0..3 {
        let Some(obj) = api.get_opt(name).await.map_err(api_err(err()))? else {
            return Ok(false);
        };
        if obj.metadata.uid.as_deref() != Some(uid) {
            return Ok(false);
        }
        let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": uid})];
        match &obj.metadata.annotations {
            Some(have) => {
                if annotations.iter().all(|(k, v)| have.get(k) == Some(v)) {
                    return Ok(true);
                }
                for (k, v) in annotations {
                    let path = format!("/metadata/annotations/{}", pointer_segment(k));
                    ops.push(json!({"op": "add", "path": path, "value": v}));
                }
            }
            // None yet: the map is added whole, pinned to the version read so that a map
            // added meanwhile is not replaced.
            None => {
                ops.push(json!({"op": "test", "path": "/metadata/resourceVersion",
                    "value": obj.metadata.resource_version}));
                ops.push(
                    json!({"op": "add", "path": "/metadata/annotations", "value": annotations}),
                );
            }
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops)).map_err(|e| ClusterError::Client {
                context: String::new(),
                source: Box::new(e),
            })?;
        match api
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            // A failed `test` is 422: changed meanwhile (or replaced: the next read says).
            Err(e @ kube::Error::Api(_)) if matches!(&e, kube::Error::Api(s) if s.code == 422 || s.code == 409) =>
            {
                last = Some(e);
            }
            Err(e) => return Err(api_err(err())(e)),
        }
    }
    match last {
        Some(e) => Err(api_err(err())(e)),
        None => Ok(false),
    }
}

/// The object an Event is about.
#[derive(Debug, Clone)]
pub struct Involved {
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid, when known.
    pub uid: Option<String>,
}

/// Records an Event on `about`: `reason` in CamelCase, `warning` for what needs a person.
pub async fn event(
    client: &Client,
    about: &Involved,
    reason: &str,
    message: &str,
    warning: bool,
    reporter: &str,
) -> Result<(), ClusterError> {
    let api: Api<KubeEvent> = Api::namespaced(client.clone(), &about.namespace);
    let now = jiff::Timestamp::now();
    let e = KubeEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", about.name)),
            namespace: Some(about.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(about.api_version.clone()),
            kind: Some(about.kind.clone()),
            name: Some(about.name.clone()),
            namespace: Some(about.namespace.clone()),
            uid: about.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some("telepolice-sweeper".to_string()),
            host: None,
        }),
        reporting_component: Some("telepolice.dev/sweeper".to_string()),
        reporting_instance: Some(reporter.chars().take(128).collect()),
        action: Some(reason.to_string()),
        ..KubeEvent::default()
    };
    api.create(&PostParams::default(), &e)
        .await
        .map(|_| ())
        .map_err(api_err(Step::Event {
            object: format!("{}/{}", about.kind.to_lowercase(), about.name),
            namespace: about.namespace.clone(),
        }))
}
