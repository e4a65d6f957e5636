//! Telepresence 0.x proxies that no live heartbeat covers: 0.105 proxy Deployments and
//! 0.106+ proxy Pods, found by their `telepresence` label.
//!
//! - One carrying an agent's recovery facts (its Lease lost) is repaired from them: the
//!   leader makes a Lease for it, held by itself and marked repairing, and the repair goes
//!   the way of every other (the facts prove the replica count).
//! - One without facts gets, once it has been seen for the grace, a Warning Event on it and
//!   on the Deployment it most likely replaced, naming the commands a person should run,
//!   and a line in `/status`. Nothing is guessed: no replica count, no delete.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Options, SharedStatus, lock, repair};
use crate::effects::cluster::lease::{self, Involved, NewLease};
use crate::session::ProxyKind;
use crate::team::{self, Facts};

/// A labelled object as watched.
#[derive(Debug)]
pub struct Seen {
    kind: ProxyKind,
    meta: ObjectMeta,
    /// When it is looked at next (`None`: handled, not looked at again).
    next: Option<Instant>,
}

/// How long after a failed report or adoption it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A watch event on a labelled object.
#[derive(Debug)]
pub enum ProxyEvent {
    /// Added or changed.
    Seen(ProxyKind, Box<ObjectMeta>),
    /// Deleted.
    Gone(String),
    /// A (re-)list of this kind begins: what it does not bring again is gone.
    Relist(ProxyKind),
    /// That list is complete.
    Listed(ProxyKind),
}

/// The leftovers the sweeper watches.
pub struct Leftovers {
    client: kube::Client,
    namespace: Option<String>,
    me: String,
    dry_run: bool,
    grace: Duration,
    status: SharedStatus,
    seen: HashMap<String, Seen>,
    /// The uids a re-list of each kind brought so far.
    relisting: HashMap<ProxyKind, std::collections::HashSet<String>>,
}

fn watch_kind<K>(
    client: &kube::Client,
    ns: Option<&str>,
    kind: ProxyKind,
) -> BoxStream<'static, ProxyEvent>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api: kube::Api<K> = match ns {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    watcher(api, watcher::Config::default().labels("telepresence"))
        .default_backoff()
        .filter_map(move |e| async move {
            match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    Some(ProxyEvent::Seen(kind, Box::new(o.meta().clone())))
                }
                Ok(watcher::Event::Delete(o)) => {
                    Some(ProxyEvent::Gone(o.meta().uid.clone().unwrap_or_default()))
                }
                Ok(watcher::Event::Init) => Some(ProxyEvent::Relist(kind)),
                Ok(watcher::Event::InitDone) => Some(ProxyEvent::Listed(kind)),
                Err(e) => {
                    warn!("watching Telepresence proxies (retrying): {e}");
                    None
                }
            }
        })
        .boxed()
}

impl std::fmt::Debug for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} labelled object(s) watched", self.seen.len())
    }
}

impl Leftovers {
    /// Watches nothing yet; see [`Self::watch`].
    pub fn new(client: kube::Client, opts: &Options, status: SharedStatus) -> Self {
        Self {
            client,
            namespace: opts.namespace.clone(),
            me: opts.identity.clone(),
            dry_run: opts.dry_run,
            grace: opts.grace,
            status,
            seen: HashMap::new(),
            relisting: HashMap::new(),
        }
    }

