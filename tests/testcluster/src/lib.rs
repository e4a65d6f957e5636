//! A Kubernetes API server emulator for telepolice-agent's tests.
//!
//! It speaks the real wire protocol over HTTPS on 127.0.0.1 (a fresh CA and bearer token
//! per instance), so the real `kubectl` and kube-rs talk to it as to a cluster: discovery,
//! `k8s-openapi` objects, `resourceVersion` and 409 conflicts, preconditions, watches with
//! replay and 410s, the scale subresource, label and field selectors, `Table` answers, a
//! deployment controller that makes pods, and owner-reference garbage collection. Tests
//! can take it off the network (at once, or just after carrying out a chosen request), slow
//! it down, make chosen verbs fail or deny them as RBAC would (access reviews agree), and
//! read an audit log of every request. `pods/portforward` works, to ports a test registers,
//! over WebSocket (kube-rs's protocol) and over SPDY/3.1, plain or tunnelled in WebSocket
//! (`kubectl port-forward`'s).
//!
//! ```no_run
//! let cluster = testcluster::TestCluster::start(Default::default())?;
//! cluster.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! cluster.set_reachable(false);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Public API
//! [`TestCluster`] (start, kubeconfig, faults, direct reads and writes, the ports
//! `pods/portforward` reaches, the audit log),
//! [`Options`], [`FailRule`], [`AuditEntry`], [`ApiError`] and [`StartError`]: nothing else is
//! exported, so that the emulator's inside can change without touching a test.
//!
//! # Layout
//! - `cluster`: [`TestCluster`], the handle a test holds, and its control commands.
//! - `server`: the listener, connections, reachability switch and controller loop.
//! - `http`: routing, authentication, faults, content negotiation, watches, pod logs, audit.
//! - `api`: what each verb does to the store (create, update, patch, scale, delete).
//! - `access`: `SelfSubjectAccessReview` answers, from the denials and injected 403s.
//! - `controllers`: deployments, replica sets, the kubelet, garbage collection, namespaces.
//! - `store`: objects, the `resourceVersion` counter and the change log watches replay.
//! - `resources`: the served resource types and their validation.
//! - `discovery`: `/version`, `/api`, `/apis`, OpenAPI v3.
//! - `table`: `Table` answers for `kubectl get`.
//! - `selector`, `strategic`: label/field selectors and strategic merge patch.
//! - `status`: `Status` errors as the real server words them.
//! - `state`, `tls`, `ids`: shared state and options, the TLS identity, server-made names.

mod access;
mod api;
mod cluster;
mod controllers;
mod discovery;
mod http;
mod ids;
mod resources;
mod selector;
mod server;
mod state;
mod status;
mod store;
mod strategic;
mod table;
mod tls;

pub use cluster::{StartError, TestCluster};
pub use state::{AuditEntry, FailRule, Options};
pub use status::ApiError;
