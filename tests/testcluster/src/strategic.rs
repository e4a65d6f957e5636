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

    Ok(original)
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

/// The JSON type of a list element, for the "all elements alike" check.
fn type_tag(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn check_elements_alike(original: &[Value], patch: &[Value]) -> Result<(), String> {
    let mut all = original.iter().chain(patch.iter());
    let Some(first) = all.next() else {
        return Ok(());
    };
    let tag = type_tag(first);
    if tag == 4 {
        return Err(ERR_LIST_OF_LISTS.into());
    }
    if all.any(|v| type_tag(v) != tag) {
        return Err(format!(
            "list element types are not identical: {} {}",
            Value::Array(original.to_vec()),
            Value::Array(patch.to_vec())
        ));
    }
    Ok(())
}

/// Merges a patch list into the original list of the same field.
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    node: Loc,
    strategy: Strategy,
) -> Result<Vec<Value>, String> {
    match strategy {
        Strategy::Replace => patch
            .iter()
            .map(|v| fresh_value(v, node, Strategy::Replace))
            .collect(),
        Strategy::MergeScalars => merge_scalar_list(original, patch),
        Strategy::MergeByKey(key) => merge_keyed_list(original, patch, node, key),
    }
}

fn merge_scalar_list(original: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>, String> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    check_elements_alike(&original, patch)?;
    if original.iter().chain(patch).any(Value::is_object) {
        return Err("cannot merge lists without merge key".into());
    }
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(patch) {
        if !merged.iter().any(|m| json_eq(m, v)) {
            merged.push(v.clone());
        }
    }
    let (in_patch, server_only) = partition(merged, patch, None)?;
    normalize_order(in_patch, server_only, patch, &original, None)
}

fn merge_keyed_list(
    original: Vec<Value>,
    patch: &[Value],
    node: Loc,
    key: &'static str,
) -> Result<Vec<Value>, String> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    check_elements_alike(&original, patch)?;
    if let Some(v) = original.iter().chain(patch).find(|v| !v.is_object()) {
        return Err(format!(
            "cannot merge list elements that are not objects by merge key {key}: {v}"
        ));
    }

    // Elements carrying a `$patch` directive first.
    let mut original = original;
    let mut plain: Vec<&Map<String, Value>> = Vec::new();
    let mut replace = false;
    for elem in patch {
        let Value::Object(m) = elem else { continue };
        match m.get(DIRECTIVE) {
            None => plain.push(m),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(kv) = m.get(key) else {
                        return Err(err_no_merge_key(elem, key));
                    };
                    original.retain(|o| !o.get(key).is_some_and(|ov| json_eq(ov, kv)));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err("merging lists cannot yet be specified in the patch".into());
                }
                _ => return Err(err_bad_patch_type(d, m)),
            },
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for m in plain {
            if !m.contains_key(key) {
                return Err(err_no_merge_key(&Value::Object(m.clone()), key));
            }
            out.push(Value::Object(merge_map(Map::new(), m, node)?));
        }
        return Ok(out);
    }

    let server_order = original.clone();
    let mut merged = original;
    for m in &plain {
        let Some(kv) = m.get(key) else {
            return Err(err_no_merge_key(&Value::Object((*m).clone()), key));
        };
        let found = merged
            .iter()
            .position(|o| o.get(key).is_some_and(|ov| json_eq(ov, kv)));
        match found {
            Some(i) => {
                let Value::Object(current) = std::mem::take(&mut merged[i]) else {
                    return Err(err_no_merge_key(&merged[i], key));
                };
                merged[i] = Value::Object(merge_map(current, m, node)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), m, node)?)),
        }
    }
    let patch_order: Vec<Value> = plain
        .into_iter()
        .map(|m| Value::Object(m.clone()))
        .collect();
    let (in_patch, server_only) = partition(merged, &patch_order, Some(key))?;
    normalize_order(
        in_patch,
        server_only,
        &patch_order,
        &server_order,
        Some(key),
    )
}

