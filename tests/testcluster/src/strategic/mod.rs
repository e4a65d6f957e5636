//! Strategic merge patch (`application/strategic-merge-patch+json`) and JSON
//! merge patch (`application/merge-patch+json`) applied to stored objects, as
//! the real API server applies them. This module owns the patch algorithms and
//! the table of list merge strategies of the emulated kinds; it knows nothing
//! about HTTP, storage or validation.
//!
//! The object's kind comes from the original's `kind` (else the patch's);
//! that picks the schema below. Maps merge recursively and `null` deletes a
//! key. A list merges only where Kubernetes tags the field
//! `patchStrategy:"merge"`; every other list is replaced by the patch's.
//!
//! Lists merged by a key (`patchMergeKey`), per location:
//!
//! | location | key |
//! | --- | --- |
//! | `metadata.ownerReferences` (every kind, pod templates too) | `uid` |
//! | pod spec `containers`, `initContainers`, `ephemeralContainers` | `name` |
//! | pod spec `volumes` (`merge,retainKeys`) | `name` |
//! | pod spec `imagePullSecrets` | `name` |
//! | pod spec `hostAliases` | `ip` |
//! | pod spec `topologySpreadConstraints` | `topologyKey` |
//! | pod spec `schedulingGates` | `name` |
//! | pod spec `resourceClaims` (`merge,retainKeys`) | `name` |
//! | pod spec `evictionResponders` | `name` |
//! | container (any of the three lists) `env` | `name` |
//! | container `ports` | `containerPort` |
//! | container `volumeMounts` | `mountPath` |
//! | container `volumeDevices` | `devicePath` |
//! | pod `status.conditions` | `type` |
//! | pod `status.podIPs`, `status.hostIPs` | `ip` |
//! | pod `status.resourceClaimStatuses` | `name` |
//! | pod `status.nodeAllocatableResourceClaimStatuses` | `resourceClaimName` |
//! | `status.conditions` of Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController, Service, Namespace, PersistentVolumeClaim, Node | `type` |
//! | Service `spec.ports` | `port` |
//! | Node `status.addresses` | `type` |
//! | ServiceAccount `secrets` | `name` |
//!
//! Lists of scalars merged as sets (union, order kept): `metadata.finalizers`
//! and Node `spec.podCIDRs`.
//!
//! A pod spec is found at `spec` of a Pod, at `spec.template.spec` of a
//! Deployment, ReplicaSet, StatefulSet, DaemonSet, Job and
//! ReplicationController, at `template.spec` of a PodTemplate and at
//! `spec.jobTemplate.spec.template.spec` of a CronJob. ConfigMap, Event,
//! Lease, Scale and any other kind have no merged list besides the metadata
//! ones, so their lists are replaced.
//!
//! Directives: `$patch: replace` / `$patch: delete` in a map;
//! `{"$patch": "delete", <key>: v}` and `{"$patch": "replace"}` elements in a
//! merged list; `$retainKeys`; `$setElementOrder/<field>`;
//! `$deleteFromPrimitiveList/<field>`. Directive keys never reach the result.
//!
//! Order of a merged list, as the real server (1.7 and later) orders it: the
//! elements named in the patch come in the patch's order (or in
//! `$setElementOrder`'s when the patch has one), and each element only the
//! original has is put back in front of the first named element it preceded
//! in the original. So without `$setElementOrder` a new element lands in
//! front of the existing ones (`kubectl patch` adding a container lists it
//! first); with it (as `kubectl apply` sends) it lands where the order says.
//!
//! Known differences from the real server: `$patch: delete` in a map gives
//! `{}` as the real algorithm does, but the real server's round trip through
//! its Go types then drops an emptied string map (`labels: {}`) where this
//! module keeps it; a value the patch adds where the original had none is
//! cleaned of nulls and directives (the real server copies some of them
//! through); unknown fields are merged generically instead of being dropped
//! or refused.

use serde_json::{Map, Value};

mod list;

use list::{merge_list, merge_ordered_list};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";

const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ORDER: &str = "invalid patch format of setElementOrder list";
const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_LIST_OF_LISTS: &str = "lists of lists are not supported";

/// Applies a strategic merge patch to `original`, choosing the merge
/// strategies by the object's `kind` (the original's, else the patch's).
/// The patch must be a JSON object.
pub fn apply(original: &Value, patch: &Value) -> Result<Value, String> {
    let kind = original
        .get("kind")
        .and_then(Value::as_str)
        .or_else(|| patch.get("kind").and_then(Value::as_str))
        .unwrap_or_default();
    apply_for_kind(kind, original, patch)
}

