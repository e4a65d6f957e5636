//! [`TestCluster`]: one emulator instance on its own thread and runtime, so that tests may
//! call it from synchronous code, from any async runtime, or from another process through
//! the kubeconfig it writes.
//!
//! # Guarantees
//! - Each instance has its own port, CA, token and state: tests run in parallel safely.
//! - [`TestCluster::set_reachable`] returns once the change is in effect.
//! - Dropping the handle stops the server and joins its thread.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::sync::watch;

use crate::api;
use crate::resources::by_plural;
use crate::state::{AuditEntry, FailRule, Options, Shared};
use crate::status::ApiError;
use crate::store::Key;
use crate::{ids, server, tls};

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS identity could not be generated.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// No port on 127.0.0.1 could be bound.
    #[error("binding 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// The runtime thread could not be started.
    #[error("starting the emulator's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A running emulator. See the crate documentation.
#[derive(Debug)]
pub struct TestCluster {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    /// Told `true` on drop; the server, the controllers and every watch stop.
    shutdown: watch::Sender<bool>,
    /// The listener's acknowledgements of reachability switches, as (switched to, whether
    /// it took effect). The switch itself is `shared.reachable`.
    acks: std::sync::Mutex<std::sync::mpsc::Receiver<(bool, bool)>>,
    /// The emulator's thread; joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Creates the namespaces a new cluster has.
fn create_namespaces(shared: &Shared) {
    let mut st = shared.lock();
    let rt = by_plural("namespaces").unwrap_or(&crate::resources::RESOURCES[0]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        // Fresh store: these cannot collide.
        let _ = api::create(&mut st, rt, "", &body, false);
    }
}

/// The emulator's thread: binds a free port, reports it (or the failure) on `ready_tx`,
/// then serves and runs the controllers until shutdown.
fn run(
    shared: Arc<Shared>,
    tls: tokio_rustls::TlsAcceptor,
    reachable_rx: watch::Receiver<bool>,
    ack_tx: std::sync::mpsc::Sender<(bool, bool)>,
    shutdown_rx: watch::Receiver<bool>,
    ready_tx: std::sync::mpsc::Sender<Result<SocketAddr, std::io::Error>>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        // Port 0, bound once and kept: no window in which another process
        // could take the port between choosing and binding it.
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = match server::bind(any).and_then(|l| Ok((l.local_addr()?, l))) {
            Ok((addr, l)) => {
                let _ = ready_tx.send(Ok(addr));
                l
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let controllers =
            tokio::spawn(server::run_controllers(shared.clone(), shutdown_rx.clone()));
        server::serve(shared, listener, tls, reachable_rx, ack_tx, shutdown_rx).await;
        let _ = controllers.await;
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

impl TestCluster {
    /// Starts an instance on a free port of 127.0.0.1 with the namespaces a new cluster
    /// has (`default`, `kube-system`, `kube-public`, `kube-node-lease`).
    pub fn start(opts: Options) -> Result<Self, StartError> {
        let identity = tls::generate()?;
        let shared = Shared::new(opts, ids::token());
        create_namespaces(&shared);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let reachable_rx = shared.reachable.subscribe();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, std::io::Error>>();
        let tls = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("testcluster".to_string())
            .spawn(move || {
                run(
                    thread_shared,
                    tls,
                    reachable_rx,
                    ack_tx,
                    shutdown_rx,
                    ready_tx,
                )
            })
            .map_err(StartError::Runtime)?;
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(StartError::Bind(e)),
            Err(_) => {
                return Err(StartError::Runtime(std::io::Error::other(
                    "the emulator thread ended before serving",
                )));
            }
        };
        Ok(Self {
            shared,
            addr,
            ca_pem: identity.ca_pem,
            shutdown,
            acks: std::sync::Mutex::new(ack_rx),
            thread: Some(thread),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bearer token requests must carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The options the instance runs with.
    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// A kubeconfig with one cluster, user and context, all named after
    /// [`Options::context`], the CA embedded and the token as the user's credential.
    pub fn kubeconfig(&self) -> String {
        let name = &self.shared.opts.context;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}-user\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-user\n    namespace: {ns}\ncurrent-context: {name}\npreferences: {{}}\n",
            url = self.url(),
            token = self.shared.token,
            ns = self.shared.opts.namespace,
        )
    }

    /// Writes [`Self::kubeconfig`] to `path` (mode 0600 on Unix).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(path)?;
        f.write_all(self.kubeconfig().as_bytes())?;
        f.sync_all()
    }

    /// Takes the server off the network (`false`: new connections refused, open ones and
    /// their watches dropped) or puts it back on the same address (`true`). Returns whether
    /// the switch took effect (re-binding can fail if another process took the port).
    pub fn set_reachable(&self, up: bool) -> bool {
        let acks = self
            .acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while acks.try_recv().is_ok() {}
        if *self.shared.reachable.borrow() == up {
            return true;
        }
        if self.shared.reachable.send(up).is_err() {
            return false;
        }
        // An earlier switch (one made by [`Self::unreachable_after`]) may be acknowledged
        // late: wait for this one's.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match acks.recv_timeout(left) {
                Ok((to, ok)) if to == up => return ok,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Whether the server is on the network.
    pub fn is_reachable(&self) -> bool {
        *self.shared.reachable.borrow()
    }

    /// Carries out the next request for `verb` on `resource` (as in [`Self::fail`]), then
    /// takes the server off the network before answering it: the client sees its connection
    /// drop without an answer, as when the network fails just after the server acted. The
    /// request is audited with the status it would have been answered. Put the server back
    /// with [`Self::set_reachable`].
    pub fn unreachable_after(&self, verb: &str, resource: &str) {
        self.shared.lock().faults.cuts.push(FailRule {
            code: 0,
            verb: verb.to_string(),
            resource: resource.to_string(),
        });
    }

    /// Delays every answer by `d` (zero to stop).
    pub fn set_latency(&self, d: Duration) {
        self.shared.lock().faults.latency = d;
    }

    /// Answers `code` to every `verb` on `resource` (either may be `*`; the resource may
    /// name a subresource such as `deployments/scale`) until [`Self::clear_faults`].
    pub fn fail(&self, code: u16, verb: &str, resource: &str) {
        self.shared.lock().faults.rules.push(FailRule {
            code,
            verb: verb.to_string(),
            resource: resource.to_string(),
        });
    }

    /// Denies `verb` on `resource` (either may be `*`; the resource may name a subresource)
    /// as RBAC would, until [`Self::clear_faults`]: such requests are answered with RBAC's
    /// 403, and a `SelfSubjectAccessReview` asking about them answers `allowed: false` with
    /// a reason. (A 403 from [`Self::fail`] is also reflected in reviews; this differs only
    /// in the reason given, and in that a `fail` rule of another code that matches first
    /// still wins for the request itself.)
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared.lock().faults.denials.push(FailRule {
            code: 403,
            verb: verb.to_string(),
            resource: resource.to_string(),
        });
    }

    /// Makes port `port` of pod `pod` in `namespace` reach `to` through `pods/portforward`
    /// (as the kubelet would reach the container's port), until the test ends.
    pub fn forward(&self, namespace: &str, pod: &str, port: u16, to: std::net::SocketAddr) {
        self.shared
            .lock()
            .forwards
            .insert((namespace.to_string(), pod.to_string(), port), to);
    }

    /// Removes every injected error and denial, every [`Self::unreachable_after`] rule and
    /// the latency.
    pub fn clear_faults(&self) {
        self.shared.lock().faults = Default::default();
    }

    /// Every request so far, oldest first.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.shared.lock().audit.clone()
    }

    /// Forgets the change history: watches from any earlier version get a 410.
    pub fn compact(&self) {
        self.shared.lock().store.compact();
    }

    /// The stored object, read directly (no request, nothing audited).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = by_plural(resource)?;
        let ns = if rt.namespaced { namespace } else { "" };
        self.shared
            .lock()
            .store
            .get(&Key::new(rt.plural, ns, name))
            .cloned()
    }

    /// Objects of `resource` in `namespace` (`None`: all), read directly.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(rt) = by_plural(resource) else {
            return Vec::new();
        };
        self.shared
            .lock()
            .store
            .list(rt.plural, namespace)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Creates an object directly, as a `POST` would (for test set-up).
    pub fn create(&self, resource: &str, namespace: &str, obj: &Value) -> Result<Value, ApiError> {
        let rt = by_plural(resource).ok_or_else(ApiError::no_route)?;
        let out = api::create(&mut self.shared.lock(), rt, namespace, obj, true)?;
        self.shared.changed.notify_one();
        Ok(out)
    }

