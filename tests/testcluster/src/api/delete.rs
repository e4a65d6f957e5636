//! Deletion: the `DeleteOptions` the emulator honours, and `DELETE` of one object with
//! preconditions, finalizers, propagation policies, pod grace and namespace termination.

use serde_json::{Value, json};

use super::meta_mut;
use crate::ids;
use crate::resources::ResourceType;
use crate::state::State;
use crate::status::{self, ApiError};
use crate::store::Key;

/// The parts of `DeleteOptions` the emulator honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy` (`Background`, `Foreground`, `Orphan`).
    pub propagation: Option<String>,
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body merged with the query's `propagationPolicy` and
    /// `gracePeriodSeconds` (the body wins, as on a real server).
    pub fn from_body_and_query(body: &Value, query: &[(String, String)]) -> Self {
        let q = |k: &str| {
            query
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
        Self {
            uid: s("/preconditions/uid"),
            resource_version: s("/preconditions/resourceVersion"),
            propagation: s("/propagationPolicy").or_else(|| q("propagationPolicy")),
            grace_period: body
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .or_else(|| q("gracePeriodSeconds").and_then(|v| v.parse().ok())),
        }
    }
}

/// What a delete answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// 200, or 202 when the object lives on with a `deletionTimestamp`.
    pub code: u16,
    /// The body: the object (still there, or a pod) or a success `Status`.
    pub body: Value,
}

/// `DELETE` of one object, with preconditions, finalizers, propagation and pod grace.
pub fn delete(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    del: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    let key = Key::new(rt.plural, if rt.namespaced { ns } else { "" }, name);
    let Some(current) = st.store.get(&key).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    let uid = check_options(rt, name, &current, del)?;
    let mut obj = current.clone();
    let already = obj.pointer("/metadata/deletionTimestamp").is_some();
    let (finalizers, add) = finalizers_after(&obj, del);
    let grace = match rt.plural {
        "pods" => del.grace_period.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        }),
        _ => 0,
    };
    if rt.plural == "namespaces" {
        if !already {
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(ids::now()));
            obj["status"] = json!({"phase": "Terminating"});
            obj = st.store.replace(key, obj);
        }
        return Ok(Deleted {
            code: 200,
            body: obj,
        });
    }
    if finalizers.is_empty() && (grace == 0 || rt.plural != "pods") {
        let gone = st.store.remove(&key).unwrap_or(current);
        let body = if rt.plural == "pods" {
            gone
        } else {
            status::deleted(rt, name, &uid)
        };
        return Ok(Deleted { code: 200, body });
    }
    let m = meta_mut(&mut obj);
    if !already {
        m.insert("deletionTimestamp".into(), json!(ids::now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    let stored = st.store.replace(key, obj);
    let code = if rt.plural == "pods" && add.is_none() {
        200
    } else {
        202
    };
    Ok(Deleted { code, body: stored })
}

/// Checks a delete's preconditions (uid, resourceVersion) against the stored object
/// `current` and its propagation policy; returns the object's uid.
fn check_options(
    rt: &ResourceType,
    name: &str,
    current: &Value,
    del: &DeleteOptions,
) -> Result<String, ApiError> {
    let uid = current
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(want) = &del.uid
        && *want != uid
    {
        return Err(ApiError::conflict(
            rt,
            name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    let rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(want) = &del.resource_version
        && want != rv
    {
        return Err(ApiError::conflict(
            rt,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
            ),
        ));
    }
    if let Some(p) = &del.propagation
        && !matches!(p.as_str(), "Background" | "Foreground" | "Orphan")
    {
        return Err(ApiError::invalid(
            rt,
            name,
            &[(
                "propagationPolicy".into(),
                format!(
                    "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            )],
        ));
    }
    Ok(uid)
}

/// The object's finalizers with the one its propagation policy adds, and that one.
fn finalizers_after(obj: &Value, del: &DeleteOptions) -> (Vec<Value>, Option<&'static str>) {
    let mut finalizers: Vec<Value> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let add = match del.propagation.as_deref() {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    if let Some(f) = add
        && !finalizers.iter().any(|x| x == f)
    {
        finalizers.push(json!(f));
    }
    (finalizers, add)
}