/// Like [`apply`], for an object of the given `kind` (e.g. `Deployment`)
/// whatever its `kind` field says.
pub fn apply_for_kind(kind: &str, original: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(patch) = patch else {
        return Err("invalid JSON document: a strategic merge patch must be a JSON object".into());
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err("invalid JSON document: the object to patch must be a JSON object".into()),
    };
    merge_map(original, patch, Loc::root(kind)).map(Value::Object)
}

/// Applies an RFC 7386 JSON merge patch: maps merge, `null` deletes, every
/// other value (lists included) replaces.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

// ---------------------------------------------------------------------------
// Schema: which lists merge, and by what key
// ---------------------------------------------------------------------------

/// The part of a Kubernetes type the merge is in, as far as list strategies
/// go. `Any` stands for every type without merged lists in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Any,
    /// `metadata` of any object or template.
    Meta,
    /// A kind without merged lists except in its metadata.
    GenericRoot,
    Pod,
    PodTemplate,
    PodTemplateSpec,
    PodSpec,
    PodStatus,
    Container,
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController.
    Workload,
    /// Their `spec`: `template` is a pod template.
    WorkloadSpec,
    CronJob,
    CronJobSpec,
    JobTemplateSpec,
    Service,
    ServiceSpec,
    /// Namespace, PersistentVolumeClaim: only `status.conditions` merges.
    ConditionsRoot,
    /// A `status` whose `conditions` merge by `type`.
    ConditionsStatus,
    Node,
    NodeSpec,
    NodeStatus,
    ServiceAccount,
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// The patch's list replaces the original's.
    Replace,
    /// A list of objects merged by this key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set.
    MergeScalars,
}

impl Loc {
    fn root(kind: &str) -> Loc {
        match kind {
            "Pod" => Loc::Pod,
            "PodTemplate" => Loc::PodTemplate,
            "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "ReplicationController" => Loc::Workload,
            "CronJob" => Loc::CronJob,
            "Service" => Loc::Service,
            "Namespace" | "PersistentVolumeClaim" => Loc::ConditionsRoot,
            "Node" => Loc::Node,
            "ServiceAccount" => Loc::ServiceAccount,
            _ => Loc::GenericRoot,
        }
    }

    /// The node of field `key` of this node, and the strategy to use when
    /// that field holds a list.
    fn child(self, key: &str) -> (Loc, Strategy) {
        use Strategy::{MergeByKey, MergeScalars, Replace};
        let any = |s| (Loc::Any, s);
        match (self, key) {
            (Loc::Any, _) => any(Replace),
            (
                Loc::GenericRoot
                | Loc::Pod
                | Loc::PodTemplate
                | Loc::PodTemplateSpec
                | Loc::Workload
                | Loc::CronJob
                | Loc::JobTemplateSpec
                | Loc::Service
                | Loc::ConditionsRoot
                | Loc::Node
                | Loc::ServiceAccount,
                "metadata",
            ) => (Loc::Meta, Replace),
            (Loc::Meta, "finalizers") => any(MergeScalars),
            (Loc::Meta, "ownerReferences") => any(MergeByKey("uid")),

            (Loc::Pod, "spec") | (Loc::PodTemplateSpec, "spec") => (Loc::PodSpec, Replace),
            (Loc::Pod, "status") => (Loc::PodStatus, Replace),
            (Loc::PodTemplate, "template") | (Loc::WorkloadSpec, "template") => {
                (Loc::PodTemplateSpec, Replace)
            }
            (Loc::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                (Loc::Container, MergeByKey("name"))
            }
            (
                Loc::PodSpec,
                "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"
                | "evictionResponders",
            ) => any(MergeByKey("name")),
            (Loc::PodSpec, "hostAliases") => any(MergeByKey("ip")),
            (Loc::PodSpec, "topologySpreadConstraints") => any(MergeByKey("topologyKey")),
            (Loc::Container, "env") => any(MergeByKey("name")),
            (Loc::Container, "ports") => any(MergeByKey("containerPort")),
            (Loc::Container, "volumeMounts") => any(MergeByKey("mountPath")),
            (Loc::Container, "volumeDevices") => any(MergeByKey("devicePath")),
            (Loc::PodStatus, "conditions") => any(MergeByKey("type")),
            (Loc::PodStatus, "podIPs" | "hostIPs") => any(MergeByKey("ip")),
            (Loc::PodStatus, "resourceClaimStatuses") => any(MergeByKey("name")),
            (Loc::PodStatus, "nodeAllocatableResourceClaimStatuses") => {
                any(MergeByKey("resourceClaimName"))
            }

            (Loc::Workload, "spec") => (Loc::WorkloadSpec, Replace),
            (Loc::Workload | Loc::Service | Loc::ConditionsRoot, "status") => {
                (Loc::ConditionsStatus, Replace)
            }
            (Loc::ConditionsStatus, "conditions") => any(MergeByKey("type")),
            (Loc::CronJob, "spec") => (Loc::CronJobSpec, Replace),
            (Loc::CronJobSpec, "jobTemplate") => (Loc::JobTemplateSpec, Replace),
            (Loc::JobTemplateSpec, "spec") => (Loc::WorkloadSpec, Replace),

            (Loc::Service, "spec") => (Loc::ServiceSpec, Replace),
            (Loc::ServiceSpec, "ports") => any(MergeByKey("port")),

            (Loc::Node, "spec") => (Loc::NodeSpec, Replace),
            (Loc::Node, "status") => (Loc::NodeStatus, Replace),
            (Loc::NodeSpec, "podCIDRs") => any(MergeScalars),
            (Loc::NodeStatus, "conditions" | "addresses") => any(MergeByKey("type")),

            (Loc::ServiceAccount, "secrets") => any(MergeByKey("name")),
            _ => any(Replace),
        }
    }
}

