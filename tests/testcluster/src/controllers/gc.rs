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
        // uid -> (key, deleting, finalizers)
        let mut owners: HashMap<String, (Key, bool, Vec<String>)> = HashMap::new();
        let mut dependents: HashMap<String, Vec<Key>> = HashMap::new();
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
        let del = |st: &mut State, k: &Key, propagation: Option<&str>| {
            let opts = DeleteOptions {
                propagation: propagation.map(str::to_string),
                ..Default::default()
            };
            // Only fails when the object is already gone.
            let _ = api::delete(st, rt(k.resource), &k.namespace, &k.name, &opts);
        };
        for (owner_uid, deps) in &dependents {
            match owners.get(owner_uid) {
                None => {
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
                            del(st, k, None);
                        }
                    }
                }
                Some((_, true, fins)) if fins.iter().any(|f| f == "orphan") => {
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
                Some((_, true, fins)) if fins.iter().any(|f| f == "foregroundDeletion") => {
                    for k in deps {
                        if st.store.get(k).is_some_and(|v| !deleting(v)) {
                            del(st, k, Some("Foreground"));
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
            let remaining = dependents
                .get(owner_uid)
                .map(|d| d.iter().filter(|k| st.store.get(k).is_some()).count())
                .unwrap_or(0);
            let mut keep: Vec<String> = fins.clone();
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
                continue;
            }
            let Some(mut v) = st.store.get(key).cloned() else {
                continue;
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
    }
}
