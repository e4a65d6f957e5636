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
mod tests;
