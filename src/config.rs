//! Configuration in two stages: [`RawConfig`], the TOML file exactly as written (unknown
//! keys are errors that name the key), then [`Config`], with defaults and paths resolved
//! against the environment.
//!
//! Paths: the config file is `<config dir>/config.toml` (`TELEPOLICE_CONFIG` overrides);
//! the journal lives in the state dir (`TELEPOLICE_STATE_DIR`), the lock in the runtime dir
//! (`TELEPOLICE_RUNTIME_DIR`), logs in the log dir (`TELEPOLICE_LOG_DIR`), and Telepresence's
//! `tel-*` session dirs are looked for in `TELEPOLICE_TMPDIR` (default: the system temp dir).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnShellDeath {
    /// Send Telepresence SIGTERM so it runs its own cleanup, then repair what it skipped.
    #[default]
    Terminate,
    /// Leave it running.
    Ignore,
}

/// What to do when the machine is about to sleep while sessions are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnSleep {
    /// Leave the sessions running; whatever dies during the sleep is repaired after it.
    #[default]
    Keep,
    /// Hold logind's sleep back (a delay inhibitor) and send each live Telepresence
    /// SIGTERM, so that it cleans up while the network is still up.
    EndSessions,
}

/// `config.toml` as written. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Seconds to let Telepresence's own cleanup finish after its process exits.
    pub grace_period_secs: Option<f64>,
    /// Seconds between safety-net scans of the process table.
    pub scan_interval_secs: Option<f64>,
    /// Telepresence programs to watch (paths). Empty: every `telepresence` on `PATH`.
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
    /// Days to keep ended sessions in the journal.
    pub history_days: Option<f64>,
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
    /// How long ended sessions are kept.
    pub history: Duration,
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
        let tmp_dir = var("TELEPOLICE_TMPDIR")
            .or_else(|| var("TMPDIR"))
            .unwrap_or_else(std::env::temp_dir);
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
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths::resolve(&|k| match k {
            "TELEPOLICE_CONFIG" => Some("/cfg/config.toml".into()),
            "TELEPOLICE_STATE_DIR" => Some("/state".into()),
            "TELEPOLICE_RUNTIME_DIR" => Some("/run/tp".into()),
            "TELEPOLICE_LOG_DIR" => Some("/logs".into()),
            "TELEPOLICE_TMPDIR" => Some("/tmp/x".into()),
            _ => None,
        })
        .expect("paths")
    }

    #[test]
    fn environment_overrides_every_path() {
        let p = paths();
        assert_eq!(p.config_file, PathBuf::from("/cfg/config.toml"));
        assert_eq!(p.state_dir, PathBuf::from("/state"));
        assert_eq!(p.runtime_dir, PathBuf::from("/run/tp"));
        assert_eq!(p.log_dir, PathBuf::from("/logs"));
        assert_eq!(p.tmp_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn an_empty_file_means_defaults() {
        let c = Config::resolve(parse("", Path::new("c.toml")).expect("parses"), paths())
            .expect("valid");
        assert_eq!(c.grace_period, Duration::from_secs(3));
        assert!(!c.dry_run);
        assert_eq!(c.on_shell_death, OnShellDeath::Terminate);
        assert_eq!(c.on_sleep, OnSleep::Keep);
        assert!(c.in_scope("any", "thing"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_line() {
        let e = parse(
            "dry_run = true\ngrace_perod_secs = 1\n",
            Path::new("/c.toml"),
        )
        .expect_err("unknown key");
        let msg = e.to_string();
        assert!(
            msg.contains("/c.toml") && msg.contains("grace_perod_secs") && msg.contains("line 2"),
            "{msg}"
        );
        let e = parse("dry_run = \"yes\"\n", Path::new("/c.toml")).expect_err("wrong type");
        assert!(e.to_string().contains("dry_run"), "{e}");
        let e = Config::resolve(
            parse("grace_period_secs = -1", Path::new("/c.toml")).expect("parses"),
            paths(),
        )
        .expect_err("negative");
        assert!(e.to_string().contains("grace_period_secs"), "{e}");
    }

    #[test]
    fn scope_lists_allow_and_deny() {
        let raw = parse(
            "contexts = [\"dev\"]\nignore_namespaces = [\"kube-system\"]\non_shell_death = \"ignore\"\non_sleep = \"end-sessions\"\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        let c = Config::resolve(raw, paths()).expect("valid");
        assert!(c.in_scope("dev", "team"));
        assert!(!c.in_scope("prod", "team"));
        assert!(!c.in_scope("dev", "kube-system"));
        assert_eq!(c.on_shell_death, OnShellDeath::Ignore);
        assert_eq!(c.on_sleep, OnSleep::EndSessions);
    }
}