/// Handles `$setElementOrder/<field>`: merges the field's patch list (if
/// any) into the original list (if any) and orders the result. Returns
/// whether the field was handled (false when neither side has the list).
fn merge_ordered_list(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: &str,
    order: &[Value],
    node: Loc,
) -> Result<bool, String> {
    let (child, strategy) = node.child(field);
    let key = match strategy {
        Strategy::MergeByKey(k) => Some(k),
        _ => None,
    };
    let original_list = match original.get(field) {
        None => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(other) => return Err(format!("expected a list for {field}, got {other}")),
    };
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(a)) => Some(a.as_slice()),
        Some(other) => return Err(format!("expected a list for {field}, got {other}")),
    };
    if let Some(k) = key
        && let Some(bad) = order.iter().find(|v| v.get(k).is_none())
    {
        return Err(err_no_merge_key(bad, k));
    }
    if let Some(p) = patch_list {
        validate_patch_with_order(p, order, key)?;
    }
    let merged = match (&original_list, patch_list) {
        (None, None) => return Ok(false),
        (Some(o), None) => o.clone(),
        (o, Some(p)) => merge_list(o.clone().unwrap_or_default(), p, child, strategy)?,
    };
    let server_order = original_list.unwrap_or_default();
    let (in_order, server_only) = partition(merged, order, key)?;
    let result = normalize_order(in_order, server_only, order, &server_order, key)?;
    original.insert(field.to_string(), Value::Array(result));
    Ok(true)
}

/// The patch list's elements (directive elements aside) must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_patch_with_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), String> {
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let mut next = 0;
    for item in &items {
        let found = order[next..]
            .iter()
            .position(|o| same_element(o, item, key))
            .map(|i| next + i);
        match found {
            Some(i) => next = i + 1,
            None => {
                return Err(format!(
                    "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
                    Value::Array(patch.to_vec()),
                    Value::Array(order.to_vec())
                ));
            }
        }
    }
    Ok(())
}

/// Whether two list elements are "the same" element: same merge key value
/// for keyed lists, equal values otherwise.
fn same_element(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(k) => match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => json_eq(x, y),
            _ => false,
        },
        None => json_eq(a, b),
    }
}

fn index_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|v| same_element(v, item, key))
}

/// Splits merged elements into those named by `by` and the rest (both in
/// their merged order).
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut named = Vec::new();
    let mut rest = Vec::new();
    for v in merged {
        if let Some(k) = key
            && v.get(k).is_none()
        {
            return Err(err_no_merge_key(&v, k));
        }
        if index_in(by, &v, key).is_some() {
            named.push(v);
        } else {
            rest.push(v);
        }
    }
    Ok((named, rest))
}

