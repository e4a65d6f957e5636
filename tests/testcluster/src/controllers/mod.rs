//! The controllers that make the emulator behave like a cluster: deployments own replica
//! sets, replica sets own pods, a "kubelet" starts and stops pods, the garbage collector
//! follows `ownerReferences` (background, foreground and orphan deletion), and deleted
//! namespaces are emptied.
//!
//! They are level-triggered: each pass looks at the whole store and makes one step of
//! progress; passes repeat until nothing changes. Timed work (a pod becoming ready, a
//! terminating pod going away) is reported as the next instant to look again.
//!
//! The garbage collector and namespace emptying are in `gc`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{self, DeleteOptions};
use crate::ids;
use crate::resources::{ResourceType, by_plural};
use crate::selector::LabelSelector;
use crate::state::{Options, State};
use crate::store::{Key, key_of};

mod gc;

/// Memory the controllers keep between passes.
#[derive(Debug, Default)]
pub struct Controllers {
    /// When each pending pod (by uid) was first seen.
    pending_since: HashMap<String, Instant>,
    /// When each terminating pod (by uid) was first seen terminating.
    terminating_since: HashMap<String, Instant>,
    next_ip: u32,
    /// The store's version at the end of the last pass, and when timed work was next due
    /// then: changes since that no controller reacts to skip the pass.
    settled: Option<(u64, Option<Instant>)>,
}

/// Whether a change is one no controller reacts to, as on a real server: an update of a
/// Lease or an Event (a heartbeat's renew) or a new Event, that leaves the object's owners
/// and deletion alone. (The garbage collector reacts to owner references; nothing watches
/// Leases or Events otherwise.)
fn inert(c: &crate::store::Change) -> bool {
    use crate::store::ChangeType;
    let same = |p: &str| c.old.as_ref().and_then(|o| o.pointer(p)) == c.new.pointer(p);
    match (c.key.resource, c.kind) {
        ("leases" | "events", ChangeType::Modified) => {
            same("/metadata/ownerReferences") && same("/metadata/deletionTimestamp")
        }
        ("events", ChangeType::Added) => c.new.pointer("/metadata/ownerReferences").is_none(),
        _ => false,
    }
}

