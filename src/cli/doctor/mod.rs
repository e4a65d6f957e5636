//! `telepolice-agent doctor`: whether the agent can do its work on this machine, one line
//! per check. Its config loads; a kubeconfig with contexts is found; each context in scope
//! answers and grants every permission a repair needs
//! ([`NEEDED_PERMISSIONS`](crate::effects::cluster::NEEDED_PERMISSIONS)); the Telepresence programs
//! are found, with their versions and whether the agent follows them; the daemon runs and
//! answers on its socket; the service is installed; the journal is healthy.
//!
//! # Layout
//! - Here: the report ([`Report`], a list of [`Check`]s), how it is printed, the exit code,
//!   and [`run`], which gathers every check.
//! - `local`: the checks on this machine (config, kubeconfig files, Telepresence programs,
//!   daemon, journal).
//! - `service`: whether the service definition is installed (and enabled).
//! - `contexts`: which contexts and namespaces are checked, and each context's
//!   reachability and permissions, all contexts at once.
//!
//! # Guarantees
//! - Nothing is changed in any cluster: reachability is `GET /version`, permissions are
//!   asked with SelfSubjectAccessReviews, as `kubectl auth can-i` asks them.
//! - Everything that waits on something outside this process (a cluster, a Telepresence
//!   program, the daemon) is bounded: by [`Options::timeout`] for clusters and programs,
//!   by 5 s for the daemon's socket. Contexts are checked concurrently, so a dead cluster
//!   costs one timeout however many there are.
//! - The exit code is 1 exactly when a check failed; warnings alone exit 0.
//!
//! # Caveats
//! - The kubeconfig checked is this process's (`KUBECONFIG`, else `~/.kube/config`), which
//!   is what a Telepresence started from the same shell would use; the agent itself reads
//!   each session's own.
//! - The journal is opened as `status` opens it: a record that does not decode is moved to
//!   quarantine (and reported).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, ConfigError, Paths, RawConfig};

mod contexts;
mod local;
mod service;
mod telepresence2;

pub use service::{SYSTEMD_UNIT, service_dirs};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth a look, but the agent can work (the exit code stays 0).
    Warn,
    /// Something is wrong: the agent cannot do (all of) its work (exit code 1).
    Fail,
}

impl Status {
    /// The word that starts the check's line.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// How it came out.
    pub status: Status,
    /// What was checked: `config`, `kubeconfig`, `context <name>`, `permissions <name>`,
    /// `scope`, `telepresence`, `telepresence 2`, `daemon`, `service`, `journal`.
    pub check: String,
    /// What was found, and for a problem what to do about it.
    pub message: String,
}

impl Check {
    fn new(status: Status, check: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            check: check.into(),
            message: message.into(),
        }
    }

    /// A passed check.
    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Status::Ok, check, message)
    }

    /// A warning.
    pub fn warn(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Status::Warn, check, message)
    }

    /// A failed check.
    pub fn fail(check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Status::Fail, check, message)
    }

    /// The check's line: the status padded to six columns, the check's name, the message
    /// (kept on one line).
    pub fn line(&self) -> String {
        let message = self.message.trim().replace('\n', " ");
        format!("{:<6}{}: {message}", self.status.label(), self.check)
    }
}

/// Every check, in the order they are printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// How many checks came out as `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// Whether no check failed.
    pub fn healthy(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// 0 when no check failed (warnings allowed), else 1.
    pub fn exit_code(&self) -> u8 {
        if self.healthy() { 0 } else { 1 }
    }

    /// The closing line: how many checks, and how they came out.
    pub fn summary(&self) -> String {
        let (ok, warn, fail) = (
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
        );
        let n = self.checks.len();
        let plural = local::plural;
        let counts = format!(
            "{}: {ok} ok, {}, {fail} failed",
            plural(n, "check", "checks"),
            plural(warn, "warning", "warnings")
        );
        if fail > 0 {
            format!("{counts}; the agent cannot do all of its work here (see FAIL above)")
        } else if warn > 0 {
            format!("{counts}; the agent can work (see the warnings above)")
        } else {
            format!("{counts}; all good")
        }
    }

    /// The report as people read it: one line per check, a blank line, the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&c.line());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// The report for programs: every check, the counts, and whether it is healthy.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "checks": self.checks,
            "summary": {
                "ok": self.count(Status::Ok),
                "warn": self.count(Status::Warn),
                "fail": self.count(Status::Fail),
            },
            "healthy": self.healthy(),
        })
    }
}

/// What to check and how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Only this kube context (even one the config's scope leaves out).
    pub context: Option<String>,
    /// Check permissions in this namespace instead of the config's `namespaces` or each
    /// context's own.
    pub namespace: Option<String>,
    /// How long to wait for each cluster (its version, then all its access reviews) and
    /// for each Telepresence program's `--version`.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            context: None,
            namespace: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a part of a check could not be carried out; each becomes (part of) a check's line.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// A Telepresence program could not be run.
    #[error("running `{program} --version`: {source}")]
    RunVersion {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A Telepresence program's `--version` did not finish in time.
    #[error("`{program} --version` did not finish within {secs} s")]
    VersionTimeout { program: PathBuf, secs: f64 },
    /// A cluster did not answer in time.
    #[error("{server} did not answer within {secs} s")]
    NoAnswer { server: String, secs: f64 },
}

/// The process environment `doctor` looks at (`KUBECONFIG`, `HOME`, `PATH`,
/// `XDG_CONFIG_HOME`) and its working directory (for relative `KUBECONFIG` entries).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Environment variables.
    pub vars: HashMap<String, String>,
    /// The working directory.
    pub cwd: Option<PathBuf>,
}

