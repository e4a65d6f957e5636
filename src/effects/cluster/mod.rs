//! Talking to a session's cluster exactly as the session did: the same kubeconfig files and
//! context, exec credential plugins run with the session's `PATH`, and nothing else. Thin:
//! observing what a session left, and carrying out planned actions with preconditions.
//!
//! - [`binding`]: which kubeconfig, context, namespace and API server a session uses.
//! - [`client`]: a client for a recorded session's cluster, refused if the context moved.
//! - [`read`]: what the cluster holds of a session (its original, its labelled objects).
//! - [`write`]: the planned actions, each with its preconditions.
//! - [`lease`]: team mode's Leases, the facts on a proxy, and Events.
//! - [`access`]: the permissions the agent needs, and asking the server about them.

pub mod access;
pub mod binding;
pub mod client;
pub mod lease;
pub mod read;
pub mod write;

pub use access::{AccessAnswer, NEEDED_PERMISSIONS, Permission, review_access};
pub use binding::{binding_for_server, kubeconfig_paths, load_merged, resolve_binding};
pub use client::{client_for, server_version};
pub use read::{get_workload, labelled_objects, observe, observe_objects};
pub use write::execute;

use std::path::PathBuf;

use crate::session::ProxyKind;

/// Why the agent could not talk to a session's cluster or act on it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig file could be read.
    #[error("no readable kubeconfig among {paths:?}: {why}")]
    NoKubeconfig { paths: Vec<PathBuf>, why: String },
    /// A kubeconfig file is malformed.
    #[error("reading kubeconfig {path}: {source}")]
    BadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The context does not exist (any more).
    #[error("kube context {context:?} is not in {paths:?}")]
    NoContext {
        context: String,
        paths: Vec<PathBuf>,
    },
    /// No context was given and the kubeconfig has no current context.
    #[error("no --context given and no current-context in {paths:?}")]
    NoCurrentContext { paths: Vec<PathBuf> },
    /// The context now points at another API server than when the session was recorded.
    #[error(
        "kube context {context:?} now points at {now}, not {recorded} where the session ran; refusing to act on another cluster"
    )]
    ServerChanged {
        context: String,
        recorded: String,
        now: String,
    },
    /// The client could not be configured.
    #[error("configuring a client for context {context:?}: {source}")]
    Client {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server refused or failed a request.
    #[error("{step}: {source}")]
    Api {
        step: Box<Step>,
        #[source]
        source: kube::Error,
    },
}

impl ClusterError {
    /// Whether retrying later may help (network, 5xx, 429), as opposed to a refusal that
    /// needs a person (403, 409 precondition, a changed cluster).
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Api { source, .. } => match source {
                kube::Error::Api(s) => s.code == 429 || s.code >= 500,
                _ => true,
            },
            ClusterError::Client { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status of an API refusal, if this is one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ClusterError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}

/// What the agent was asking the API server when it refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Reading a session's original Deployment.
    ReadWorkload { name: String, namespace: String },
    /// Listing objects with a `telepresence` label: `label` is the selector as a person
    /// reads it (`labelled telepresence`, `labelled telepresence=<id>`, `with a telepresence
    /// label`).
    List {
        what: &'static str,
        label: String,
        namespace: String,
    },
    /// Reading a recorded proxy by name.
    ReadObject {
        kind: ProxyKind,
        name: String,
        namespace: String,
    },
    /// Reading Telepresence 2's `service/traffic-manager`.
    ReadManager { namespace: String },
    /// Opening a port-forward (to the traffic-manager).
    PortForward {
        pod: String,
        port: u16,
        namespace: String,
    },
    /// `GET /version`.
    Version,
    /// A SelfSubjectAccessReview.
    Review {
        verb: &'static str,
        resource: String,
        namespace: String,
    },
    /// The restore patch.
    Restore {
        name: String,
        namespace: String,
        replicas: i32,
    },
    /// A delete.
    Delete {
        kind: ProxyKind,
        name: String,
        namespace: String,
    },
    /// A Lease read or write (`verb`: get, create, update, delete).
    Lease {
        verb: &'static str,
        name: String,
        namespace: String,
    },
    /// Writing the recovery facts onto a proxy.
    Annotate {
        kind: ProxyKind,
        name: String,
        namespace: String,
    },
    /// Recording an Event on `object` (`kind/name`).
    Event { object: String, namespace: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::ReadWorkload { name, namespace } => {
                write!(f, "reading deployment/{name} in {namespace}")
            }
            Step::List {
                what,
                label,
                namespace,
            } => write!(f, "listing {what} {label} in {namespace}"),
            Step::ReadObject {
                kind,
                name,
                namespace,
            } => write!(f, "reading {}/{name} in {namespace}", kind.resource()),
            Step::ReadManager { namespace } => {
                write!(f, "reading service/traffic-manager in {namespace}")
            }
            Step::PortForward {
                pod,
                port,
                namespace,
            } => write!(f, "forwarding to port {port} of pod {pod} in {namespace}"),
            Step::Version => f.write_str("asking the API server for its version"),
            Step::Review {
                verb,
                resource,
                namespace,
            } => write!(f, "asking whether it may {verb} {resource} in {namespace}"),
            Step::Restore {
                name,
                namespace,
                replicas,
            } => write!(
                f,
                "scaling deployment/{name} in {namespace} back to {replicas}"
            ),
            Step::Delete {
                kind,
                name,
                namespace,
            } => write!(f, "deleting {}/{name} in {namespace}", kind.resource()),
            Step::Lease {
                verb,
                name,
                namespace,
            } => write!(f, "{verb} lease/{name} in {namespace}"),
            Step::Annotate {
                kind,
                name,
                namespace,
            } => write!(
                f,
                "writing the recovery facts onto {}/{name} in {namespace}",
                kind.resource()
            ),
            Step::Event { object, namespace } => {
                write!(f, "recording an event on {object} in {namespace}")
            }
        }
    }
}

