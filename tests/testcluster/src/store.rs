//! The object store: every object as JSON, one `resourceVersion` counter across all of them,
//! and a bounded log of changes that watches replay from and subscribe to.
//!
//! # Guarantees
//! - Every write gets the next `resourceVersion`, written into the object itself.
//! - A watcher that subscribes at version N sees every change after N exactly once, in order:
//!   replay and subscription happen under the same lock as writes.
//! - A version older than the oldest change kept is refused with `Expired` (a 410).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The resource's plural.
    pub resource: &'static str,
    /// Its namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Key {
    /// A key for `resource` / `namespace` / `name`.
    pub fn new(resource: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

/// One change, as watches replay it.
#[derive(Debug)]
pub struct Change {
    /// The `resourceVersion` the change produced.
    pub rv: u64,
    /// Where the object lives.
    pub key: Key,
    /// What happened.
    pub kind: ChangeType,
    /// The object before the change (none for `Added`).
    pub old: Option<Value>,
    /// The object after the change; for `Deleted`, its last state at the deleting version.
    pub new: Value,
}

/// The changes to replay and the receiver for the ones still to come.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// The store. Lives behind the emulator's state lock.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// The keys each controller (by uid: an `ownerReference` with `controller: true`)
    /// controls, kept with every write, so that a controller finds what it owns without a
    /// scan of the namespace (a thousand replica sets over a thousand pods each pass).
    controlled: std::collections::HashMap<String, std::collections::BTreeSet<Key>>,
    log: VecDeque<Arc<Change>>,
    log_capacity: usize,
    /// Changes at or below this version have been forgotten.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

/// A watch start older than the store remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The version asked for.
    pub asked: u64,
    /// The oldest version a watch may start from now.
    pub oldest: u64,
}

impl Store {
    /// An empty store that keeps the last `log_capacity` changes for replay.
    pub fn new(log_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            controlled: std::collections::HashMap::new(),
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            compacted: 1,
            tx,
        }
    }

    /// The version of the newest change.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `resource`, in one namespace or (with `None`) in all, ordered by
    /// namespace then name.
    pub fn list(&self, resource: &'static str, namespace: Option<&str>) -> Vec<&Value> {
        let lo = Key::new(resource, namespace.unwrap_or(""), "");
        self.objects
            .range(lo..)
            .take_while(|(k, _)| {
                k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v)
            .collect()
    }

    /// Objects of `resource` in `namespace` whose controller is the object with uid `owner`.
    pub fn controlled_by(&self, resource: &str, namespace: &str, owner: &str) -> Vec<&Value> {
        self.controlled
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|k| k.resource == resource && k.namespace == namespace)
            .filter_map(|k| self.objects.get(k))
            .collect()
    }

    /// Keeps [`Self::controlled`] right as the object at `key` goes from `old` to `new`.
    fn index(&mut self, key: &Key, old: Option<&Value>, new: Option<&Value>) {
        let (was, is) = (old.and_then(controller_of), new.and_then(controller_of));
        if was == is {
            return;
        }
        if let Some(u) = was
            && let Some(set) = self.controlled.get_mut(&u)
        {
            set.remove(key);
            if set.is_empty() {
                self.controlled.remove(&u);
            }
        }
        if let Some(u) = is {
            self.controlled.entry(u).or_default().insert(key.clone());
        }
    }

    /// Every key of `resource`, across namespaces.
    pub fn keys(&self, resource: &'static str) -> Vec<Key> {
        self.list(resource, None)
            .into_iter()
            .filter_map(|v| key_of(resource, v))
            .collect()
    }

    fn bump(&mut self, obj: &mut Value) -> u64 {
        self.rv += 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".to_string(),
                Value::String(self.rv.to_string()),
            );
        }
        self.rv
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.log.push_back(change.clone());
        while self.log.len() > self.log_capacity {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
    }

    /// Stores a new object (the caller checked the key is free) and returns it as stored.
    pub fn insert(&mut self, key: Key, mut obj: Value) -> Value {
        let rv = self.bump(&mut obj);
        self.index(&key, None, Some(&obj));
        self.objects.insert(key.clone(), obj.clone());
        self.record(Change {
            rv,
            key,
            kind: ChangeType::Added,
            old: None,
            new: obj.clone(),
        });
        obj
    }

    /// Replaces an existing object and returns it as stored. Writing an object equal to
    /// the stored one (apart from `resourceVersion`) changes nothing, as on a real server.
    pub fn replace(&mut self, key: Key, mut obj: Value) -> Value {
        let old = self.objects.get(&key).cloned();
        if let Some(o) = &old {
            let rv = o.pointer("/metadata/resourceVersion").cloned();
            if let (Some(rv), Some(meta)) = (rv, obj.get_mut("metadata")) {
                meta["resourceVersion"] = rv;
            }
            if *o == obj {
                return obj;
            }
        }
        let rv = self.bump(&mut obj);
        self.index(&key, old.as_ref(), Some(&obj));
        self.objects.insert(key.clone(), obj.clone());
        self.record(Change {
            rv,
            key,
            kind: if old.is_some() {
                ChangeType::Modified
            } else {
                ChangeType::Added
            },
            old,
            new: obj.clone(),
        });
        obj
    }

    /// Removes the object; returns its last state (at the deleting version).
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.index(key, Some(&obj), None);
        let old = obj.clone();
        let rv = self.bump(&mut obj);
        self.record(Change {
            rv,
            key: key.clone(),
            kind: ChangeType::Deleted,
            old: Some(old),
            new: obj.clone(),
        });
        Some(obj)
    }

    /// The changes after `from`, and a receiver for the ones still to come.
    pub fn subscribe_from(&self, from: u64) -> Result<Subscription, Expired> {
        if from < self.compacted {
            return Err(Expired {
                asked: from,
                oldest: self.compacted,
            });
        }
        let replay = self.log.iter().filter(|c| c.rv > from).cloned().collect();
        Ok((replay, self.tx.subscribe()))
    }

    /// The changes after `from`, oldest first; `None` when some were forgotten.
    pub fn changes_since(&self, from: u64) -> Option<impl Iterator<Item = &Change>> {
        let oldest_kept = self.log.front().map_or(self.rv, |c| c.rv.saturating_sub(1));
        (from >= self.compacted && from >= oldest_kept).then(|| {
            self.log
                .iter()
                .filter(move |c| c.rv > from)
                .map(AsRef::as_ref)
        })
    }

    /// A receiver for changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Forgets every change so far: watches from any older version get a 410.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }
}