    /// The watch of labelled Deployments and Pods.
    pub fn watch(&self) -> BoxStream<'static, ProxyEvent> {
        let ns = self.namespace.as_deref();
        futures::stream::select(
            watch_kind::<Deployment>(&self.client, ns, ProxyKind::Deployment),
            watch_kind::<Pod>(&self.client, ns, ProxyKind::Pod),
        )
        .boxed()
    }

    /// Notes a watch event.
    pub fn apply(&mut self, e: ProxyEvent) {
        match e {
            ProxyEvent::Seen(kind, meta) => {
                // Pods of a proxy Deployment go with it; objects being deleted are going.
                let owned = meta
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty());
                let uid = meta.uid.clone().unwrap_or_default();
                if let Some(seen) = self.relisting.get_mut(&kind) {
                    seen.insert(uid.clone());
                }
                if (kind == ProxyKind::Pod && owned) || meta.deletion_timestamp.is_some() {
                    self.seen.remove(&uid);
                    return;
                }
                let entry = self.seen.entry(uid).or_insert_with(|| Seen {
                    kind,
                    meta: (*meta).clone(),
                    next: Some(Instant::now() + self.grace),
                });
                entry.meta = *meta;
            }
            ProxyEvent::Gone(uid) => {
                self.seen.remove(&uid);
            }
            ProxyEvent::Relist(kind) => {
                self.relisting.insert(kind, Default::default());
            }
            ProxyEvent::Listed(kind) => {
                if let Some(listed) = self.relisting.remove(&kind) {
                    self.seen
                        .retain(|uid, s| s.kind != kind || listed.contains(uid));
                }
            }
        }
    }

    /// Whether a leftover is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.seen.values().any(|s| s.next.is_some_and(|n| n <= now))
    }

    /// Completes when the next leftover is due (seen for the grace, or to look at again).
    pub async fn next_due(&self) {
        let t = self.seen.values().filter_map(|s| s.next).min();
        super::sleep_until(t).await;
    }

    /// The leader's pass over leftovers seen for the grace; `covered`: the sessions
    /// (`namespace/id`) a heartbeat Lease covers.
    pub async fn report(&mut self, covered: &[String], leadership: &super::elect::Leadership) {
        let now = Instant::now();
        let due: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, s)| s.next.is_some_and(|n| n <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for uid in due {
            if !leadership.leads() {
                return;
            }
            let Some(s) = self.seen.get(&uid) else {
                continue;
            };
            let ns = s.meta.namespace.clone().unwrap_or_default();
            let id = label(&s.meta, "telepresence");
            let next = if covered.iter().any(|c| *c == format!("{ns}/{id}")) {
                // A heartbeat covers it: looked at again a grace later.
                Some(Instant::now() + self.grace)
            } else {
                let annotations = s.meta.annotations.clone().unwrap_or_default();
                let done = match Facts::from_annotations(&annotations) {
                    Ok(f) => self.adopt(s, &f).await,
                    Err(_) => self.warn_person(s).await,
                };
                (!done).then(|| Instant::now() + RETRY_AFTER)
            };
            if let Some(s) = self.seen.get_mut(&uid) {
                s.next = next;
            }
        }
    }

    /// A proxy with an agent's facts but no heartbeat: a Lease is made for its repair.
    async fn adopt(&self, s: &Seen, f: &Facts) -> bool {
        let ns = s.meta.namespace.clone().unwrap_or_default();
        // Facts that point elsewhere are anyone's words: a person decides.
        if self.dry_run || f.untrusted(&ns).is_some() {
            return self.warn_person(s).await;
        }
        match super::optout::opted_out(&self.client, f).await {
            Ok(Some(who)) => {
                lock(&self.status).leftovers.push(format!(
                    "{}: left alone, {who} opted out ({}: \"false\")",
                    object(s),
                    crate::team::SWEEP_OPT_OUT
                ));
                return true;
            }
            Ok(None) => {}
            Err(e) => {
                warn!("{e}");
                return false;
            }
        }
        let name = team::lease_name(f.kind, &f.session);
        let mut annotations = f.to_annotations();
        annotations.insert(repair::STATE.to_string(), "repairing".to_string());
        annotations.insert(
            repair::TAKEN_FROM.to_string(),
            "no heartbeat: the proxy carried the facts alone".to_string(),
        );
        let record = team::fresh_heartbeat(&self.me);
        let new = NewLease {
            labels: team::lease_labels(&f.session),
            annotations,
            owner: None,
        };
        match lease::create(&self.client, &ns, &name, &record, &new).await {
            // One exists already (made meanwhile): the main loop follows it.
            Ok(lease::Written::Lost) => true,
            Ok(lease::Written::Done(_)) => {
                info!(proxy = %object(s), "a proxy with recovery facts and no heartbeat: repairing it from its facts");
                let about = Involved {
                    api_version: lease::api_version(s.kind).to_string(),
                    kind: lease::kind_name(s.kind).to_string(),
                    name: s.meta.name.clone().unwrap_or_default(),
                    namespace: ns.clone(),
                    uid: s.meta.uid.clone(),
                };
                let message = format!(
                    "Telepresence session {} left this proxy with a telepolice agent's recovery facts but no heartbeat Lease: made lease/{name} to repair it from the facts",
                    f.session
                );
                if let Err(e) = lease::event(
                    &self.client,
                    &about,
                    "AdoptedTelepresenceProxy",
                    &message,
                    false,
                    &self.me,
                )
                .await
                {
                    warn!("{e}");
                }
                true
            }
            Err(e) => {
                warn!("making a lease for {}: {e}", object(s));
                false
            }
        }
    }

    /// A proxy no agent recorded: Events for a person, a line in `/status`.
    async fn warn_person(&self, s: &Seen) -> bool {
        let ns = s.meta.namespace.clone().unwrap_or_default();
        let name = s.meta.name.clone().unwrap_or_default();
        let id = label(&s.meta, "telepresence");
        let original = self.likely_original(s).await;
        let mut run = format!("kubectl -n {ns} delete {} {name}", s.kind.resource());
        if let Some(o) = &original {
            run.push_str(&format!(
                " && kubectl -n {ns} scale deployment {o} --replicas=<its count before the swap>"
            ));
        }
        let message = format!(
            "Telepresence session {id} left {} with no telepolice agent's record (no replica count is known, so nothing was repaired). If the session is over, run: {run}",
            object(s)
        );
        let mut about = vec![Involved {
            api_version: lease::api_version(s.kind).to_string(),
            kind: lease::kind_name(s.kind).to_string(),
            name: name.clone(),
            namespace: ns.clone(),
            uid: s.meta.uid.clone(),
        }];
        if let Some(o) = &original {
            about.push(Involved {
                api_version: "apps/v1".to_string(),
                kind: "Deployment".to_string(),
                name: o.clone(),
                namespace: ns.clone(),
                uid: None,
            });
        }
        for a in &about {
            if let Err(e) = lease::event(
                &self.client,
                a,
                "UnrecordedTelepresenceProxy",
                &message,
                true,
                &self.me,
            )
            .await
            {
                warn!("{e}");
                return false;
            }
        }
        warn!("{message}");
        let mut st = lock(&self.status);
        st.leftovers.push(format!(
            "{ns}/{} {name}: session {id}, unrecorded: {run}",
            s.kind.resource()
        ));
        true
    }

    /// The Deployment a swap proxy most likely replaced: at 0 replicas, its name the
    /// proxy's first 17 characters (0.x's naming), its selector matched by the proxy's
    /// labels. Only named in the Event; never acted on.
    async fn likely_original(&self, s: &Seen) -> Option<String> {
        let ns = s.meta.namespace.clone()?;
        let name = s.meta.name.clone()?;
        let prefix = name.rsplit_once('-').map(|(p, _)| p.to_string())?;
        let labels = s.meta.labels.clone().unwrap_or_default();
        let deps: kube::Api<Deployment> = kube::Api::namespaced(self.client.clone(), &ns);
        let list = deps.list(&kube::api::ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|d| {
            let dn = d.metadata.name.clone()?;
            let spec = &d.spec;
            let at_zero = spec.replicas == Some(0);
            let selector: BTreeMap<String, String> =
                spec.selector.match_labels.clone().unwrap_or_default();
            let matches =
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            let named = dn.chars().take(17).collect::<String>() == prefix && dn != name;
            (at_zero && matches && named).then_some(dn)
        })
    }
}

fn label(m: &ObjectMeta, k: &str) -> String {
    m.labels
        .as_ref()
        .and_then(|l| l.get(k))
        .cloned()
        .unwrap_or_default()
}

fn object(s: &Seen) -> String {
    format!(
        "{}/{} in {}",
        s.kind.resource(),
        s.meta.name.clone().unwrap_or_default(),
        s.meta.namespace.clone().unwrap_or_default()
    )
}