    /// Creates many objects directly, as `POST`s would, under one hold of the state lock, so
    /// that the controllers look once at the lot (set-up of benchmarks with thousands of
    /// objects). `(resource, namespace, object)`; stops at the first error.
    pub fn create_all(&self, items: &[(&str, &str, Value)]) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::with_capacity(items.len());
        {
            let mut st = self.shared.lock();
            for (resource, namespace, obj) in items {
                let rt = by_plural(resource).ok_or_else(ApiError::no_route)?;
                out.push(api::create(&mut st, rt, namespace, obj, true)?);
            }
        }
        self.shared.changed.notify_one();
        Ok(out)
    }

    /// Replaces an object directly, as a `PUT` would (a stale `resourceVersion` is a 409):
    /// for benchmarks that write faster than requests would (a thousand renewing laptops).
    pub fn update(&self, resource: &str, namespace: &str, obj: &Value) -> Result<Value, ApiError> {
        let rt = by_plural(resource).ok_or_else(ApiError::no_route)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let out = api::update(
            &mut self.shared.lock(),
            rt,
            namespace,
            &name,
            obj,
            api::Part::Main,
            true,
        )?;
        self.shared.changed.notify_one();
        Ok(out)
    }

    /// Waits until `check` holds for the store (polled every 20 ms) or `timeout` passes;
    /// returns whether it held.
    pub fn wait_until(&self, timeout: Duration, mut check: impl FnMut(&Self) -> bool) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Carries out one control line, as the standalone example reads them from stdin:
    /// `unreachable`, `reachable`, `latency <ms>`, `fail <code> <verb> <resource>`,
    /// `deny <verb> <resource>`, `unreachable-after <verb> <resource>`, `clear`.
    pub fn control(&self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["unreachable"] => self
                .set_reachable(false)
                .then_some(())
                .ok_or_else(|| "could not take the server off the network".to_string()),
            ["reachable"] => self
                .set_reachable(true)
                .then_some(())
                .ok_or_else(|| format!("could not bind {} again", self.addr)),
            ["latency", ms] => {
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("latency wants milliseconds, got {ms:?}"))?;
                self.set_latency(Duration::from_millis(ms));
                Ok(())
            }
            ["fail", code, verb, resource] => {
                let code: u16 = code
                    .parse()
                    .ok()
                    .filter(|c| (400..600).contains(c))
                    .ok_or_else(|| {
                        format!("fail wants an HTTP error code (400-599), got {code:?}")
                    })?;
                self.fail(code, verb, resource);
                Ok(())
            }
            ["deny", verb, resource] => {
                self.deny(verb, resource);
                Ok(())
            }
            ["unreachable-after", verb, resource] => {
                self.unreachable_after(verb, resource);
                Ok(())
            }
            ["clear"] => {
                self.clear_faults();
                Ok(())
            }
            [] => Err("empty command".to_string()),
            _ => Err(format!(
                "unknown command {line:?}; expected unreachable, reachable, latency <ms>, fail <code> <verb> <resource>, deny <verb> <resource>, unreachable-after <verb> <resource>, clear"
            )),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
