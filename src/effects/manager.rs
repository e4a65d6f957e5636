//! Telepresence 2's traffic-manager, reached the way Telepresence's own connector reaches it:
//! a port-forward to the `api` port of a pod behind `svc/traffic-manager` in the manager
//! namespace, then gRPC (plain h2c, no authentication of its own: access is Kubernetes RBAC,
//! `get` on that Service, `list` pods, `create` on `pods/portforward`, which every
//! Telepresence 2 user already has). No root daemon, no sudo.
//!
//! Only three calls, none of which keeps a session alive:
//! - `Depart`: ends a session and its intercepts; idempotent (an unknown id answers Empty).
//! - `WatchIntercepts` with a session id, first snapshot only: whether the manager still has
//!   that session, and its intercepts. Never `Remain`, which would extend the session's life.
//! - `Version`: whether the manager answers at all (`doctor`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ListParams};
use tonic::transport::{Channel, Endpoint};

use super::cluster::{ClusterError, Permission, Step, api_err};

/// The traffic-manager's Service (and Deployment) name, set by its Helm chart.
pub const SERVICE: &str = "traffic-manager";
/// The name of the Service's gRPC port.
pub const API_PORT_NAME: &str = "api";
/// The namespace Telepresence 2 installs the traffic-manager in unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "ambassador";

/// What the agent needs in the manager namespace to reach the traffic-manager, as
/// Telepresence's connector does, but over WebSocket (kube-rs's port-forward): a WebSocket
/// upgrade is a GET, which the API server authorizes as `get` on `pods/portforward`, and
/// from Kubernetes 1.35 also as `create`. Telepresence's own `traffic-manager-connect` Role
/// grants only `create` (its client speaks SPDY, a POST).
pub const MANAGER_PERMISSIONS: &[Permission] = &[
    Permission {
        verb: "get",
        group: "",
        resource: "services",
        why: "read service/traffic-manager's api port and selector",
    },
    Permission {
        verb: "list",
        group: "",
        resource: "pods",
        why: "find a running traffic-manager pod",
    },
    Permission {
        verb: "get",
        group: "",
        resource: "pods/portforward",
        why: "open the port-forward (a WebSocket upgrade is a GET)",
    },
    Permission {
        verb: "create",
        group: "",
        resource: "pods/portforward",
        why: "open the port-forward (required too from Kubernetes 1.35)",
    },
];

const VERSION: &str = "/telepresence.manager.Manager/Version";
const DEPART: &str = "/telepresence.manager.Manager/Depart";
const WATCH_INTERCEPTS: &str = "/telepresence.manager.Manager/WatchIntercepts";

/// Why the agent could not reach the traffic-manager or have it do something.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The API server refused or failed a read or the port-forward.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Nothing to forward to: no Service, no `api` port, no running pod.
    #[error("no traffic-manager to reach in namespace {namespace}: {why}")]
    NoManager {
        namespace: String,
        why: String,
        /// Whether it may come (a pod starting) rather than being absent.
        transient: bool,
    },
    /// The HTTP/2 connection over the port-forward failed.
    #[error("connecting to the traffic-manager through pod {pod} in {namespace}: {why}")]
    Connect {
        pod: String,
        namespace: String,
        why: String,
    },
    /// The traffic-manager answered a call with an error.
    #[error("the traffic-manager refused {call}: {status}")]
    Grpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
}

impl ManagerError {
    /// Whether retrying later may help (the network, a manager pod restarting), as opposed to
    /// a refusal that needs a person (RBAC, no traffic-manager installed).
    pub fn is_transient(&self) -> bool {
        match self {
            ManagerError::Cluster(e) => e.is_transient(),
            ManagerError::NoManager { transient, .. } => *transient,
            ManagerError::Connect { .. } => true,
            ManagerError::Grpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
            ),
        }
    }
}