// ---------------------------------------------------------------------------
// The merge
// ---------------------------------------------------------------------------

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ORDER_PREFIX)
        || k.starts_with(DELETE_PRIMITIVE_PREFIX)
}

/// Equality of two JSON values as Go's `interface{}` comparison sees decoded
/// JSON: all numbers are float64.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn err_no_merge_key(elem: &Value, key: &str) -> String {
    format!("map: {elem} does not contain declared merge key: {key}")
}

fn err_bad_patch_type(directive: &Value, m: &Map<String, Value>) -> String {
    let d = directive
        .as_str()
        .map_or_else(|| directive.to_string(), str::to_string);
    format!(
        "unknown patch type: {d} in map: {}",
        Value::Object(m.clone())
    )
}

/// Merges the patch map into the original map.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    node: Loc,
) -> Result<Map<String, Value>, String> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                merge_map(Map::new(), &rest, node)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(err_bad_patch_type(directive, patch)),
        };
    }

    retain_keys(&mut original, patch)?;

    // Lists whose order the patch sets are merged (and ordered) first.
    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in patch {
        let Some(field) = k.strip_prefix(SET_ORDER_PREFIX) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(ERR_SET_ORDER.into());
        };
        if merge_ordered_list(&mut original, patch, field, order, node)? {
            ordered.push(field);
        }
    }

    for (k, patch_value) in patch {
        if is_directive_key(k) || ordered.contains(&k.as_str()) {
            continue;
        }
        if patch_value.is_null() {
            original.remove(k);
            continue;
        }
        let (child, strategy) = node.child(k);
        match original.get_mut(k) {
            Some(slot) => {
                let current = std::mem::take(slot);
                *slot = merge_value(current, patch_value, child, strategy)?;
            }
            None => {
                let fresh = fresh_value(patch_value, child, strategy)?;
                original.insert(k.clone(), fresh);
            }
        }
    }

    delete_from_primitive_lists(&mut original, patch)?;

    Ok(original)
}

/// Applies `$retainKeys`: keeps only the listed keys of the original map.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), String> {
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(retain) = retain else {
            return Err(ERR_RETAIN_KEYS.into());
        };
        let listed = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
        for (k, v) in patch {
            if v.is_null() || is_directive_key(k) {
                continue;
            }
            if !listed(k) {
                return Err(ERR_RETAIN_KEYS.into());
            }
        }
        original.retain(|k, _| listed(k));
    }
    Ok(())
}

/// Applies `$deleteFromPrimitiveList/<field>`: removes the listed values from the field's list.
fn delete_from_primitive_lists(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), String> {
    for (k, to_delete) in patch {
        let Some(field) = k.strip_prefix(DELETE_PRIMITIVE_PREFIX) else {
            continue;
        };
        let Value::Array(to_delete) = to_delete else {
            return Err(ERR_PRIMITIVE_LIST.into());
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !to_delete.iter().any(|d| json_eq(d, v)));
        }
    }
    Ok(())
}

/// Merges one patch value into the original value of the same field.
fn merge_value(
    original: Value,
    patch: &Value,
    node: Loc,
    strategy: Strategy,
) -> Result<Value, String> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => merge_map(o, p, node).map(Value::Object),
        (Value::Array(o), Value::Array(p)) => merge_list(o, p, node, strategy).map(Value::Array),
        _ => fresh_value(patch, node, strategy),
    }
}

/// A patch value that has nothing to merge into: merged into an empty value
/// of its own type, so that nulls and directives inside it are applied
/// rather than copied.
fn fresh_value(patch: &Value, node: Loc, strategy: Strategy) -> Result<Value, String> {
    match patch {
        Value::Object(p) => merge_map(Map::new(), p, node).map(Value::Object),
        Value::Array(p) => merge_list(Vec::new(), p, node, strategy).map(Value::Array),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests;
