//! The scale subresource: the `autoscaling/v1` `Scale` view of a deployment or replica
//! set, and `PUT` / `PATCH` of it.

use serde_json::{Value, json};

use super::{Part, PatchType, apply_patch, store_update};
use crate::resources::ResourceType;
use crate::state::State;
use crate::status::ApiError;
use crate::store::Key;

/// `GET .../scale`: the `autoscaling/v1` `Scale` of a deployment or replica set.
pub fn get_scale(st: &State, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
    let obj = st
        .store
        .get(&Key::new(rt.plural, ns, name))
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    Ok(scale_of(obj))
}

fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"],
            "namespace": m["namespace"],
            "uid": m["uid"],
            "resourceVersion": m["resourceVersion"],
            "creationTimestamp": m["creationTimestamp"],
        },
        // `ScaleSpec.replicas` is `omitempty` in the real API: absent at 0.
        "spec": match obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) {
            0 => json!({}),
            n => json!({ "replicas": n }),
        },
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// `PUT` or `PATCH` of `.../scale`. `update` is the full new `Scale` for a `PUT`, or `None`
/// with a patch for a `PATCH`.
pub fn write_scale(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    new_scale: Result<Value, (PatchType, &[u8])>,
) -> Result<Value, ApiError> {
    let key = Key::new(rt.plural, ns, name);
    let Some(obj) = st.store.get(&key).cloned() else {
        return Err(ApiError::not_found(rt, name));
    };
    let scale = scale_of(&obj);
    let wanted = match new_scale {
        Ok(v) => v,
        Err((kind, body)) => apply_patch(&scale, kind, body)?,
    };
    let rv = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !rv.is_empty()
        && Some(rv)
            != obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
    {
        return Err(ApiError::stale(rt, name));
    }
    if let Some(uid) = wanted.pointer("/metadata/uid").and_then(Value::as_str)
        && Some(uid) != obj.pointer("/metadata/uid").and_then(Value::as_str)
    {
        return Err(ApiError::conflict(
            rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                obj.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
        ));
    }
    let replicas = match wanted.pointer("/spec/replicas") {
        None => 0,
        Some(r) => r.as_i64().ok_or_else(|| {
            ApiError::invalid(
                rt,
                name,
                &[(
                    "spec.replicas".into(),
                    format!("Invalid value: {r}: must be an integer"),
                )],
            )
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            rt,
            name,
            &[(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let mut next = obj.clone();
    next["spec"]["replicas"] = json!(replicas);
    let stored = store_update(st, rt, ns, name, next, Part::Main)?;
    Ok(scale_of(&stored))
}