/// The `telepresence.manager` messages the agent sends or reads: only the fields it uses,
/// with the numbers of Telepresence's `rpc/manager/manager.proto` (checked at v2.6.8,
/// v2.17.0 and v2.20.2). Fields it leaves out are skipped on decode.
pub mod proto {
    /// `SessionInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionInfo {
        #[prost(string, tag = "1")]
        pub session_id: String,
        #[prost(string, tag = "2")]
        pub cluster_id: String,
        #[prost(string, optional, tag = "3")]
        pub install_id: Option<String>,
    }

    /// `VersionInfo2`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionInfo2 {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    /// `InterceptSpec`, the fields that name what is intercepted.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InterceptSpec {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub agent: String,
        #[prost(string, tag = "8")]
        pub namespace: String,
    }

    /// `InterceptInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InterceptInfo {
        #[prost(message, optional, tag = "1")]
        pub spec: Option<InterceptSpec>,
        /// `InterceptDispositionType` (1 ACTIVE, 2 WAITING, 7 AGENT_ERROR, 9 REMOVED, ...).
        #[prost(int32, tag = "3")]
        pub disposition: i32,
        #[prost(string, tag = "5")]
        pub id: String,
    }

    /// `InterceptInfoSnapshot`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InterceptInfoSnapshot {
        #[prost(message, repeated, tag = "1")]
        pub intercepts: Vec<InterceptInfo>,
    }
}

/// An intercept as the agent journals it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Intercept {
    /// The intercept's name (`<session id>:` is left out).
    pub name: String,
    /// The workload's namespace and name.
    pub namespace: String,
    pub workload: String,
}

