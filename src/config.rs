//! Configuration in two stages: [`RawConfig`], the TOML file exactly as written (unknown
//! keys are errors that name the key), then [`Config`], with defaults and paths resolved
//! against the environment.
//!
//! Paths: the config file is `<config dir>/config.toml` (`TELEPOLICE_CONFIG` overrides);
//! the journal lives in the state dir (`TELEPOLICE_STATE_DIR`), the lock in the runtime dir
//! (`TELEPOLICE_RUNTIME_DIR`), logs in the log dir (`TELEPOLICE_LOG_DIR`), and Telepresence's
//! `tel-*` session dirs are looked for in `TELEPOLICE_TMPDIR` (default: `/tmp`, where 0.x
//! makes them whatever `TMPDIR` says).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file exists but could not be read.
    #[error("reading the config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid (the message names the line and the key).
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range.
    #[error("invalid config file {path}: `{key}` {message}")]
    Value {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    /// No directory could be found for the agent's files.
    #[error("cannot find a home directory for the agent's files; set {var}")]
    NoHome { var: &'static str },
}

/// The safety-net scan's default interval. On Linux the scan only backs up the inotify
/// and pidfd events, so it can be slow; elsewhere (macOS) it is how sessions are found,
/// so it runs every 2 s (one `ps` call).
pub const DEFAULT_SCAN_INTERVAL_SECS: f64 = if cfg!(target_os = "linux") { 30.0 } else { 2.0 };

/// What to do when the shell that started a session dies while Telepresence lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnShellDeath {
    /// Send Telepresence SIGTERM so it runs its own cleanup, then repair what it skipped.
    #[default]
    Terminate,
    /// Leave it running.
    Ignore,
}

/// What to do when the machine is about to sleep while sessions are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnSleep {
    /// Leave the sessions running; whatever dies during the sleep is repaired after it.
    #[default]
    Keep,
    /// Hold logind's sleep back (a delay inhibitor) and send each live Telepresence
    /// SIGTERM, so that it cleans up while the network is still up.
    EndSessions,
}

/// How log lines are written (stderr and files alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One plain line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `config.toml` as written. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Seconds to let Telepresence's own cleanup finish after its process exits.
    pub grace_period_secs: Option<f64>,
    /// Seconds between safety-net scans of the process table.
    pub scan_interval_secs: Option<f64>,
    /// Telepresence programs to watch (paths), whose names count besides `telepresence`.
    /// Empty: every `telepresence` on `PATH` and in the usual places.
    pub telepresence_programs: Option<Vec<PathBuf>>,
    /// Only these kube contexts (empty: all).
    pub contexts: Option<Vec<String>>,
    /// Never these kube contexts.
    pub ignore_contexts: Option<Vec<String>>,
    /// Only these namespaces (empty: all).
    pub namespaces: Option<Vec<String>>,
    /// Never these namespaces.
    pub ignore_namespaces: Option<Vec<String>>,
    /// Plan and report repairs without acting.
    pub dry_run: Option<bool>,
    /// What to do when a session's shell dies.
    pub on_shell_death: Option<OnShellDeath>,
    /// What to do before the machine sleeps.
    pub on_sleep: Option<OnSleep>,
    /// Log verbosity: an `EnvFilter` directive (`info`, `debug`, `telepolice_agent=trace`).
    pub log_level: Option<String>,
    /// Log lines as text or JSON.
    pub log_format: Option<LogFormat>,
    /// Daily log files kept.
    pub log_retention_days: Option<u32>,
    /// Desktop notifications when a session was repaired or needs a person.
    pub notifications: Option<bool>,
    /// Days to keep ended sessions in the journal.
    pub history_days: Option<f64>,
    /// Follow Telepresence 2 connectors and end the sessions of those that died.
    pub telepresence2: Option<bool>,
    /// Seconds a dead connector's session is left for a connector to resume it.
    pub telepresence2_grace_secs: Option<f64>,
    /// Where Telepresence 2's traffic-manager runs.
    pub telepresence2_manager_namespace: Option<String>,
    /// Team mode: the recovery facts on the proxy and a heartbeat Lease per session.
    pub team: Option<bool>,
    /// Where a Telepresence 2 session's heartbeat Lease goes (default: the session's
    /// namespace).
    pub team_lease_namespace: Option<String>,
}

