//! The messages of `telepresence.manager` the stand-in serves: the fields it reads or
//! writes, with the numbers of Telepresence's `rpc/manager/manager.proto` (v2.20.2; the same
//! in v2.6.8 and v2.17.0 for every field here). Fields left out are skipped on decode, as
//! protobuf does with any unknown field.

/// `ClientInfo`: what a connector says of itself when it arrives.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientInfo {
    /// `user@hostname`.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub install_id: String,
    /// `telepresence`.
    #[prost(string, tag = "3")]
    pub product: String,
    #[prost(string, tag = "4")]
    pub version: String,
    #[prost(string, tag = "5")]
    pub api_key: String,
    /// The namespace the client connected to.
    #[prost(string, tag = "6")]
    pub namespace: String,
}

/// `SessionInfo`: a session's id, and the cluster (the manager namespace's uid) it is in.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SessionInfo {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(string, tag = "2")]
    pub cluster_id: String,
    #[prost(string, optional, tag = "3")]
    pub install_id: Option<String>,
}

/// `RemainRequest`: a connector's keep-alive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemainRequest {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionInfo>,
    #[prost(string, tag = "2")]
    pub api_key: String,
}

/// `VersionInfo2`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionInfo2 {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `InterceptDispositionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum InterceptDispositionType {
    Unspecified = 0,
    Active = 1,
    Waiting = 2,
    NoClient = 3,
    NoAgent = 4,
    NoMechanism = 5,
    NoPorts = 6,
    AgentError = 7,
    BadArgs = 8,
    Removed = 9,
}

/// `InterceptSpec`: what a client asks to intercept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InterceptSpec {
    /// The intercept's name (the workload's, unless the user gave another).
    #[prost(string, tag = "1")]
    pub name: String,
    /// `user@hostname`.
    #[prost(string, tag = "2")]
    pub client: String,
    /// The workload (its traffic-agent's name).
    #[prost(string, tag = "3")]
    pub agent: String,
    #[prost(string, tag = "4")]
    pub mechanism: String,
    #[prost(string, tag = "6")]
    pub target_host: String,
    #[prost(int32, tag = "7")]
    pub target_port: i32,
    #[prost(string, tag = "8")]
    pub namespace: String,
    #[prost(string, tag = "10")]
    pub port_identifier: String,
    #[prost(string, tag = "13")]
    pub workload_kind: String,
    #[prost(string, tag = "14")]
    pub service_name: String,
    #[prost(string, tag = "19")]
    pub service_port_name: String,
    #[prost(int32, tag = "20")]
    pub service_port: i32,
    #[prost(string, tag = "21")]
    pub protocol: String,
    #[prost(bool, tag = "22")]
    pub replace: bool,
}

/// `InterceptInfo`: an intercept as the manager keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InterceptInfo {
    #[prost(message, optional, tag = "1")]
    pub spec: Option<InterceptSpec>,
    #[prost(enumeration = "InterceptDispositionType", tag = "3")]
    pub disposition: i32,
    #[prost(string, tag = "4")]
    pub message: String,
    /// `<session id>:<name>`.
    #[prost(string, tag = "5")]
    pub id: String,
    #[prost(message, optional, tag = "6")]
    pub client_session: Option<SessionInfo>,
}

/// `InterceptInfoSnapshot`: what `WatchIntercepts` sends on every change.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InterceptInfoSnapshot {
    #[prost(message, repeated, tag = "1")]
    pub intercepts: Vec<InterceptInfo>,
}

/// `CreateInterceptRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateInterceptRequest {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionInfo>,
    #[prost(message, optional, tag = "2")]
    pub intercept_spec: Option<InterceptSpec>,
    #[prost(string, tag = "3")]
    pub api_key: String,
}

/// `RemoveInterceptRequest2`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveInterceptRequest2 {
    #[prost(message, optional, tag = "1")]
    pub session: Option<SessionInfo>,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `google.protobuf.Empty`: no fields, which prost encodes as `()`.
pub type Empty = ();