fn rt(plural: &str) -> &'static ResourceType {
    match by_plural(plural) {
        Some(r) => r,
        None => unreachable!("{plural} is a served resource"),
    }
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn uid(v: &Value) -> &str {
    str_at(v, "/metadata/uid")
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some()
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The string map at pointer `p` of `v` (labels, a selector's `matchLabels`), empty when
/// there is none.
pub(crate) fn labels(v: &Value, p: &str) -> BTreeMap<String, String> {
    v.pointer(p)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod-template-hash a deployment controller gives a template: FNV-1a of the
/// template's JSON, its decimal digits spelled in the server's safe alphabet.
pub fn pod_template_hash(template: &Value) -> String {
    let text = template.to_string();
    let h = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn owner_ref(kind: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The objects of `resource` in `namespace` that `owner` controls (its controller
/// `ownerReference` names the owner's uid).
fn owned_by(st: &State, resource: &'static str, namespace: &str, owner: &Value) -> Vec<Value> {
    st.store
        .controlled_by(resource, namespace, uid(owner))
        .into_iter()
        .cloned()
        .collect()
}

/// Writes `status` on the object at `key` if it differs from what is stored.
fn write_status(st: &mut State, key: &Key, status: Value) -> bool {
    let Some(mut obj) = st.store.get(key).cloned() else {
        return false;
    };
    if obj.get("status") == Some(&status) {
        return false;
    }
    obj["status"] = status;
    st.store.replace(key.clone(), obj);
    true
}

fn drop_zero(mut status: Value) -> Value {
    if let Some(m) = status.as_object_mut() {
        m.retain(|_, v| v.as_i64() != Some(0));
    }
    status
}

/// A new replica set for deployment `d` (at `key`) with the template of hash `hash`.
fn new_replicaset(
    key: &Key,
    d: &Value,
    template: &Value,
    hash: &str,
    replicas: i64,
    revision: usize,
) -> Value {
    let mut rs_labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    rs_labels["pod-template-hash"] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector.get("matchLabels").is_some_and(Value::is_object) {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let mut tpl = template.clone();
    if !tpl.get("metadata").is_some_and(Value::is_object) {
        tpl["metadata"] = json!({});
    }
    tpl["metadata"]["labels"] = rs_labels.clone();
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", key.name),
            "labels": rs_labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": replicas.to_string(),
                "deployment.kubernetes.io/revision": revision.to_string(),
            },
            "ownerReferences": [owner_ref("Deployment", d)],
        },
        "spec": { "replicas": replicas, "selector": selector, "template": tpl },
    })
}

/// The pod counts of a deployment's replica sets.
struct Counts {
    /// All pods.
    total: i64,
    /// The pods of the current set.
    updated: i64,
    /// Ready pods.
    ready: i64,
    /// Available pods.
    available: i64,
}

/// Scales deployment `d`'s current set (by `hash`) to `replicas` and every older one to
/// zero; counts their pods.
fn scale_replicasets(st: &mut State, key: &Key, d: &Value, hash: &str, replicas: i64) -> Counts {
    let owned: Vec<Value> = owned_by(st, "replicasets", &key.namespace, d);
    let (mut total, mut updated, mut ready, mut available) = (0, 0, 0, 0);
    for rs in &owned {
        let is_current = str_at(rs, "/metadata/labels/pod-template-hash") == hash;
        let want = if is_current { replicas } else { 0 };
        if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(want) && !deleting(rs) {
            let mut next = rs.clone();
            next["spec"]["replicas"] = json!(want);
            if let Some(k) = key_of("replicasets", rs) {
                st.store.replace(k, next);
            }
        }
        let n = |p: &str| rs.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        total += n("/status/replicas");
        ready += n("/status/readyReplicas");
        available += n("/status/availableReplicas");
        if is_current {
            updated = n("/status/replicas");
        }
    }
    Counts {
        total,
        updated,
        ready,
        available,
    }
}

/// A deployment condition; its times are kept from `old` status when it did not change.
fn condition(old: &Value, ty: &str, ok: bool, reason: &str, message: String) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let keep = prev.is_some_and(|p| p["status"] == status && p["reason"] == reason);
    let (lu, lt) = match prev {
        Some(p) if keep => (p["lastUpdateTime"].clone(), p["lastTransitionTime"].clone()),
        _ => (json!(ids::now()), json!(ids::now())),
    };
    json!({"type": ty, "status": status, "lastUpdateTime": lu, "lastTransitionTime": lt,
           "reason": reason, "message": message})
}

/// The status of deployment `d` (named `name`), from its sets' pod counts.
fn deployment_status(d: &Value, name: &str, hash: &str, replicas: i64, c: &Counts) -> Value {
    let Counts {
        total,
        updated,
        ready,
        available,
    } = *c;
    let old = d.get("status").cloned().unwrap_or(json!({}));
    let avail_ok = available >= replicas;
    let done = updated == replicas && available == replicas && total == replicas;
    let conditions = json!([
        condition(
            &old,
            "Available",
            avail_ok,
            if avail_ok {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if avail_ok {
                "Deployment has minimum availability.".to_string()
            } else {
                "Deployment does not have minimum availability.".to_string()
            },
        ),
        condition(
            &old,
            "Progressing",
            true,
            if done {
                "NewReplicaSetAvailable"
            } else {
                "ReplicaSetUpdated"
            },
            format!(
                "ReplicaSet \"{name}-{hash}\" {}",
                if done {
                    "has successfully progressed."
                } else {
                    "is progressing."
                }
            ),
        ),
    ]);
    let mut status = drop_zero(json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
    }));
    status["conditions"] = conditions;
    status
}

/// Creates `count` pods from replica set `rs`'s template.
fn create_pods(st: &mut State, key: &Key, rs: &Value, count: i64) {
    let tpl = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    for _ in 0..count {
        let mut meta = tpl.get("metadata").cloned().unwrap_or(json!({}));
        meta["name"] = json!(format!("{}-{}", key.name, ids::suffix(5)));
        meta["ownerReferences"] = json!([owner_ref("ReplicaSet", rs)]);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": tpl.get("spec").cloned().unwrap_or(json!({})),
        });
        let _ = api::create(st, rt("pods"), &key.namespace, &pod, false);
    }
}

/// Deletes `count` of the `active` pods, not-ready ones first, then the newest.
fn delete_pods(st: &mut State, active: &[&Value], count: i64) {
    let mut victims = active.to_vec();
    // Not-ready pods first, then the newest, as the real controller prefers.
    victims.sort_by_key(|p| {
        let ready = str_at(p, "/status/phase") == "Running";
        (
            ready,
            std::cmp::Reverse(str_at(p, "/metadata/creationTimestamp").to_string()),
        )
    });
    let extra: Vec<Key> = victims
        .iter()
        .take(count as usize)
        .filter_map(|p| key_of("pods", p))
        .collect();
    for k in extra {
        let _ = api::delete(
            st,
            rt("pods"),
            &k.namespace,
            &k.name,
            &DeleteOptions::default(),
        );
    }
}

