//! A Telepresence 2 traffic-manager stand-in for telepolice-agent's tests: the gRPC service
//! `telepresence.manager.Manager`, plain h2c on loopback, with the session and intercept rules
//! of the real one (Telepresence `cmd/traffic/cmd/manager`, checked at v2.20.2):
//!
//! - `ArriveAsClient` makes a session (a random UUID); `Remain` refreshes it (`NotFound` for
//!   an unknown id); a session not refreshed for the TTL (24 h by default, as
//!   `CLIENT_CONNECTION_TTL`) is removed by a sweep every 5 s, with its intercepts.
//! - `Depart` ends a session and its intercepts, and is idempotent: an unknown id returns
//!   `Empty`. As in the real manager, the removal runs after the answer.
//! - `CreateIntercept` names an intercept `<session id>:<name>`; a second one with that name
//!   is `AlreadyExists`. The stand-in plays the traffic-agent too: an intercept of a
//!   workload port another session's intercept serves is `AGENT_ERROR`, `Conflicts with the
//!   currently-served intercept "<id>"`; otherwise it is `ACTIVE` at once.
//! - `WatchIntercepts` with an empty session id streams every intercept; with a client's id,
//!   that session's (not `REMOVED`), ending when the session ends; an unknown id is
//!   `NotFound`.
//! - `RemoveIntercept` removes one of the caller's intercepts.
//!
//! The clock is injectable ([`TrafficManager::advance`]), and every call is kept
//! ([`TrafficManager::calls`]), so that a test can say a session was departed exactly once.
//! Tests reach it directly, or as a pod's `api` port through the emulator's
//! `pods/portforward` (`testcluster::TestCluster::forward`).

pub mod proto;
mod service;

/// The generated client and server of `telepresence.manager.Manager`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod manager {
    include!(concat!(env!("OUT_DIR"), "/telepresence.manager.Manager.rs"));
}

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use proto::InterceptDispositionType as Disposition;
use service::{Service, State};

/// How often expired sessions are removed (the real manager's sweep period).
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How the stand-in starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a session lives without a `Remain` (`CLIENT_CONNECTION_TTL`).
    pub ttl: Duration,
    /// The cluster id every `SessionInfo` carries: the manager namespace's uid.
    pub cluster_id: String,
    /// What `Version` answers.
    pub version: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: Duration::from_secs(24 * 3600),
            cluster_id: "00000000-0000-0000-0000-00000000c1d0".to_string(),
            version: "2.20.2".to_string(),
        }
    }
}

/// One call the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The gRPC method (`Depart`, `Remain`, ...).
    pub method: &'static str,
    /// The session id it named (empty when none).
    pub session_id: String,
    /// `ok`, or the gRPC code of the error it returned.
    pub outcome: String,
}

/// A running stand-in. Dropping it stops the server.
#[derive(Debug)]
pub struct TrafficManager {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The state the server and the test handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) opts: Options,
    state: Mutex<State>,
    /// Bumped on every change of sessions or intercepts, for `WatchIntercepts`.
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
    started: Instant,
    offset: Mutex<Duration>,
}

impl Shared {
    /// The manager's clock: time since it started, plus what a test advanced it by.
    pub(crate) fn now(&self) -> Duration {
        self.started.elapsed() + *lock(&self.offset)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks a change for the watchers.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Removes the sessions not refreshed for the TTL, with their intercepts.
    pub(crate) fn sweep(&self) {
        let now = self.now();
        let removed = self.state().expire(now, self.opts.ttl);
        if removed > 0 {
            self.changed();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TrafficManager {
    /// Starts the stand-in on a free loopback port, in a thread of its own.
    pub fn start(opts: Options) -> std::io::Result<TrafficManager> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(State::default()),
            changes: tokio::sync::watch::channel(0).0,
            started: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("trafficmanager".into())
            .spawn(move || runtime.block_on(serve(listener, serving, stopped)))?;
        Ok(TrafficManager {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens (h2c).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Moves the manager's clock forward (the next sweep, within [`SWEEP_EVERY`], sees it).
    pub fn advance(&self, by: Duration) {
        *lock(&self.shared.offset) += by;
    }

    /// Runs the expiry sweep now.
    pub fn sweep(&self) {
        self.shared.sweep();
    }

    /// The ids of the live sessions, sorted.
    pub fn sessions(&self) -> Vec<String> {
        self.shared.state().session_ids()
    }

    /// Every intercept, sorted by id.
    pub fn intercepts(&self) -> Vec<proto::InterceptInfo> {
        self.shared.state().intercepts()
    }

    /// Every call answered so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.state().calls.clone()
    }

    /// The calls of one method naming one session.
    pub fn calls_of(&self, method: &str, session_id: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.session_id == session_id)
            .collect()
    }

    /// A session made directly, as `ArriveAsClient` would, for tests that need no client.
    pub fn arrive(&self, name: &str, namespace: &str) -> proto::SessionInfo {
        let info = proto::ClientInfo {
            name: name.to_string(),
            namespace: namespace.to_string(),
            install_id: uuid::Uuid::new_v4().to_string(),
            product: "telepresence".to_string(),
            version: self.shared.opts.version.clone(),
            api_key: String::new(),
        };
        let now = self.shared.now();
        let session = self
            .shared
            .state()
            .arrive(info, now, &self.shared.opts.cluster_id);
        self.shared.changed();
        session
    }
}

impl Drop for TrafficManager {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let sweeping = Arc::clone(&shared);
    let sweeper = tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            sweeping.sweep();
        }
    });
    let server = manager::manager_server::ManagerServer::new(Service::new(shared));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let serving = tonic::transport::Server::builder()
        .add_service(server)
        .serve_with_incoming(incoming);
    // Stopped at once, not gracefully: a graceful stop would wait for every client's
    // connection to close, and a test's clients may live on the very thread that drops
    // the stand-in. The runtime, dropped with this thread, ends every connection.
    tokio::select! {
        _ = serving => {}
        _ = stopped => {}
    }
    sweeper.abort();
}