/// The key of a stored object of `resource`.
/// The uid in an object's controller `ownerReference`, if it has one.
fn controller_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?
        .get("uid")?
        .as_str()
        .map(str::to_string)
}

pub fn key_of(resource: &'static str, obj: &Value) -> Option<Key> {
    let name = obj.pointer("/metadata/name")?.as_str()?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(Key::new(resource, ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}})
    }

    #[test]
    fn every_write_takes_the_next_version() {
        let mut s = Store::new(10);
        let a = s.insert(Key::new("configmaps", "ns", "a"), cm("a"));
        let b = s.insert(Key::new("configmaps", "ns", "b"), cm("b"));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        assert_eq!(b["metadata"]["resourceVersion"], "3");
        let gone = s
            .remove(&Key::new("configmaps", "ns", "a"))
            .expect("was there");
        assert_eq!(gone["metadata"]["resourceVersion"], "4");
        assert_eq!(s.list("configmaps", Some("ns")).len(), 1);
    }

    #[test]
    fn an_unchanged_replace_is_not_a_change() {
        let mut s = Store::new(10);
        let k = Key::new("configmaps", "ns", "a");
        let a = s.insert(k.clone(), cm("a"));
        let again = s.replace(k, cm("a"));
        assert_eq!(again, a);
        assert_eq!(s.current_rv(), 2);
    }

    #[test]
    fn replay_starts_after_the_given_version_and_old_versions_expire() {
        let mut s = Store::new(2);
        for n in ["a", "b", "c"] {
            s.insert(Key::new("configmaps", "ns", n), cm(n));
        }
        let (replay, _) = s.subscribe_from(3).expect("kept");
        assert_eq!(replay.iter().map(|c| c.rv).collect::<Vec<_>>(), vec![4]);
        assert_eq!(
            s.subscribe_from(1).err(),
            Some(Expired {
                asked: 1,
                oldest: 2
            })
        );
        s.compact();
        assert!(s.subscribe_from(3).is_err());
        assert!(s.subscribe_from(4).is_ok());
    }

    #[test]
    fn lists_are_scoped_to_resource_and_namespace() {
        let mut s = Store::new(10);
        s.insert(Key::new("configmaps", "a", "x"), cm("x"));
        s.insert(Key::new("configmaps", "b", "y"), cm("y"));
        s.insert(Key::new("pods", "a", "z"), cm("z"));
        assert_eq!(s.list("configmaps", None).len(), 2);
        assert_eq!(s.list("configmaps", Some("a")).len(), 1);
        assert_eq!(s.list("pods", Some("b")).len(), 0);
    }
}
