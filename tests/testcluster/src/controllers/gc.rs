//! The garbage collector, which follows `ownerReferences` (background, foreground and
//! orphan deletion), and the emptying of deleted namespaces.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Controllers, deleting, finalizers, rt, uid};
use crate::api::{self, DeleteOptions};
use crate::state::State;
use crate::store::{Key, key_of};

fn owner_refs(v: &Value) -> Vec<Value> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Owners by uid: (key, whether it is being deleted, its finalizers).
type Owners = HashMap<String, (Key, bool, Vec<String>)>;

/// The keys of the dependents of each owner uid their `ownerReferences` name.
type Dependents = HashMap<String, Vec<Key>>;

/// Every object as a possible owner, and every owner uid's dependents.
fn ownership(st: &State) -> (Owners, Dependents) {
    let mut owners: Owners = HashMap::new();
    let mut dependents: Dependents = HashMap::new();
    for r in crate::resources::RESOURCES {
        for v in st.store.list(r.plural, None) {
            let Some(k) = key_of(r.plural, v) else {
                continue;
            };
            for o in owner_refs(v) {
                if let Some(u) = o.get("uid").and_then(Value::as_str) {
                    dependents.entry(u.to_string()).or_default().push(k.clone());
                }
            }
            owners.insert(uid(v).to_string(), (k, deleting(v), finalizers(v)));
        }
    }
    (owners, dependents)
}

/// Deletes the object at `k` with the given propagation policy.
fn delete_dependent(st: &mut State, k: &Key, propagation: Option<&str>) {
    let opts = DeleteOptions {
        propagation: propagation.map(str::to_string),
        ..Default::default()
    };
    // Only fails when the object is already gone.
    let _ = api::delete(st, rt(k.resource), &k.namespace, &k.name, &opts);
}

/// Deletes the dependents of a vanished owner that no live owner still holds.
fn delete_orphans(st: &mut State, owners: &Owners, deps: &[Key]) {
    for k in deps {
        let Some(v) = st.store.get(k) else { continue };
        if deleting(v) {
            continue;
        }
        let alive = owner_refs(v).iter().any(|o| {
            o.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| owners.contains_key(u))
        });
        if !alive {
            delete_dependent(st, k, None);
        }
    }
}

/// Removes the reference to `owner_uid` from each of its dependents (orphan deletion).
fn orphan_dependents(st: &mut State, owner_uid: &str, deps: &[Key]) {
    for k in deps {
        let Some(mut v) = st.store.get(k).cloned() else {
            continue;
        };
        let refs: Vec<Value> = owner_refs(&v)
            .into_iter()
            .filter(|o| o.get("uid").and_then(Value::as_str) != Some(owner_uid))
            .collect();
        if refs.is_empty() {
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("ownerReferences");
            }
        } else {
            v["metadata"]["ownerReferences"] = Value::Array(refs);
        }
        st.store.replace(k.clone(), v);
    }
}

/// Removes the `foregroundDeletion` and `orphan` finalizers of a deleted owner once its
/// dependents are settled; the owner goes (a pod only loses its finalizers) when none remain.
fn release_owner(
    st: &mut State,
    owner_uid: &str,
    key: &Key,
    fins: &[String],
    dependents: &Dependents,
) {
    let remaining = dependents
        .get(owner_uid)
        .map(|d| d.iter().filter(|k| st.store.get(k).is_some()).count())
        .unwrap_or(0);
    let mut keep: Vec<String> = fins.to_vec();
    if remaining == 0 {
        keep.retain(|f| f != "foregroundDeletion");
    }
    let orphaned = dependents.get(owner_uid).is_none_or(|d| {
        d.iter().all(|k| {
            st.store.get(k).is_none_or(|v| {
                !owner_refs(v)
                    .iter()
                    .any(|o| o.get("uid").and_then(Value::as_str) == Some(owner_uid))
            })
        })
    });
    if orphaned {
        keep.retain(|f| f != "orphan");
    }
    if keep.len() == fins.len() {
        return;
    }
    let Some(mut v) = st.store.get(key).cloned() else {
        return;
    };
    if keep.is_empty() {
        if key.resource == "pods" {
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("finalizers");
            }
            st.store.replace(key.clone(), v);
        } else {
            st.store.remove(key);
        }
    } else {
        v["metadata"]["finalizers"] = json!(keep);
        st.store.replace(key.clone(), v);
    }
}

impl Controllers {
    pub(super) fn namespaces(&mut self, st: &mut State) {
        for key in st.store.keys("namespaces") {
            let Some(ns) = st.store.get(&key) else {
                continue;
            };
            if !deleting(ns) {
                continue;
            }
            let mut empty = true;
            for r in crate::resources::RESOURCES.iter().filter(|r| r.namespaced) {
                let keys: Vec<Key> = st
                    .store
                    .list(r.plural, Some(&key.name))
                    .into_iter()
                    .filter_map(|v| key_of(r.plural, v))
                    .collect();
                for k in keys {
                    empty = false;
                    st.store.remove(&k);
                }
            }
            if empty {
                st.store.remove(&key);
            }
        }
    }

    pub(super) fn garbage_collect(&mut self, st: &mut State) {
        let (owners, dependents) = ownership(st);
        for (owner_uid, deps) in &dependents {
            match owners.get(owner_uid) {
                None => delete_orphans(st, &owners, deps),
                Some((_, true, fins)) if fins.iter().any(|f| f == "orphan") => {
                    orphan_dependents(st, owner_uid, deps);
                }
                Some((_, true, fins)) if fins.iter().any(|f| f == "foregroundDeletion") => {
                    for k in deps {
                        if st.store.get(k).is_some_and(|v| !deleting(v)) {
                            delete_dependent(st, k, Some("Foreground"));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        // Release owners whose dependents are settled.
        for (owner_uid, (key, is_deleting, fins)) in &owners {
            if !is_deleting {
                continue;
            }
            release_owner(st, owner_uid, key, fins, &dependents);
        }
    }
}
