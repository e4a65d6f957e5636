//! The emulator's shared state: the store, the test-controlled faults, the audit log, and
//! the options every part reads. One lock guards it all; no lock is held across an await.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::store::Store;

/// How an emulator instance behaves. `Options::default()` suits most tests.
#[derive(Debug, Clone)]
pub struct Options {
    /// The minor version `/version` reports (kubectl's dispatcher picks `kubectl.1.<minor>`).
    pub minor: u32,
    /// The kubeconfig's context (and cluster) name.
    pub context: String,
    /// The context's default namespace.
    pub namespace: String,
    /// How long a new pod stays `Pending` before it is `Running` and Ready.
    pub pod_ready_delay: Duration,
    /// How long a gracefully deleted pod lingers (with `deletionTimestamp`) before it is gone.
    pub pod_termination_delay: Duration,
    /// How many changes are kept for watches to replay; older versions get a 410.
    pub watch_history: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// A watch's length when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            minor: 31,
            context: "testcluster".to_string(),
            namespace: "default".to_string(),
            pod_ready_delay: Duration::from_millis(100),
            pod_termination_delay: Duration::from_millis(100),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// A request refused on purpose by a test: `code` for `verb` on `resource` (`*` = any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRule {
    /// The HTTP code to answer with (403, 429, 500, ...).
    pub code: u16,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`) or `*`.
    pub verb: String,
    /// The resource, with any subresource (`deployments/scale`), or `*`.
    pub resource: String,
}

impl FailRule {
    /// Whether the rule covers this request.
    pub fn matches(&self, verb: &str, resource: &str) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
    }
}

/// The faults a test switched on.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added before every answer.
    pub latency: Duration,
    /// Refusals, first match wins.
    pub rules: Vec<FailRule>,
    /// Verb and resource pairs RBAC would deny (the code is unused: always 403). Requests
    /// get RBAC's 403 and access reviews answer `allowed: false`; see `access`.
    pub denials: Vec<FailRule>,
    /// Requests (as `verb`, `resource`; the code is unused) after which the server goes off
    /// the network instead of answering; each is used once.
    pub cuts: Vec<FailRule>,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When it arrived.
    pub at: SystemTime,
    /// HTTP method.
    pub method: String,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or empty for non-resource paths.
    pub verb: String,
    /// The path.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The resource with any subresource (`deployments/scale`); empty for non-resource paths.
    pub resource: String,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object name in the path, if any.
    pub name: Option<String>,
    /// The request's `Content-Type`.
    pub content_type: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The client's `User-Agent` (empty when it sent none).
    pub user_agent: String,
}

/// What the lock guards.
#[derive(Debug)]
pub struct State {
    /// Every object.
    pub store: Store,
    /// Faults switched on by the test.
    pub faults: Faults,
    /// Every request so far.
    pub audit: Vec<AuditEntry>,
    /// Counter for service cluster IPs.
    pub next_cluster_ip: u32,
    /// Where `pods/portforward` connects, by (namespace, pod, port): the test's own
    /// listeners standing in for the pods' containers.
    pub forwards: std::collections::BTreeMap<(String, String, u16), std::net::SocketAddr>,
}

/// State shared by the listener, the request handlers and the controllers.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Woken after every write so that the controllers look again.
    pub changed: Notify,
    /// The options the instance started with.
    pub opts: Options,
    /// The bearer token every request must carry.
    pub token: String,
    /// The reachability switch the listener follows (`true`: on the network).
    pub reachable: watch::Sender<bool>,
}

impl Shared {
    /// Fresh state for an instance.
    pub fn new(opts: Options, token: String) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                store: Store::new(opts.watch_history),
                faults: Faults::default(),
                audit: Vec::new(),
                next_cluster_ip: 1,
                forwards: Default::default(),
            }),
            changed: Notify::new(),
            opts,
            token,
            reachable: watch::channel(true).0,
        })
    }

    /// Takes the lock. A panic while it was held cannot leave the JSON store half-written
    /// (every write is one map operation), so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
