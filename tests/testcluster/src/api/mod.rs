//! What each verb does to the store, as a real API server does it: server-set fields on
//! create, optimistic concurrency on update, the four patch types, the scale subresource,
//! and deletion with preconditions, finalizers and propagation policies.
//!
//! Everything here runs under the state lock and does no I/O; the HTTP layer decodes
//! requests into these calls and the controllers react to what they wrote.
//!
//! The scale subresource is in `scale`, deletion in `delete`; both are re-exported here.

use serde_json::{Map, Value, json};

use crate::ids;
use crate::resources::ResourceType;
use crate::state::State;
use crate::status::ApiError;
use crate::store::Key;
use crate::strategic;

mod delete;
mod scale;

pub use delete::{DeleteOptions, delete};
pub use scale::{get_scale, write_scale};

/// The patch formats a client can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply, here create-or-merge).
    Apply,
}

impl PatchType {
    /// The patch type a `Content-Type` names.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

/// Whether `ns` exists and accepts new content.
fn check_namespace(st: &State, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
    let ns_rt = crate::resources::by_plural("namespaces").unwrap_or(rt);
    match st.store.get(&Key::new("namespaces", "", ns)) {
        None => Err(ApiError::not_found(ns_rt, ns)),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::namespace_terminating(rt, name, ns))
        }
        Some(_) => Ok(()),
    }
}

/// Decodes, validates and defaults `body` for `rt`; the kind and apiVersion must match, and
/// with `strict` (field validation) unknown fields are refused rather than dropped.
pub(crate) fn admit(rt: &ResourceType, body: &Value, strict: bool) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or the kind ({kind}) is not {}",
            body.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
            rt.api_version(),
            rt.kind
        )));
    }
    let (mut obj, dropped) = rt.normalize(body).map_err(|e| {
        ApiError::bad_request(format!("error decoding the body as {}: {e}", rt.kind))
    })?;
    if strict && !dropped.is_empty() {
        return Err(field_validation_error(&dropped));
    }
    obj["kind"] = json!(rt.kind);
    obj["apiVersion"] = json!(rt.api_version());
    Ok(obj)
}

fn field_validation_error(dropped: &[String]) -> ApiError {
    let list = dropped
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::bad_request(format!("strict decoding error: {list}"))
}

/// The defaults a real server fills in for the fields the tests look at.
fn set_defaults(rt: &ResourceType, obj: &mut Value, st: &mut State) {
    match rt.plural {
        "pods" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        "deployments" => {
            let spec = &mut obj["spec"];
            if spec.get("replicas").is_none() {
                spec["replicas"] = json!(1);
            }
            if spec.get("strategy").is_none() {
                spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
            }
            for (k, v) in [
                ("revisionHistoryLimit", 10),
                ("progressDeadlineSeconds", 600),
            ] {
                if spec.get(k).is_none() {
                    spec[k] = json!(v);
                }
            }
            if let Some(ps) = spec.pointer_mut("/template/spec") {
                default_pod_spec(ps);
            }
        }
        "replicasets" => {
            if obj["spec"].get("replicas").is_none() {
                obj["spec"]["replicas"] = json!(1);
            }
            if let Some(ps) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(ps);
            }
        }
        "services" => {
            let spec = &mut obj["spec"];
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            if spec.get("sessionAffinity").is_none() {
                spec["sessionAffinity"] = json!("None");
            }
            if spec.get("clusterIP").is_none() {
                let n = st.next_cluster_ip;
                st.next_cluster_ip += 1;
                let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
            if obj.get("status").is_none() {
                obj["status"] = json!({"loadBalancer": {}});
            }
        }
        "namespaces" => {
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            obj["status"] = json!({"phase": "Active"});
            let name = name_of(obj).to_string();
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        _ => {}
    }
}

fn default_pod_spec(spec: &mut Value) {
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in cs {
            if c.get("imagePullPolicy").is_none() {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest = !tag.contains(':') || tag.ends_with(":latest");
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                }
            }
        }
    }
}

/// `POST`: stores a new object with the server-set fields filled in.
pub fn create(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    body: &Value,
    strict: bool,
) -> Result<Value, ApiError> {
    let mut obj = admit(rt, body, strict)?;
    let meta = meta_mut(&mut obj);
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name
        && let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
    {
        let name = format!("{prefix}{}", ids::suffix(5));
        meta.insert("name".into(), json!(name));
    }
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(k);
    }
    meta.insert("uid".into(), json!(ids::uid()));
    meta.insert("creationTimestamp".into(), json!(ids::now()));
    if rt.tracks_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let name = name_of(&obj).to_string();
    let causes = rt.validate(&obj);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, &causes));
    }
    if rt.namespaced {
        check_namespace(st, rt, ns, &name)?;
    }
    let key = Key::new(rt.plural, if rt.namespaced { ns } else { "" }, &name);
    if st.store.get(&key).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    if rt.has_status && rt.plural != "services" && rt.plural != "namespaces" {
        // A real server drops the status a client sends on create for these kinds.
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    set_defaults(rt, &mut obj, st);
    Ok(st.store.insert(key, obj))
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but `status` (for kinds with a status subresource).
    Main,
    /// The `/status` subresource: only `status`.
    Status,
}