/// Where the agent keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The config file (it need not exist).
    pub config_file: PathBuf,
    /// Journal and history.
    pub state_dir: PathBuf,
    /// Lock and control socket.
    pub runtime_dir: PathBuf,
    /// Rolling logs.
    pub log_dir: PathBuf,
    /// Where Telepresence makes its `tel-*` dirs.
    pub tmp_dir: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where things live.
    pub paths: Paths,
    /// Grace after a process exits.
    pub grace_period: Duration,
    /// Safety-net scan interval.
    pub scan_interval: Duration,
    /// Programs to watch; empty means "every `telepresence` found on PATH".
    pub telepresence_programs: Vec<PathBuf>,
    /// Context allow list (empty: all).
    pub contexts: Vec<String>,
    /// Context deny list.
    pub ignore_contexts: Vec<String>,
    /// Namespace allow list (empty: all).
    pub namespaces: Vec<String>,
    /// Namespace deny list.
    pub ignore_namespaces: Vec<String>,
    /// Plan and report only.
    pub dry_run: bool,
    /// Shell death policy.
    pub on_shell_death: OnShellDeath,
    /// Sleep policy.
    pub on_sleep: OnSleep,
    /// Log verbosity (an `EnvFilter` directive); `TELEPOLICE_LOG` overrides it.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Daily log files kept (at least 1).
    pub log_retention_days: u32,
    /// Desktop notifications on.
    pub notifications: bool,
    /// How long ended sessions are kept.
    pub history: Duration,
    /// Follow Telepresence 2 connectors.
    pub telepresence2: bool,
    /// How long a dead connector's session is left for a connector to resume it.
    pub telepresence2_grace: Duration,
    /// The traffic-manager's namespace.
    pub telepresence2_manager_namespace: String,
    /// Team mode on: facts on proxies, a heartbeat Lease per session.
    pub team: bool,
    /// The namespace of 2.x sessions' heartbeat Leases (`None`: the session's namespace).
    pub team_lease_namespace: Option<String>,
}

/// The process environment as the lookups of [`Paths::resolve`] and others take it.
pub fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl Paths {
    /// Resolves every path from `env` (a lookup, so tests need not touch the process
    /// environment), falling back to the platform's conventional directories.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dirs = directories::ProjectDirs::from("", "", "telepolice-agent");
        let need = |v: Option<PathBuf>, var_name: &'static str| {
            v.ok_or(ConfigError::NoHome { var: var_name })
        };
        let config_file = match var("TELEPOLICE_CONFIG") {
            Some(p) => p,
            None => need(
                dirs.as_ref().map(|d| d.config_dir().join("config.toml")),
                "TELEPOLICE_CONFIG",
            )?,
        };
        let state_dir = match var("TELEPOLICE_STATE_DIR") {
            Some(p) => p,
            None => need(
                dirs.as_ref().map(|d| {
                    d.state_dir()
                        .unwrap_or_else(|| d.data_local_dir())
                        .to_path_buf()
                }),
                "TELEPOLICE_STATE_DIR",
            )?,
        };
        let runtime_dir = match var("TELEPOLICE_RUNTIME_DIR") {
            Some(p) => p,
            None => dirs
                .as_ref()
                .and_then(|d| d.runtime_dir().map(Path::to_path_buf))
                .unwrap_or_else(|| state_dir.join("run")),
        };
        let log_dir = match var("TELEPOLICE_LOG_DIR") {
            Some(p) => p,
            None => default_log_dir(&state_dir, env),
        };
        // Telepresence 0.105-0.109 make their tel-* dirs in /tmp whatever TMPDIR says (on
        // macOS too, where TMPDIR is under /var/folders): so does the agent look there.
        let tmp_dir = var("TELEPOLICE_TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
        Ok(Self {
            config_file,
            state_dir,
            runtime_dir,
            log_dir,
            tmp_dir,
        })
    }
}

fn default_log_dir(state_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if cfg!(target_os = "macos")
        && let Some(home) = env("HOME")
    {
        return PathBuf::from(home).join("Library/Logs/telepolice-agent");
    }
    state_dir.join("logs")
}

/// The config file with every key at its default, each explained, commented out: what
/// `telepolice-agent config --default` prints.
pub const DEFAULT_FILE: &str = r#"# telepolice-agent configuration. Every key is optional; the values shown are the
# defaults. Unknown keys are errors. SIGHUP (or saving this file) reloads it; the log_*
# keys take effect at the next start.

# Seconds to let Telepresence's own cleanup finish after its process exits, before the
# agent compares the cluster with its record.
# grace_period_secs = 3

