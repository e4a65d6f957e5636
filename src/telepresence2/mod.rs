//! What Telepresence 2.x leaves on the laptop, as pure functions: the daemon id a connector
//! goes by, its `daemons/<id>.json`, and the session cache (`sessions/<id>.json` from 2.16,
//! one `sessions.json` in 2.6.7-2.15) that survives a killed connector and names the session
//! the traffic-manager still holds. Nothing here reads files; callers pass the bytes in.
//!
//! [`verdict`] decides what to do about a dead connector's session; [`intercept`] reads an
//! `intercept NAME -- CMD` command line.
//!
//! Checked against Telepresence's source at v2.6.8, v2.17.0 and v2.20.2 (the newest tag
//! available): `pkg/client/cli/daemon/{identifier,info}.go`, `pkg/ioutil/safename.go`,
//! `pkg/client/userd/trafficmgr/session_{cache,info_cache}.go`, and the JSON tags of
//! `manager.SessionInfo` in `rpc/manager/manager.pb.go` (written with Go's `encoding/json`,
//! not protojson).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The name a 2.x connector goes by, and its files are named after: the `--name` given,
/// else `<context>-<namespace>` (`in-cluster-<namespace>` without a context), with `-cn`
/// for a containerized daemon, made safe for a file name. `None` without a namespace (2.x
/// refuses that too).
pub fn daemon_id(
    name: Option<&str>,
    context: &str,
    namespace: &str,
    containerized: bool,
) -> Option<String> {
    if namespace.is_empty() {
        return None;
    }
    let raw = match name.filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => {
            let base = if context.is_empty() {
                format!("in-cluster-{namespace}")
            } else {
                format!("{context}-{namespace}")
            };
            if containerized {
                format!("{base}-cn")
            } else {
                base
            }
        }
    };
    Some(safe_name(&raw))
}

/// A name made safe for a file as 2.x makes it: ASCII letters and digits kept; `_`, `.` and
/// `-` kept after the first character; any other character becomes `_`, or `a` when first.
pub fn safe_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match c {
            c if c.is_ascii_alphanumeric() => c,
            '_' | '.' | '-' if i > 0 => c,
            _ if i > 0 => '_',
            _ => 'a',
        })
        .collect()
}

/// How long after its last touch a connector's `daemons/<id>.json` counts as stale: a live
/// connector touches it every 5 s, and 2.x itself gives it 600 ms more.
pub const DAEMON_INFO_STALE_AFTER: Duration = Duration::from_millis(5_600);

/// `daemons/<id>.json` (2.16+), as the connector writes it. Every field may be missing
/// (Go's `omitempty`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DaemonInfo {
    /// The daemon's name, when `--name` was given.
    pub name: String,
    /// Its kube context.
    pub kube_context: String,
    /// Its namespace.
    pub namespace: String,
    /// Whether it runs in a container (`telepresence connect --docker`).
    pub in_docker: bool,
    /// The port of a containerized daemon.
    pub daemon_port: u16,
    /// The container's hostname.
    pub hostname: String,
}

impl DaemonInfo {
    /// The daemon id this file is for.
    pub fn daemon_id(&self) -> Option<String> {
        daemon_id(
            Some(self.name.as_str()),
            &self.kube_context,
            &self.namespace,
            self.in_docker,
        )
    }
}

/// A session as the traffic-manager knows it (`manager.SessionInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SessionInfo {
    /// The session id `Depart` ends.
    pub session_id: String,
    /// The uid of the manager's namespace.
    pub cluster_id: String,
    /// The client's install id.
    pub install_id: Option<String>,
}

/// A saved session: what a killed connector leaves, in either shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSession {
    /// What it is for: a context and namespace (2.16+), or an API server (2.6.7-2.15).
    pub scope: Scope,
    /// The session.
    pub session: SessionInfo,
}

/// What a saved session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `sessions/<id>.json`: the daemon's context and namespace.
    Daemon { context: String, namespace: String },
    /// `sessions.json`: the API server's URL (`Host`).
    Host(String),
}

/// Why a cache file does not give a session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// Not JSON of the expected shape.
    #[error("not a Telepresence 2 session cache: {0}")]
    Malformed(String),
    /// The file names no session id (a session being set up, or a file of another kind).
    #[error("the session cache names no session id")]
    NoSession,
}

/// Reads a session cache file: `sessions/<id>.json` (`{"kubeContext", "namespace",
/// "session"}`) or `sessions.json` (`{"Host", "session"}`).
pub fn parse_saved_session(bytes: &[u8]) -> Result<SavedSession, CacheError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "kubeContext")]
        kube_context: Option<String>,
        namespace: Option<String>,
        // Go's encoding/json matches field names without regard to case.
        #[serde(rename = "Host", alias = "host")]
        host: Option<String>,
        session: Option<SessionInfo>,
    }
    let raw: Raw =
        serde_json::from_slice(bytes).map_err(|e| CacheError::Malformed(e.to_string()))?;
    let session = raw
        .session
        .filter(|s| !s.session_id.is_empty())
        .ok_or(CacheError::NoSession)?;
    let scope = match (raw.kube_context, raw.namespace, raw.host) {
        (Some(context), Some(namespace), _) => Scope::Daemon { context, namespace },
        (_, _, Some(host)) => Scope::Host(host),
        _ => {
            return Err(CacheError::Malformed(
                "neither kubeContext and namespace nor Host".to_string(),
            ));
        }
    };
    Ok(SavedSession { scope, session })
}

/// Reads `daemons/<id>.json`.
pub fn parse_daemon_info(bytes: &[u8]) -> Result<DaemonInfo, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::Malformed(e.to_string()))
}

/// The traffic-manager's namespace in what `telepresence status --output json` prints
/// (`user_daemon.manager_namespace`), if it says one.
pub fn status_manager_namespace(output: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(output).ok()?;
    v["user_daemon"]["manager_namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .map(str::to_string)
}

/// Telepresence 2's user cache dir, from the connector's environment: `$XDG_CACHE_HOME`
/// (any non-empty value, as 2.x takes it; a relative one is relative to the connector's
/// working directory) or `~/.cache`, then `telepresence`; on macOS
/// `~/Library/Caches/telepresence`.
pub fn cache_dir(
    xdg_cache_home: Option<&str>,
    home: Option<&Path>,
    macos: bool,
) -> Option<PathBuf> {
    if macos {
        return home.map(|h| h.join("Library/Caches/telepresence"));
    }
    match xdg_cache_home.filter(|d| !d.is_empty()) {
        Some(d) => Some(Path::new(d).join("telepresence")),
        None => home.map(|h| h.join(".cache/telepresence")),
    }
}

pub mod intercept;
pub mod verdict;

#[cfg(test)]
mod tests;