/// Orders a merged list: the patch's elements by `patch_order`, the
/// server-only elements by `server_order`, then the two interleaved so that a
/// server-only element stays in front of the patch elements it preceded in
/// the original.
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, String> {
    in_patch.sort_by_key(|v| index_in(patch_order, v, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_in(server_order, v, key).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_in(server_order, l, key), index_in(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(original: Value, patch: Value) -> Value {
        match apply(&original, &patch) {
            Ok(v) => v,
            Err(e) => panic!("patch {patch} failed: {e}"),
        }
    }

    fn smp_err(original: Value, patch: Value) -> String {
        match apply(&original, &patch) {
            Ok(v) => panic!("patch {patch} unexpectedly gave {v}"),
            Err(e) => e,
        }
    }

    fn names(list: &Value, key: &str) -> Vec<String> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .map(|v| match &v[key] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web"},
                "finalizers": ["a/one", "b/two"]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "web:1",
                                "args": ["--a", "--b"],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                            },
                            {"name": "sidecar", "image": "side:1"}
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "tolerations": [{"key": "x", "operator": "Exists"}]
                    }
                }
            },
            "status": {
                "conditions": [
                    {"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "True"}
                ]
            }
        })
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": [{"name": "app", "image": "web:1"}],
                "initContainers": [{"name": "init", "image": "busybox"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "podIPs": [{"ip": "10.0.0.1"}]
            }
        })
    }

    #[test]
    fn patch_must_be_an_object() {
        assert!(apply(&pod(), &json!([1])).is_err());
        assert!(apply(&pod(), &json!("x")).is_err());
        assert!(apply(&pod(), &json!(null)).is_err());
        assert!(apply(&json!([]), &json!({})).is_err());
        assert_eq!(smp(pod(), json!({})), pod());
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let out = smp(
            deployment(),
            json!({"metadata": {"labels": {"tier": "front", "app": null}, "annotations": {"x": "y"}},
                   "spec": {"replicas": 5, "paused": null, "selector": null}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"tier": "front"}));
        assert_eq!(out["metadata"]["annotations"], json!({"x": "y"}));
        assert_eq!(out["spec"]["replicas"], json!(5));
        assert!(out["spec"].get("selector").is_none());
        assert!(out["spec"].get("paused").is_none());
        assert_eq!(out["metadata"]["name"], json!("web"));
    }

    #[test]
    fn rollout_restart_patch() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            json!("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web"})
        );
        assert_eq!(
            out["spec"]["template"]["spec"],
            deployment()["spec"]["template"]["spec"]
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["app", "sidecar"]);
        assert_eq!(cs[0]["image"], json!("web:2"));
        assert_eq!(
            cs[0]["env"],
            deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
        );
        assert_eq!(cs[1]["image"], json!("side:1"));
    }

    #[test]
    fn new_elements_go_in_front_without_set_element_order() {
        // As on a real server since 1.7: `kubectl patch` adding a container
        // gets it listed first.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["debug", "app", "sidecar"]);
        // With `$setElementOrder` (what `kubectl apply` sends) it goes where
        // the order says.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}, {"name": "debug"}],
                "containers": [{"name": "debug", "image": "busybox"}]
            }}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["app", "sidecar", "debug"]);
        // A server-only element stays in front of a patched element it
        // preceded.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["app", "sidecar"]);
    }

    #[test]
    fn patch_order_wins_for_named_elements() {
        // The real server puts the patch's elements in the patch's order and
        // keeps server-only ones in front of what they preceded.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "new", "image": "n"},
                {"name": "app", "image": "web:3"}
            ]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["new", "app", "sidecar"]);

        let p = json!({"kind": "Pod", "spec": {"containers": [
            {"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let out = smp(
            p,
            json!({"spec": {"containers": [{"name": "c", "x": 1}, {"name": "a", "x": 2}]}}),
        );
        assert_eq!(names(&out["spec"]["containers"], "name"), ["b", "c", "a"]);
    }

    #[test]
    fn nested_container_lists_merge_by_their_keys() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{
                "name": "app",
                "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                "ports": [{"containerPort": 9090, "name": "metrics"}, {"containerPort": 8080, "name": "http"}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
                "args": ["--c"]
            }]}}}}),
        );
        let app = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(names(&app["ports"], "containerPort"), ["9090", "8080"]);
        assert_eq!(
            app["ports"][1],
            json!({"containerPort": 8080, "protocol": "TCP", "name": "http"})
        );
        assert_eq!(
            app["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data", "readOnly": true}])
        );
        // args has no merge strategy: replaced.
        assert_eq!(app["args"], json!(["--c"]));
    }

    #[test]
    fn unmerged_lists_are_replaced() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "y", "operator": "Exists"}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
        // A ConfigMap or Event has no merged lists at all.
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}, "list": [1, 2]});
        let out = smp(cm, json!({"data": {"b": "2"}, "list": [3]}));
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["list"], json!([3]));
    }

    #[test]
    fn delete_directive_in_list() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "delete", "name": "sidecar"},
                {"name": "app", "env": [{"$patch": "delete", "name": "A"}]}
            ]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["app"]);
        assert_eq!(cs[0]["env"], json!([{"name": "B", "value": "2"}]));
        // Deleting an absent element is fine.
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{"$patch": "delete", "name": "nope"}]}}),
        );
        assert_eq!(out["spec"]["containers"], pod()["spec"]["containers"]);
        // The merge key is required.
        let e = smp_err(
            pod(),
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        );
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
    }

    #[test]
    fn replace_directive_in_list() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "only", "image": "o"},
                {"$patch": "replace"}
            ]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "o"}])
        );
        let e = smp_err(
            pod(),
            json!({"spec": {"containers": [{"$patch": "merge"}]}}),
        );
        assert_eq!(e, "merging lists cannot yet be specified in the patch");
        let e = smp_err(
            pod(),
            json!({"spec": {"containers": [{"$patch": "bogus", "name": "x"}]}}),
        );
        assert!(e.starts_with("unknown patch type: bogus"), "{e}");
    }

    #[test]
    fn replace_directive_in_map() {
        let out = smp(
            deployment(),
            json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(
            deployment(),
            json!({"metadata": {"labels": {"$patch": "replace", "new": "1", "gone": null}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));
    }

    #[test]
    fn delete_directive_in_map_empties_it() {
        let out = smp(
            deployment(),
            json!({"spec": {"strategy": {"$patch": "delete"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({}));
        let out = smp(
            deployment(),
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({}));
        let e = smp_err(deployment(), json!({"spec": {"$patch": "merge"}}));
        assert!(e.starts_with("unknown patch type: merge in map:"), "{e}");
    }

    #[test]
    fn retain_keys() {
        let out = smp(
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // Volumes: switching a volume's source drops the old one.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"volumes": [
                {"name": "data", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}}
            ]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cm"}}])
        );
        // A patched key missing from the list is an error.
        let e = smp_err(
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
        );
        assert_eq!(e, "invalid patch format of retainKeys");
        let e = smp_err(
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        );
        assert_eq!(e, "invalid patch format of retainKeys");
        // Null values and directives need not be listed.
        let out = smp(
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "RollingUpdate"}));
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let out = smp(
            deployment(),
            json!({"metadata": {"finalizers": ["b/two", "c/three"]}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["a/one", "b/two", "c/three"])
        );
        let out = smp(
            deployment(),
            json!({"metadata": {"finalizers": ["c/three"]}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["c/three", "a/one", "b/two"])
        );
        let out = smp(deployment(), json!({"metadata": {"finalizers": []}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a/one", "b/two"]));
        let out = smp(deployment(), json!({"metadata": {"finalizers": null}}));
        assert!(out["metadata"].get("finalizers").is_none());
        let out = smp(
            deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/one", "zzz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b/two"]));
        // Deleting from an absent list leaves it absent.
        let out = smp(
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert!(out["metadata"].get("finalizers").is_none());
        let e = smp_err(
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
        );
        assert_eq!(e, "invalid patch format of primitive list");
        let e = smp_err(
            deployment(),
            json!({"metadata": {"finalizers": [{"a": 1}]}}),
        );
        assert!(e.contains("not identical"), "{e}");
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let o = json!({"kind": "ReplicaSet", "metadata": {"name": "rs", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u1", "controller": true}
        ]}});
        let out = smp(
            o.clone(),
            json!({"metadata": {"ownerReferences": [
                {"uid": "u1", "blockOwnerDeletion": true},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u2"}
            ]}}),
        );
        let refs = &out["metadata"]["ownerReferences"];
        assert_eq!(names(refs, "uid"), ["u1", "u2"]);
        assert_eq!(refs[0]["blockOwnerDeletion"], json!(true));
        assert_eq!(refs[0]["controller"], json!(true));
        let out = smp(
            o,
            json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "u1"}]}}),
        );
        assert_eq!(out["metadata"]["ownerReferences"], json!([]));
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let out = smp(
            pod(),
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "Gone"},
                {"type": "PodScheduled", "status": "True"}
            ], "podIPs": [{"ip": "fd00::1"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "False", "reason": "Gone"},
                {"type": "PodScheduled", "status": "True"}
            ])
        );
        assert_eq!(
            names(&out["status"]["podIPs"], "ip"),
            ["fd00::1", "10.0.0.1"]
        );
        assert_eq!(out["status"]["phase"], json!("Running"));

        for kind in ["Deployment", "ReplicaSet", "Namespace", "Service"] {
            let o =
                json!({"kind": kind, "status": {"conditions": [{"type": "A", "status": "True"}]}});
            let out = smp(
                o,
                json!({"status": {"conditions": [{"type": "B", "status": "True"}]}}),
            );
            assert_eq!(
                names(&out["status"]["conditions"], "type"),
                ["B", "A"],
                "{kind}"
            );
        }
        // An Event's or Lease's lists are plain.
        let o = json!({"kind": "Lease", "status": {"conditions": [{"type": "A"}]}});
        let out = smp(o, json!({"status": {"conditions": [{"type": "B"}]}}));
        assert_eq!(names(&out["status"]["conditions"], "type"), ["B"]);
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443}]
        }});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 81}], "selector": {"app": "api"}}}),
        );
        assert_eq!(names(&out["spec"]["ports"], "port"), ["80", "81", "443"]);
        assert_eq!(out["spec"]["ports"][0]["targetPort"], json!(9090));
        assert_eq!(out["spec"]["ports"][0]["name"], json!("http"));
        assert_eq!(out["spec"]["selector"], json!({"app": "api"}));
    }

    #[test]
    fn pod_spec_lists_merge_by_their_keys() {
        let o = json!({"kind": "Pod", "spec": {
            "containers": [{"name": "app"}],
            "volumes": [{"name": "a", "emptyDir": {}}],
            "imagePullSecrets": [{"name": "reg"}],
            "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a"]}],
            "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}],
            "readinessGates": [{"conditionType": "x"}]
        }});
        let out = smp(
            o,
            json!({"spec": {
                "volumes": [{"name": "b", "secret": {"secretName": "s"}}],
                "imagePullSecrets": [{"name": "reg2"}],
                "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["b"]}],
                "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}],
                "ephemeralContainers": [{"name": "dbg2", "image": "busybox", "env": [{"name": "X", "value": "1"}]}],
                "readinessGates": [{"conditionType": "y"}]
            }}),
        );
        let spec = &out["spec"];
        assert_eq!(names(&spec["volumes"], "name"), ["b", "a"]);
        assert_eq!(names(&spec["imagePullSecrets"], "name"), ["reg2", "reg"]);
        assert_eq!(
            spec["hostAliases"],
            json!([{"ip": "1.2.3.4", "hostnames": ["b"]}])
        );
        assert_eq!(
            spec["topologySpreadConstraints"],
            json!([{"topologyKey": "zone", "maxSkew": 2}])
        );
        assert_eq!(names(&spec["ephemeralContainers"], "name"), ["dbg2", "dbg"]);
        assert_eq!(spec["readinessGates"], json!([{"conditionType": "y"}]));
        assert_eq!(spec["containers"], json!([{"name": "app"}]));
    }

    #[test]
    fn templates_of_other_workloads_are_pod_specs() {
        for kind in [
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "ReplicationController",
        ] {
            let o = json!({"kind": kind, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
            let out = smp(
                o,
                json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}),
            );
            assert_eq!(
                names(&out["spec"]["template"]["spec"]["containers"], "name"),
                ["b", "a"],
                "{kind}"
            );
        }
        let cj = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a"}]}}}}}});
        let out = smp(
            cj,
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}}}),
        );
        assert_eq!(
            names(
                &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
                "name"
            ),
            ["b", "a"]
        );
        let pt =
            json!({"kind": "PodTemplate", "template": {"spec": {"containers": [{"name": "a"}]}}});
        let out = smp(
            pt,
            json!({"template": {"spec": {"containers": [{"name": "b"}]}}}),
        );
        assert_eq!(
            names(&out["template"]["spec"]["containers"], "name"),
            ["b", "a"]
        );
        // Without a kind nothing is known: the list is replaced.
        let bare = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
        let out = smp(
            bare.clone(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}),
        );
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"], "name"),
            ["b"]
        );
        // ... unless the caller names it.
        let out = apply_for_kind(
            "Deployment",
            &bare,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}),
        );
        assert_eq!(
            out.map(|o| names(&o["spec"]["template"]["spec"]["containers"], "name")),
            Ok(vec!["b".to_string(), "a".to_string()])
        );
    }

    #[test]
    fn kind_comes_from_the_patch_when_the_original_lacks_it() {
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"kind": "Pod", "spec": {"containers": [{"name": "b"}]}}),
        );
        assert_eq!(names(&out["spec"]["containers"], "name"), ["b", "a"]);
    }

    #[test]
    fn merged_list_created_when_absent_without_directives() {
        let o = json!({"kind": "Pod", "spec": {"containers": [{"name": "app"}]}});
        let out = smp(
            o,
            json!({"metadata": {"finalizers": ["x"], "ownerReferences": [{"uid": "u", "name": "n"}]},
            "spec": {
                "containers": [{"name": "app", "env": [{"name": "A", "value": "1"}, {"$patch": "delete", "name": "Z"}]}],
                "volumes": [{"$patch": "delete", "name": "gone"}, {"name": "v", "emptyDir": {}, "x": null}],
                "initContainers": [{"name": "i"}, {"$patch": "replace"}]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "u", "name": "n"}])
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v", "emptyDir": {}}])
        );
        assert_eq!(out["spec"]["initContainers"], json!([{"name": "i"}]));
        // A new map is cleaned of nulls and directives too.
        let out = smp(
            pod(),
            json!({"spec": {"securityContext": {"runAsUser": 1, "fsGroup": null}}}),
        );
        assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1}));
    }

    #[test]
    fn set_element_order_for_keyed_lists() {
        // As kubectl apply sends it.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "web:9"}]
            }}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["sidecar", "app"]);
        assert_eq!(cs[1]["image"], json!("web:9"));
        assert_eq!(
            cs[1]["env"],
            deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
        );

        // Order only, no content change.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}}}),
        );
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"], "name"),
            ["sidecar", "app"]
        );

        // With deletions and additions; a server-only element keeps its place
        // in front of the elements it preceded.
        let o = json!({"kind": "Pod", "spec": {"containers": [
            {"name": "a"}, {"name": "srv"}, {"name": "b"}, {"name": "c"}]}});
        let out = smp(
            o,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "d"}, {"name": "b"}, {"name": "a"}],
                "containers": [{"name": "d"}, {"$patch": "delete", "name": "c"}]
            }}),
        );
        assert_eq!(
            names(&out["spec"]["containers"], "name"),
            ["d", "srv", "b", "a"]
        );
        // Directive keys never reach the result.
        assert!(
            out["spec"]
                .as_object()
                .is_some_and(|m| m.keys().all(|k| !k.starts_with('$')))
        );
    }

    #[test]
    fn set_element_order_when_the_original_lacks_the_list() {
        let out = smp(
            json!({"kind": "Pod", "spec": {}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "b"}, {"name": "a"}, {"$patch": "delete", "name": "x"}]
            }}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a"}])
        );
        // Neither side has the list: nothing is created.
        let out = smp(
            json!({"kind": "Pod", "spec": {}}),
            json!({"spec": {"$setElementOrder/volumes": [{"name": "v"}]}}),
        );
        assert_eq!(out["spec"], json!({}));
    }

    #[test]
    fn set_element_order_for_scalar_lists() {
        let out = smp(
            deployment(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["c/three", "b/two"],
                "finalizers": ["c/three"],
                "$deleteFromPrimitiveList/finalizers": ["a/one"]
            }}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c/three", "b/two"]));
        let out = smp(
            deployment(),
            json!({"metadata": {"$setElementOrder/finalizers": ["b/two", "a/one"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b/two", "a/one"]));
    }

    #[test]
    fn set_element_order_errors() {
        let e = smp_err(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "sidecar"}, {"name": "app"}]
            }}}}),
        );
        assert!(e.starts_with("The order in patch list:"), "{e}");
        let e = smp_err(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{"name": "other"}]
            }}}}),
        );
        assert!(e.starts_with("The order in patch list:"), "{e}");
        let e = smp_err(
            deployment(),
            json!({"metadata": {"$setElementOrder/finalizers": "x"}}),
        );
        assert_eq!(e, "invalid patch format of setElementOrder list");
        let e = smp_err(
            deployment(),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"image": "x"}]}}}}),
        );
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
    }

    #[test]
    fn kubectl_apply_style_patch() {
        // What `kubectl apply` sends after removing env B, adding C, changing
        // the image and dropping the sidecar from the last-applied config.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                        "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                        "image": "web:2",
                        "name": "app"
                    },
                    {"$patch": "delete", "name": "sidecar"}
                ]
            }}}
        });
        let out = smp(deployment(), patch);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(cs, "name"), ["app"]);
        assert_eq!(cs[0]["image"], json!("web:2"));
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert!(cs[0].get("$setElementOrder/env").is_none());
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            json!("{}")
        );
    }

    #[test]
    fn merge_key_values_compare_as_json_numbers() {
        let o = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}]}});
        let out = smp(
            o,
            json!({"spec": {"ports": [{"port": 80.0, "targetPort": 1}]}}),
        );
        assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["spec"]["ports"][0]["targetPort"], json!(1));
    }

    #[test]
    fn merge_key_missing_is_an_error() {
        let e = smp_err(pod(), json!({"spec": {"containers": [{"image": "x"}]}}));
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
        let e = smp_err(pod(), json!({"spec": {"containers": ["x"]}}));
        assert!(
            e.contains("not identical") || e.contains("not objects"),
            "{e}"
        );
    }

    #[test]
    fn type_changes_replace() {
        let out = smp(pod(), json!({"spec": {"containers": {"not": "a list"}}}));
        assert_eq!(out["spec"]["containers"], json!({"not": "a list"}));
        let out = smp(pod(), json!({"status": "x"}));
        assert_eq!(out["status"], json!("x"));
        let out = smp(
            pod(),
            json!({"status": {"phase": {"nested": {"x": null, "y": 1}}}}),
        );
        assert_eq!(out["status"]["phase"], json!({"nested": {"y": 1}}));
    }

    #[test]
    fn empty_patch_list_leaves_merged_list_alone() {
        let out = smp(pod(), json!({"spec": {"containers": []}}));
        assert_eq!(out["spec"]["containers"], pod()["spec"]["containers"]);
    }

    #[test]
    fn scale_and_lease_patches() {
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2}, "status": {"replicas": 2, "selector": "app=web"}});
        let out = smp(scale, json!({"spec": {"replicas": 5}}));
        assert_eq!(out["spec"]["replicas"], json!(5));
        assert_eq!(out["status"]["selector"], json!("app=web"));

        let lease = json!({"kind": "Lease", "metadata": {"name": "l"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
        let out = smp(
            lease,
            json!({"spec": {"holderIdentity": "b", "renewTime": "2024-01-01T00:00:00.000000Z"}}),
        );
        assert_eq!(out["spec"]["holderIdentity"], json!("b"));
        assert_eq!(out["spec"]["leaseDurationSeconds"], json!(15));
    }

    #[test]
    fn namespace_finalizers_in_spec_are_replaced() {
        let ns = json!({"kind": "Namespace", "metadata": {"name": "n", "finalizers": ["x"]},
            "spec": {"finalizers": ["kubernetes"]}});
        let out = smp(
            ns,
            json!({"spec": {"finalizers": ["other"]}, "metadata": {"finalizers": ["y"]}}),
        );
        assert_eq!(out["spec"]["finalizers"], json!(["other"]));
        assert_eq!(out["metadata"]["finalizers"], json!(["y", "x"]));
    }

    #[test]
    fn whole_object_directives() {
        let out = smp(
            pod(),
            json!({"$patch": "replace", "kind": "Pod", "metadata": {"name": "q"}}),
        );
        assert_eq!(out, json!({"kind": "Pod", "metadata": {"name": "q"}}));
        let out = smp(pod(), json!({"$patch": "delete"}));
        assert_eq!(out, json!({}));
    }

    #[test]
    fn json_merge_patch() {
        let out = merge_patch(
            &deployment(),
            &json!({"metadata": {"labels": {"app": null, "x": "y"}},
                    "spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"x": "y"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only"}])
        );
        assert_eq!(out["spec"]["replicas"], json!(2));
        assert_eq!(merge_patch(&json!({"a": 1}), &json!([1])), json!([1]));
        assert_eq!(
            merge_patch(&json!({"a": 1}), &json!({"a": null})),
            json!({})
        );
    }
}