# Seconds between full scans of the process table: a safety net behind inotify and pidfds
# on Linux (default 30), the way sessions are found elsewhere (default 2).
# scan_interval_secs = 30

# The Telepresence programs to watch (paths), so that a session is seen the instant it
# starts. Empty: every `telepresence` on PATH, /usr/local/bin, /usr/bin, /opt/homebrew/bin
# and ~/.local/bin. Their file names count as Telepresence besides `telepresence`. A
# Python program of such a name elsewhere is followed too: found by the safety-net scan,
# then watched.
# telepresence_programs = []

# Kube contexts to restrict to (empty: all) and to ignore.
# contexts = []
# ignore_contexts = []

# Namespaces to restrict to (empty: all) and to ignore.
# namespaces = []
# ignore_namespaces = []

# Plan and report repairs, never act.
# dry_run = false

# When a session's shell dies while Telepresence runs on: "terminate" (SIGTERM, so that
# Telepresence cleans up) or "ignore".
# on_shell_death = "terminate"

# Before the machine sleeps: "keep" (sessions run on; whatever died is repaired after the
# resume) or "end-sessions" (hold the sleep back with a logind delay inhibitor and SIGTERM
# each live Telepresence, so that it cleans up while the network is up).
# on_sleep = "keep"

# Days to keep ended sessions in the journal.
# history_days = 7

# Log verbosity, an EnvFilter directive ("info", "debug", "telepolice_agent=trace");
# the TELEPOLICE_LOG environment variable overrides it.
# log_level = "info"

# Log lines as "text" or "json" (stderr and the daily files alike).
# log_format = "text"

# Daily log files kept.
# log_retention_days = 7

# A desktop notification when a session was repaired or needs a person.
# notifications = true

# Telepresence 2: follow each connector (`telepresence connect`) and, when one dies without
# departing (kill -9, a crash, a laptop that never came back), end its session in the
# traffic-manager with `Depart`, so that its intercepts do not live on for the manager's TTL
# (24 h by default). false: leave 2.x alone.
# telepresence2 = true

# Seconds a dead connector's session is left for a new `telepresence connect` to resume it,
# before the agent ends it.
# telepresence2_grace_secs = 10

# The traffic-manager's namespace (Telepresence's own default).
# telepresence2_manager_namespace = "ambassador"

# Team mode: once a session is recorded, write the recovery facts (the original workload,
# its replica count and their evidence, this host and user) onto the session's proxy as
# telepolice.dev/ annotations, and keep a heartbeat Lease per session (renewed every 10 s,
# deleted when the session ends cleanly). An in-cluster `telepolice-agent sweep` repairs the
# sessions of laptops that never came back from them. Needs create/update/delete on leases
# and patch on the proxy in the session's namespace; without them the agent says so and
# works alone. false: write nothing to the cluster but repairs.
# team = true

# The namespace of a Telepresence 2 session's heartbeat Lease (2.x makes no proxy to put it
# beside). Unset (the default): the namespace the session connected to. For example:
#   team_lease_namespace = "telepresence-leases"
"#;

/// Parses a config file's text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

fn secs(
    v: Option<f64>,
    default: f64,
    key: &'static str,
    min: f64,
    path: &Path,
) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if !s.is_finite() || s < min || s > 1e9 {
        return Err(ConfigError::Value {
            path: path.to_path_buf(),
            key,
            message: format!("must be a number of seconds of at least {min}, got {s}"),
        });
    }
    Ok(Duration::from_secs_f64(s))
}