/// A gRPC connection to the traffic-manager, over a port-forward the connection owns.
pub struct Manager {
    channel: Channel,
    forward: kube::api::Portforwarder,
    /// The pod forwarded to, for messages.
    pub pod: String,
    /// The manager namespace.
    pub namespace: String,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("pod", &self.pod)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// The pod and container port `svc/traffic-manager:api` leads to, as Telepresence's own
/// port-forward dialer resolves it: the Service's `api` port, its target port (named or a
/// number), and a running pod its selector picks, ready ones first.
pub async fn resolve(client: &Client, namespace: &str) -> Result<(String, u16), ManagerError> {
    let none = |why: String, transient: bool| ManagerError::NoManager {
        namespace: namespace.to_string(),
        why,
        transient,
    };
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let read = Step::ReadManager {
        namespace: namespace.to_string(),
    };
    let Some(svc) = services.get_opt(SERVICE).await.map_err(api_err(read))? else {
        return Err(none(format!("no service/{SERVICE}"), false));
    };
    let spec = svc.spec.unwrap_or_default();
    let Some(port) = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some(API_PORT_NAME))
    else {
        return Err(none(
            format!("service/{SERVICE} has no port named {API_PORT_NAME}"),
            false,
        ));
    };
    let selector: BTreeMap<String, String> = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        return Err(none(format!("service/{SERVICE} selects no pods"), false));
    }
    let label = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = Step::List {
        what: "pods",
        label: format!("labelled {label}"),
        namespace: namespace.to_string(),
    };
    let mut running: Vec<Pod> = pods
        .list(&ListParams::default().labels(&label))
        .await
        .map_err(api_err(list))?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect();
    running.sort_by_key(|p| !is_ready(p));
    let Some(pod) = running.into_iter().next() else {
        return Err(none(format!("no running pod labelled {label}"), true));
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let target = port.target_port.unwrap_or(IntOrString::Int(port.port));
    let number = match target {
        IntOrString::Int(n) => u16::try_from(n).ok(),
        IntOrString::String(named) => container_port(&pod, &named),
    };
    match number {
        Some(n) => Ok((name, n)),
        None => Err(none(
            format!(
                "pod {name} has no container port for service/{SERVICE}'s {API_PORT_NAME} port"
            ),
            false,
        )),
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn container_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

impl Manager {
    /// Forwards to the traffic-manager in `namespace` and opens an HTTP/2 connection over it.
    pub async fn connect(client: &Client, namespace: &str) -> Result<Manager, ManagerError> {
        let (pod, port) = resolve(client, namespace).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let step = Step::PortForward {
            pod: pod.clone(),
            port,
            namespace: namespace.to_string(),
        };
        let mut forward = pods
            .portforward(&pod, &[port])
            .await
            .map_err(|e| ManagerError::Cluster(api_err(step)(e)))?;
        let connect_err = |why: String| ManagerError::Connect {
            pod: pod.clone(),
            namespace: namespace.to_string(),
            why,
        };
        let Some(stream) = forward.take_stream(port) else {
            forward.abort();
            return Err(connect_err("the port-forward gave no stream".to_string()));
        };
        // One stream, one HTTP/2 connection: a reconnect would need a new port-forward.
        let stream = std::sync::Mutex::new(Some(stream));
        let connector = tower::service_fn(move |_: http::Uri| {
            let taken = stream.lock().unwrap_or_else(|e| e.into_inner()).take();
            async move {
                taken
                    .map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the port-forward's stream was used"))
            }
        });
        let channel = Endpoint::from_static("http://traffic-manager")
            .connect_with_connector(connector)
            .await;
        match channel {
            Ok(channel) => Ok(Manager {
                channel,
                forward,
                pod,
                namespace: namespace.to_string(),
            }),
            Err(e) => {
                forward.abort();
                Err(connect_err(error_chain(&e)))
            }
        }
    }

    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, ManagerError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let (mut grpc, failed) = self.ready(path).await?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(tonic::Request::new(req), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(failed)
    }

    /// A client on the connection, ready for the call at `path`, and how that call's
    /// failures are said.
    async fn ready(
        &self,
        path: &'static str,
    ) -> Result<
        (
            tonic::client::Grpc<Channel>,
            impl Fn(tonic::Status) -> ManagerError,
        ),
        ManagerError,
    > {
        let call = path.rsplit('/').next().unwrap_or(path);
        let failed = move |status: tonic::Status| ManagerError::Grpc {
            call,
            status: Box::new(status),
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        match grpc.ready().await {
            Ok(()) => Ok((grpc, failed)),
            Err(e) => Err(failed(tonic::Status::unavailable(error_chain(&e)))),
        }
    }

    /// `Version`: the manager's name and version.
    pub async fn version(&self) -> Result<proto::VersionInfo2, ManagerError> {
        self.unary(VERSION, ()).await
    }

    /// `Depart`: ends the session `session_id` and its intercepts. Idempotent.
    pub async fn depart(&self, session_id: &str) -> Result<(), ManagerError> {
        let info = proto::SessionInfo {
            session_id: session_id.to_string(),
            ..Default::default()
        };
        self.unary::<_, ()>(DEPART, info).await
    }

    /// The session's intercepts while the manager has the session, `None` when it has not
    /// (departed or expired): the first snapshot of `WatchIntercepts`, then the stream is
    /// dropped.
    pub async fn session_intercepts(
        &self,
        session_id: &str,
    ) -> Result<Option<Vec<Intercept>>, ManagerError> {
        let (mut grpc, failed) = self.ready(WATCH_INTERCEPTS).await?;
        let info = proto::SessionInfo {
            session_id: session_id.to_string(),
            ..Default::default()
        };
        let codec =
            tonic_prost::ProstCodec::<proto::SessionInfo, proto::InterceptInfoSnapshot>::default();
        let answer = grpc
            .server_streaming(
                tonic::Request::new(info),
                http::uri::PathAndQuery::from_static(WATCH_INTERCEPTS),
                codec,
            )
            .await;
        let mut stream = match answer {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(failed(s)),
        };
        match stream.message().await {
            Ok(Some(snapshot)) => Ok(Some(
                snapshot.intercepts.into_iter().map(intercept).collect(),
            )),
            // Ended before its first snapshot: the session ended meanwhile.
            Ok(None) => Ok(None),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(failed(s)),
        }
    }
}

fn intercept(i: proto::InterceptInfo) -> Intercept {
    let spec = i.spec.unwrap_or_default();
    let name = match i.id.split_once(':') {
        Some((_, name)) => name.to_string(),
        None => spec.name.clone(),
    };
    Intercept {
        name,
        namespace: spec.namespace,
        workload: spec.agent,
    }
}

/// An error and its causes, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cause = c.source();
    }
    out
}