impl Environment {
    /// This process's environment (variables that are not valid UTF-8 are left out).
    pub fn current() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            cwd: std::env::current_dir().ok(),
        }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Runs every check and returns the report. `paths` is the outcome of resolving the
/// agent's paths (a failure is reported, not returned).
pub async fn run(paths: Result<Paths, ConfigError>, env: &Environment, opts: &Options) -> Report {
    let mut checks = Vec::new();
    let paths = match paths {
        Ok(p) => Some(p),
        Err(e) => {
            checks.push(Check::fail("config", e.to_string()));
            None
        }
    };
    let cfg = paths.as_ref().and_then(|p| {
        let (found, cfg) = local::config(p);
        checks.extend(found);
        cfg.or_else(|| Config::resolve(RawConfig::default(), p.clone()).ok())
    });
    let kube = local::kubeconfig(env);
    checks.extend(kube.checks.iter().cloned());

    let runtime_dir = paths.as_ref().map(|p| p.runtime_dir.clone());
    let daemon = async move {
        match runtime_dir {
            // The socket client blocks (with its own 5 s bound): keep it off the runtime.
            Some(dir) => tokio::task::spawn_blocking(move || local::daemon(&dir))
                .await
                .unwrap_or_else(|e| {
                    vec![Check::fail("daemon", format!("the check panicked: {e}"))]
                }),
            None => vec![Check::fail(
                "daemon",
                "not checked: the runtime dir is unknown",
            )],
        }
    };
    let (clusters, programs, daemon) = tokio::join!(
        contexts::check(cfg.as_ref(), &kube, env, opts),
        local::programs(cfg.as_ref(), env, opts.timeout),
        daemon,
    );
    checks.extend(clusters);
    checks.extend(programs);
    checks.extend(telepresence2::sessions(env, std::time::SystemTime::now()));
    checks.extend(daemon);
    checks.push(service::service(env));
    match &paths {
        Some(p) => checks.extend(local::journal(&p.state_dir)),
        None => checks.push(Check::fail(
            "journal",
            "not checked: the state dir is unknown",
        )),
    }
    Report { checks }
}

/// The permissions as the README's "doctor" section lists them (a Markdown table), from
/// [`NEEDED_PERMISSIONS`](crate::effects::cluster::NEEDED_PERMISSIONS).
pub fn permissions_table() -> String {
    let mut t = String::from("| verb | resource | what for |\n|---|---|---|\n");
    for p in crate::effects::cluster::NEEDED_PERMISSIONS {
        t.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            p.verb,
            p.qualified_resource(),
            p.why
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(statuses: &[Status]) -> Report {
        Report {
            checks: statuses
                .iter()
                .enumerate()
                .map(|(i, s)| Check::new(*s, format!("c{i}"), "m"))
                .collect(),
        }
    }

    #[test]
    fn a_line_is_the_padded_status_the_check_and_the_message() {
        assert_eq!(
            Check::ok("kubeconfig", "/home/u/.kube/config (3 contexts)").line(),
            "ok    kubeconfig: /home/u/.kube/config (3 contexts)"
        );
        assert_eq!(
            Check::warn("service", "not installed").line(),
            "warn  service: not installed"
        );
        assert_eq!(
            Check::fail("daemon", "not running\nat all").line(),
            "FAIL  daemon: not running at all"
        );
    }

    #[test]
    fn warnings_alone_exit_zero_and_a_failure_exits_one() {
        assert_eq!(report(&[Status::Ok, Status::Ok]).exit_code(), 0);
        assert_eq!(report(&[Status::Ok, Status::Warn]).exit_code(), 0);
        assert_eq!(report(&[Status::Warn, Status::Fail]).exit_code(), 1);
    }

    #[test]
    fn the_summary_counts_each_outcome() {
        assert_eq!(
            report(&[Status::Ok, Status::Ok]).summary(),
            "2 checks: 2 ok, 0 warnings, 0 failed; all good"
        );
        assert_eq!(
            report(&[Status::Ok, Status::Warn]).summary(),
            "2 checks: 1 ok, 1 warning, 0 failed; the agent can work (see the warnings above)"
        );
        let r = report(&[Status::Fail, Status::Warn, Status::Ok]);
        assert!(
            r.summary()
                .starts_with("3 checks: 1 ok, 1 warning, 1 failed; ")
        );
        let text = r.render();
        assert!(text.starts_with("FAIL  c0: m\nwarn  c1: m\nok    c2: m\n\n3 checks"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_json_report_has_every_check_and_the_counts() {
        let v = report(&[Status::Ok, Status::Fail]).to_json();
        assert_eq!(v["checks"][1]["status"], "fail");
        assert_eq!(v["checks"][1]["check"], "c1");
        assert_eq!(v["summary"]["fail"], 1);
        assert_eq!(v["healthy"], false);
    }

    #[test]
    fn the_readme_lists_exactly_the_permissions_doctor_checks() {
        let readme = include_str!("../../../README.md");
        let table = permissions_table();
        assert!(
            readme.contains(&table),
            "README.md's doctor section must contain this table (from cluster::NEEDED_PERMISSIONS):\n{table}"
        );
    }

    #[test]
    fn the_permissions_are_those_the_repair_uses() {
        let list: Vec<String> = crate::effects::cluster::NEEDED_PERMISSIONS
            .iter()
            .map(|p| format!("{} {}", p.verb, p.qualified_resource()))
            .collect();
        assert_eq!(
            list,
            [
                "get deployments.apps",
                "list deployments.apps",
                "watch deployments.apps",
                "patch deployments.apps",
                "delete deployments.apps",
                "get pods",
                "list pods",
                "watch pods",
                "delete pods",
                "get services",
                "list services",
                "watch services",
                "delete services",
            ]
        );
    }
}
