//! The manager's rules: the session and intercept state, and the gRPC methods over it.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::proto::{
    ClientInfo, CreateInterceptRequest, InterceptDispositionType as Disposition, InterceptInfo,
    InterceptInfoSnapshot, RemainRequest, RemoveInterceptRequest2, SessionInfo, VersionInfo2,
};
use crate::{Call, Shared};

/// A client's session.
#[derive(Debug)]
struct Session {
    client: ClientInfo,
    /// The manager's clock at its last `Remain` (or its arrival).
    marked: Duration,
}

/// Sessions, intercepts and the calls answered.
#[derive(Debug, Default)]
pub(crate) struct State {
    sessions: HashMap<String, Session>,
    intercepts: BTreeMap<String, InterceptInfo>,
    pub(crate) calls: Vec<Call>,
}

impl State {
    pub(crate) fn session_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.sessions.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub(crate) fn intercepts(&self) -> Vec<InterceptInfo> {
        self.intercepts.values().cloned().collect()
    }

    pub(crate) fn arrive(
        &mut self,
        client: ClientInfo,
        now: Duration,
        cluster_id: &str,
    ) -> SessionInfo {
        let id = uuid::Uuid::new_v4().to_string();
        let install_id = client.install_id.clone();
        self.sessions.insert(
            id.clone(),
            Session {
                client,
                marked: now,
            },
        );
        SessionInfo {
            session_id: id,
            cluster_id: cluster_id.to_string(),
            install_id: Some(install_id),
        }
    }

    /// Removes a session and every intercept of it; false when there was no such session.
    fn remove_session(&mut self, id: &str) -> bool {
        self.intercepts.retain(|_, i| session_of(i) != id);
        self.sessions.remove(id).is_some()
    }

    /// Removes the sessions whose last mark is more than `ttl` before `now`; how many.
    pub(crate) fn expire(&mut self, now: Duration, ttl: Duration) -> usize {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.marked) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_session(id);
        }
        expired.len()
    }

    /// What `WatchIntercepts` sends for `session_id` (all when empty), or `None` when that
    /// session has ended.
    fn snapshot(&self, session_id: &str) -> Option<InterceptInfoSnapshot> {
        if !session_id.is_empty() && !self.sessions.contains_key(session_id) {
            return None;
        }
        let intercepts = self
            .intercepts
            .values()
            .filter(|i| {
                session_id.is_empty()
                    || (session_of(i) == session_id && i.disposition != Disposition::Removed as i32)
            })
            .cloned()
            .collect();
        Some(InterceptInfoSnapshot { intercepts })
    }

    fn create_intercept(
        &mut self,
        session: SessionInfo,
        req: CreateInterceptRequest,
    ) -> Result<InterceptInfo, Status> {
        let sid = session.session_id.clone();
        let Some(client) = self.sessions.get(&sid) else {
            return Err(Status::not_found(format!("session {sid:?} not found")));
        };
        let Some(spec) = req.intercept_spec else {
            return Err(Status::invalid_argument("intercept_spec is missing"));
        };
        if spec.name.is_empty() || spec.agent.is_empty() {
            return Err(Status::invalid_argument("name and agent must not be empty"));
        }
        let id = format!("{sid}:{}", spec.name);
        if self
            .intercepts
            .get(&id)
            .is_some_and(|i| i.disposition != Disposition::Removed as i32)
        {
            return Err(Status::already_exists(format!(
                "Intercept named {:?} already exists",
                spec.name
            )));
        }
        // The traffic-agent serves one client per port: another session's active intercept
        // of the same workload port wins.
        let serving = self.intercepts.values().find(|i| {
            i.disposition == Disposition::Active as i32
                && session_of(i) != sid
                && i.spec.as_ref().is_some_and(|s| {
                    s.namespace == spec.namespace
                        && s.agent == spec.agent
                        && s.port_identifier == spec.port_identifier
                })
        });
        let (disposition, message) = match serving {
            Some(other) => (
                Disposition::AgentError,
                format!(
                    "Conflicts with the currently-served intercept {:?}",
                    other.id
                ),
            ),
            None => (Disposition::Active, String::new()),
        };
        let info = InterceptInfo {
            spec: Some(spec),
            disposition: disposition as i32,
            message,
            id: id.clone(),
            client_session: Some(SessionInfo {
                session_id: sid,
                cluster_id: session.cluster_id,
                install_id: Some(client.client.install_id.clone()),
            }),
        };
        self.intercepts.insert(id, info.clone());
        Ok(info)
    }
}