/// `PUT`: replaces an object, refusing a stale `resourceVersion`.
pub fn update(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    body: &Value,
    part: Part,
    strict: bool,
) -> Result<Value, ApiError> {
    let obj = admit(rt, body, strict)?;
    if name_of(&obj) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&obj)
        )));
    }
    store_update(st, rt, ns, name, obj, part)
}

/// The common tail of update and patch: concurrency check, carried-over fields,
/// generation, validation, and removal once the last finalizer of a deleted object is gone.
fn store_update(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    obj: Value,
    part: Part,
) -> Result<Value, ApiError> {
    let key = Key::new(rt.plural, if rt.namespaced { ns } else { "" }, name);
    let Some(current) = st.store.get(&key).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    let cur_rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(rv) = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && rv != cur_rv
    {
        return Err(ApiError::stale(rt, name));
    }
    let mut obj = carry_status(rt, part, &current, obj);
    carry_metadata(&current, &mut obj);
    if rt.tracks_generation && obj.get("spec") != current.get("spec") {
        let g = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
    }
    let causes = rt.validate(&obj);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, name, &causes));
    }
    if rt.plural == "services" {
        // spec.clusterIP is immutable once set.
        if let Some(ip) = current.pointer("/spec/clusterIP") {
            obj["spec"]["clusterIP"] = ip.clone();
            if let Some(ips) = current.pointer("/spec/clusterIPs") {
                obj["spec"]["clusterIPs"] = ips.clone();
            }
        }
    }
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    let no_finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if deleting && no_finalizers && rt.plural != "pods" && rt.plural != "namespaces" {
        let gone = st.store.remove(&key).unwrap_or(obj);
        return Ok(gone);
    }
    Ok(st.store.replace(key, obj))
}

/// What a write keeps of the status: a status write changes only the status of `current`;
/// a main write keeps `current`'s status for kinds with a status subresource.
fn carry_status(rt: &ResourceType, part: Part, current: &Value, mut obj: Value) -> Value {
    if part == Part::Status {
        let status = obj.get("status").cloned();
        obj = current.clone();
        match status {
            Some(s) => obj["status"] = s,
            None => {
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    } else if rt.has_status {
        match current.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    obj
}

/// Carries the server-set metadata of `current` over to the written `obj`.
fn carry_metadata(current: &Value, obj: &mut Value) {
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = meta_mut(obj);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
    ] {
        match cur_meta.get(k) {
            Some(v) => meta.insert(k.to_string(), v.clone()),
            None => meta.remove(k),
        };
    }
    meta.remove("managedFields");
}

/// `PATCH`: applies a patch of the given type to the stored object (server-side apply
/// creates the object when it does not exist).
#[allow(clippy::too_many_arguments)]
pub fn patch(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    kind: PatchType,
    body: &[u8],
    part: Part,
    strict: bool,
) -> Result<Value, ApiError> {
    let key = Key::new(rt.plural, if rt.namespaced { ns } else { "" }, name);
    let current = st.store.get(&key).cloned();
    let patched = match (kind, current) {
        (PatchType::Apply, None) => {
            let v = parse_json(body)?;
            if name_of(&v) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    name_of(&v)
                )));
            }
            return create(st, rt, ns, &v, strict);
        }
        (_, None) => return Err(ApiError::not_found(rt, name)),
        (kind, Some(current)) => apply_patch(&current, kind, body)?,
    };
    let obj = admit(rt, &patched, strict)?;
    if name_of(&obj) != name {
        return Err(ApiError::bad_request(
            "metadata.name: Invalid value: the name of a patched object cannot change",
        ));
    }
    store_update(st, rt, ns, name, obj, part)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

/// Applies a patch to a JSON document (an object, or a `Scale`).
pub fn apply_patch(current: &Value, kind: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request was not a valid JSON patch: {e}"
                ))
            })?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| ApiError::patch_failed(e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            let p = parse_json(body)?;
            Ok(strategic::merge_patch(current, &p))
        }
        PatchType::Strategic | PatchType::Apply => {
            let p = parse_json(body)?;
            strategic::apply(current, &p).map_err(ApiError::bad_request)
        }
    }
}