impl Config {
    /// Fills in defaults.
    pub fn resolve(raw: RawConfig, paths: Paths) -> Result<Self, ConfigError> {
        let p = paths.config_file.clone();
        Ok(Self {
            grace_period: secs(raw.grace_period_secs, 3.0, "grace_period_secs", 0.0, &p)?,
            scan_interval: secs(
                raw.scan_interval_secs,
                DEFAULT_SCAN_INTERVAL_SECS,
                "scan_interval_secs",
                1.0,
                &p,
            )?,
            history: secs(
                raw.history_days.map(|d| d * 86_400.0),
                7.0 * 86_400.0,
                "history_days",
                0.0,
                &p,
            )?,
            telepresence_programs: raw.telepresence_programs.unwrap_or_default(),
            contexts: raw.contexts.unwrap_or_default(),
            ignore_contexts: raw.ignore_contexts.unwrap_or_default(),
            namespaces: raw.namespaces.unwrap_or_default(),
            ignore_namespaces: raw.ignore_namespaces.unwrap_or_default(),
            dry_run: raw.dry_run.unwrap_or(false),
            on_shell_death: raw.on_shell_death.unwrap_or_default(),
            on_sleep: raw.on_sleep.unwrap_or_default(),
            log_level: match raw.log_level {
                Some(l) => {
                    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&l) {
                        return Err(ConfigError::Value {
                            path: p,
                            key: "log_level",
                            message: format!("is not a valid log filter ({e}): {l:?}"),
                        });
                    }
                    l
                }
                None => "info".to_string(),
            },
            log_format: raw.log_format.unwrap_or_default(),
            log_retention_days: match raw.log_retention_days {
                Some(0) => {
                    return Err(ConfigError::Value {
                        path: p,
                        key: "log_retention_days",
                        message: "must be at least 1".to_string(),
                    });
                }
                Some(n) => n,
                None => 7,
            },
            notifications: raw.notifications.unwrap_or(true),
            telepresence2: raw.telepresence2.unwrap_or(true),
            telepresence2_grace: secs(
                raw.telepresence2_grace_secs,
                10.0,
                "telepresence2_grace_secs",
                0.0,
                &p,
            )?,
            telepresence2_manager_namespace: match raw.telepresence2_manager_namespace {
                Some(ns) if ns.is_empty() => {
                    return Err(ConfigError::Value {
                        path: p,
                        key: "telepresence2_manager_namespace",
                        message: "must not be empty".to_string(),
                    });
                }
                Some(ns) => ns,
                None => "ambassador".to_string(),
            },
            team: raw.team.unwrap_or(true),
            team_lease_namespace: match raw.team_lease_namespace {
                Some(ns) if ns.is_empty() => {
                    return Err(ConfigError::Value {
                        path: p,
                        key: "team_lease_namespace",
                        message: "must not be empty (leave it out for the session's namespace)"
                            .to_string(),
                    });
                }
                ns => ns,
            },
            paths,
        })
    }

    /// Loads the config file named by `paths` (a missing file means all defaults).
    pub fn load(paths: Paths) -> Result<Self, ConfigError> {
        let raw = match std::fs::read_to_string(&paths.config_file) {
            Ok(text) => parse(&text, &paths.config_file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RawConfig::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: paths.config_file.clone(),
                    source,
                });
            }
        };
        Self::resolve(raw, paths)
    }

    /// The configuration in effect, as a `config.toml` would say it (for `config`).
    pub fn effective(&self) -> String {
        let raw = RawConfig {
            grace_period_secs: Some(self.grace_period.as_secs_f64()),
            scan_interval_secs: Some(self.scan_interval.as_secs_f64()),
            telepresence_programs: Some(self.telepresence_programs.clone()),
            contexts: Some(self.contexts.clone()),
            ignore_contexts: Some(self.ignore_contexts.clone()),
            namespaces: Some(self.namespaces.clone()),
            ignore_namespaces: Some(self.ignore_namespaces.clone()),
            dry_run: Some(self.dry_run),
            on_shell_death: Some(self.on_shell_death),
            on_sleep: Some(self.on_sleep),
            history_days: Some(self.history.as_secs_f64() / 86_400.0),
            log_level: Some(self.log_level.clone()),
            log_format: Some(self.log_format),
            log_retention_days: Some(self.log_retention_days),
            notifications: Some(self.notifications),
            telepresence2: Some(self.telepresence2),
            telepresence2_grace_secs: Some(self.telepresence2_grace.as_secs_f64()),
            telepresence2_manager_namespace: Some(self.telepresence2_manager_namespace.clone()),
            team: Some(self.team),
            team_lease_namespace: self.team_lease_namespace.clone(),
        };
        toml::to_string(&raw).unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }

    /// Whether team mode writes to the cluster (its facts and heartbeats): on, and not a
    /// dry run (which writes nothing).
    pub fn team_writes(&self) -> bool {
        self.team && !self.dry_run
    }

    /// Whether sessions in this context and namespace are the agent's business.
    pub fn in_scope(&self, context: &str, namespace: &str) -> bool {
        let allowed = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        allowed(&self.contexts, context)
            && !self.ignore_contexts.iter().any(|x| x == context)
            && allowed(&self.namespaces, namespace)
            && !self.ignore_namespaces.iter().any(|x| x == namespace)
    }
}

#[cfg(test)]
mod tests;