fn session_of(i: &InterceptInfo) -> &str {
    i.client_session
        .as_ref()
        .map_or("", |s| s.session_id.as_str())
}

/// The gRPC service over the shared state.
#[derive(Debug)]
pub(crate) struct Service {
    shared: Arc<Shared>,
}

impl Service {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Service { shared }
    }

    /// Keeps a call, then hands its result back.
    fn kept<T>(
        &self,
        method: &'static str,
        session_id: &str,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.shared.state().calls.push(Call {
            method,
            session_id: session_id.to_string(),
            outcome,
        });
        result.map(Response::new)
    }
}

type Snapshots = Pin<Box<dyn Stream<Item = Result<InterceptInfoSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl crate::manager::manager_server::Manager for Service {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionInfo2>, Status> {
        let v = VersionInfo2 {
            name: "traffic-manager".to_string(),
            version: self.shared.opts.version.clone(),
        };
        self.kept("Version", "", Ok(v))
    }

    async fn arrive_as_client(
        &self,
        req: Request<ClientInfo>,
    ) -> Result<Response<SessionInfo>, Status> {
        let client = req.into_inner();
        if client.name.is_empty() || client.install_id.is_empty() {
            return self.kept(
                "ArriveAsClient",
                "",
                Err(Status::invalid_argument(
                    "name and install_id must not be empty",
                )),
            );
        }
        let now = self.shared.now();
        let session = self
            .shared
            .state()
            .arrive(client, now, &self.shared.opts.cluster_id);
        self.shared.changed();
        let id = session.session_id.clone();
        self.kept("ArriveAsClient", &id, Ok(session))
    }

    async fn remain(&self, req: Request<RemainRequest>) -> Result<Response<()>, Status> {
        let id = req.into_inner().session.unwrap_or_default().session_id;
        let now = self.shared.now();
        let result = match self.shared.state().sessions.get_mut(&id) {
            Some(s) => {
                s.marked = now;
                Ok(())
            }
            None => Err(Status::not_found(format!("Session {id:?} not found"))),
        };
        self.kept("Remain", &id, result)
    }

    async fn depart(&self, req: Request<SessionInfo>) -> Result<Response<()>, Status> {
        let id = req.into_inner().session_id;
        // As the real manager: the answer first, the removal after it.
        let shared = Arc::clone(&self.shared);
        let removing = id.clone();
        tokio::spawn(async move {
            if shared.state().remove_session(&removing) {
                shared.changed();
            }
        });
        self.kept("Depart", &id, Ok(()))
    }

    type WatchInterceptsStream = Snapshots;

    async fn watch_intercepts(
        &self,
        req: Request<SessionInfo>,
    ) -> Result<Response<Snapshots>, Status> {
        let id = req.into_inner().session_id;
        let Some(first) = self.shared.state().snapshot(&id) else {
            return self.kept(
                "WatchIntercepts",
                &id,
                Err(Status::not_found(format!("session {id:?} not found"))),
            );
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shared = Arc::clone(&self.shared);
        let mut changes = shared.changes.subscribe();
        let watched = id.clone();
        tokio::spawn(async move {
            let mut next = Some(first);
            while let Some(snapshot) = next {
                if tx.send(Ok(snapshot)).await.is_err() || changes.changed().await.is_err() {
                    return;
                }
                next = shared.state().snapshot(&watched);
            }
        });
        let stream: Snapshots = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        self.kept("WatchIntercepts", &id, Ok(stream))
    }

    async fn create_intercept(
        &self,
        req: Request<CreateInterceptRequest>,
    ) -> Result<Response<InterceptInfo>, Status> {
        let req = req.into_inner();
        let session = req.session.clone().unwrap_or_default();
        let id = session.session_id.clone();
        let result = self.shared.state().create_intercept(session, req);
        if result.is_ok() {
            self.shared.changed();
        }
        self.kept("CreateIntercept", &id, result)
    }

    async fn remove_intercept(
        &self,
        req: Request<RemoveInterceptRequest2>,
    ) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let id = req.session.unwrap_or_default().session_id;
        let result = {
            let mut state = self.shared.state();
            if state.sessions.contains_key(&id) {
                state.intercepts.remove(&format!("{id}:{}", req.name));
                Ok(())
            } else {
                Err(Status::not_found(format!(
                    "Client session {id:?} not found"
                )))
            }
        };
        if result.is_ok() {
            self.shared.changed();
        }
        self.kept("RemoveIntercept", &id, result)
    }
}