/// Turns a client error into a [`ClusterError::Api`] at `step`.
pub(crate) fn api_err(step: Step) -> impl FnOnce(kube::Error) -> ClusterError {
    move |source| ClusterError::Api {
        step: Box::new(step),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> ClusterError {
        ClusterError::Api {
            step: Box::new(Step::Delete {
                kind: ProxyKind::Pod,
                name: "app-x".into(),
                namespace: "ns".into(),
            }),
            source: kube::Error::Api(
                kube::core::Status::failure("no", "Reason")
                    .with_code(code)
                    .boxed(),
            ),
        }
    }

    #[test]
    fn only_a_busy_or_failing_server_is_worth_retrying() {
        for (code, transient) in [
            (500, true),
            (503, true),
            (429, true),
            (403, false),
            (409, false),
            (422, false),
            (404, false),
        ] {
            let e = refused(code);
            assert_eq!(e.is_transient(), transient, "{code}");
            assert_eq!(e.status_code(), Some(code));
        }
        let moved = ClusterError::ServerChanged {
            context: "dev".into(),
            recorded: "a".into(),
            now: "b".into(),
        };
        assert!(
            !moved.is_transient(),
            "another cluster is never retried into"
        );
        assert_eq!(moved.status_code(), None);
    }

    #[test]
    fn every_step_reads_as_what_the_agent_was_doing() {
        let cases = [
            (
                Step::ReadWorkload {
                    name: "app".into(),
                    namespace: "ns".into(),
                },
                "reading deployment/app in ns",
            ),
            (
                Step::List {
                    what: "pods",
                    label: "labelled telepresence=abc".into(),
                    namespace: "ns".into(),
                },
                "listing pods labelled telepresence=abc in ns",
            ),
            (
                Step::ReadObject {
                    kind: ProxyKind::Service,
                    name: "app-x".into(),
                    namespace: "ns".into(),
                },
                "reading service/app-x in ns",
            ),
            (Step::Version, "asking the API server for its version"),
            (
                Step::Review {
                    verb: "delete",
                    resource: "deployments.apps".into(),
                    namespace: "ns".into(),
                },
                "asking whether it may delete deployments.apps in ns",
            ),
            (
                Step::Restore {
                    name: "app".into(),
                    namespace: "ns".into(),
                    replicas: 2,
                },
                "scaling deployment/app in ns back to 2",
            ),
            (
                Step::Delete {
                    kind: ProxyKind::Pod,
                    name: "app-x".into(),
                    namespace: "ns".into(),
                },
                "deleting pod/app-x in ns",
            ),
        ];
        for (step, said) in cases {
            assert_eq!(step.to_string(), said);
        }
        assert!(
            refused(403)
                .to_string()
                .starts_with("deleting pod/app-x in ns: ")
        );
    }
}