/// The status of replica set `rs` (at `key`), from its live pods.
fn replicaset_status(st: &State, key: &Key, rs: &Value) -> Value {
    let pods: Vec<Value> = owned_by(st, "pods", &key.namespace, rs)
        .into_iter()
        .filter(|p| !deleting(p))
        .collect();
    let selector = rs
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .map(|s| LabelSelector::from_label_selector(&s))
        .unwrap_or_default();
    let labelled = pods
        .iter()
        .filter(|p| selector.matches(&labels(p, "/metadata/labels")))
        .count();
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let status = drop_zero(json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": labelled,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    }));
    if status.get("replicas").is_none() {
        let mut s = status;
        s["replicas"] = json!(0);
        s
    } else {
        status
    }
}

impl Controllers {
    /// Runs passes until the store settles; returns when timed work next needs a look.
    pub fn reconcile(&mut self, st: &mut State, opts: &Options, now: Instant) -> Option<Instant> {
        // A thousand heartbeats renewed every 10 s must not cost a pass over every object
        // each: skipped when every change since the last pass is inert and no timed work
        // is due.
        if let Some((rv, next)) = self.settled
            && next.is_none_or(|n| n > now)
            && st
                .store
                .changes_since(rv)
                .is_some_and(|mut changes| changes.all(inert))
        {
            self.settled = Some((st.store.current_rv(), next));
            return next;
        }
        let mut next = None;
        for _ in 0..50 {
            let before = st.store.current_rv();
            next = None;
            self.namespaces(st);
            self.garbage_collect(st);
            self.deployments(st);
            self.replicasets(st);
            self.kubelet(st, opts, now, &mut next);
            if st.store.current_rv() == before {
                break;
            }
        }
        self.settled = Some((st.store.current_rv(), next));
        next
    }

    fn deployments(&mut self, st: &mut State) {
        for key in st.store.keys("deployments") {
            let Some(d) = st.store.get(&key).cloned() else {
                continue;
            };
            if deleting(&d) {
                continue;
            }
            let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let hash = pod_template_hash(&template);
            let replicas = d
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let owned: Vec<Value> = owned_by(st, "replicasets", &key.namespace, &d);
            let current = owned
                .iter()
                .find(|rs| str_at(rs, "/metadata/labels/pod-template-hash") == hash);
            if current.is_none() {
                let rs = new_replicaset(&key, &d, &template, &hash, replicas, owned.len() + 1);
                // A name collision leaves the deployment without a new set, as a real
                // controller would until the collision is resolved.
                let _ = api::create(st, rt("replicasets"), &key.namespace, &rs, false);
            }
            // Scale: the current set to the desired count, every older one to zero.
            let counts = scale_replicasets(st, &key, &d, &hash, replicas);
            let status = deployment_status(&d, &key.name, &hash, replicas, &counts);
            write_status(st, &key, status);
        }
    }

    fn replicasets(&mut self, st: &mut State) {
        for key in st.store.keys("replicasets") {
            let Some(rs) = st.store.get(&key).cloned() else {
                continue;
            };
            if deleting(&rs) {
                continue;
            }
            let want = rs
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let pods: Vec<Value> = owned_by(st, "pods", &key.namespace, &rs);
            let active: Vec<&Value> = pods.iter().filter(|p| !deleting(p)).collect();
            let have = active.len() as i64;
            if have < want {
                create_pods(st, &key, &rs, want - have);
            } else if have > want {
                delete_pods(st, &active, have - want);
            }
            let status = replicaset_status(st, &key, &rs);
            write_status(st, &key, status);
        }
    }

    fn kubelet(
        &mut self,
        st: &mut State,
        opts: &Options,
        now: Instant,
        next: &mut Option<Instant>,
    ) {
        let mut soonest = |t: Instant| {
            *next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        let mut present = HashSet::new();
        for key in st.store.keys("pods") {
            let Some(p) = st.store.get(&key).cloned() else {
                continue;
            };
            let id = uid(&p).to_string();
            present.insert(id.clone());
            if deleting(&p) {
                let since = *self.terminating_since.entry(id).or_insert(now);
                let due = since + opts.pod_termination_delay;
                if now >= due && finalizers(&p).is_empty() {
                    st.store.remove(&key);
                } else if finalizers(&p).is_empty() {
                    soonest(due);
                }
                continue;
            }
            if matches!(str_at(&p, "/status/phase"), "" | "Pending") {
                let since = *self.pending_since.entry(id).or_insert(now);
                let due = since + opts.pod_ready_delay;
                if now >= due {
                    self.start(st, key, p);
                } else {
                    soonest(due);
                }
            }
        }
        self.pending_since.retain(|k, _| present.contains(k));
        self.terminating_since.retain(|k, _| present.contains(k));
    }

    fn start(&mut self, st: &mut State, key: Key, mut p: Value) {
        self.next_ip += 1;
        let started = ids::now();
        let statuses: Vec<Value> = p
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        json!({
                            "name": c["name"],
                            "image": c["image"],
                            "imageID": "",
                            "containerID": format!("containerd://{:016x}", ids::random_u64()),
                            "ready": true,
                            "started": true,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": started}},
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": started});
        p["spec"]["nodeName"] = json!("testcluster-node");
        let ip = format!(
            "10.244.{}.{}",
            (self.next_ip >> 8) & 0xff,
            self.next_ip & 0xff
        );
        p["status"] = json!({
            "phase": "Running",
            "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        });
        st.store.replace(key, p);
    }
}

/// Whether a pod is Running with its Ready condition true.
pub fn pod_ready(p: &Value) -> bool {
    str_at(p, "/status/phase") == "Running"
        && p.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

/// How long to sleep when nothing timed is pending.
pub const IDLE: Duration = Duration::from_secs(3600);
