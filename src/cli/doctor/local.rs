//! The checks on this machine: the config file, the kubeconfig files, the Telepresence
//! programs and their versions, the daemon, the journal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Check, DoctorError, Environment};
use crate::config::{Config, Paths};
use crate::effects::cluster;
use crate::effects::journal::{Journal, LoadProblem};
use crate::session::State;
use crate::telepresence::{self, Flavor};

/// Checks the config file; returns the lines and the configuration when it loads.
pub(super) fn config(paths: &Paths) -> (Vec<Check>, Option<Config>) {
    let path = &paths.config_file;
    if !path.exists() {
        let cfg = Config::load(paths.clone()).ok();
        return (
            vec![Check::ok(
                "config",
                format!("{} does not exist; using the defaults", path.display()),
            )],
            cfg,
        );
    }
    match Config::load(paths.clone()) {
        Ok(cfg) => {
            let mut out = vec![Check::ok("config", format!("{} loads", path.display()))];
            if cfg.dry_run {
                out.push(Check::warn(
                    "config",
                    "dry_run = true: the agent plans and reports repairs but never carries them out",
                ));
            }
            (out, Some(cfg))
        }
        Err(e) => (
            vec![Check::fail(
                "config",
                format!(
                    "{e}; the daemon will not start with it (the checks below use the defaults)"
                ),
            )],
            None,
        ),
    }
}

/// What the kubeconfig checks found: their lines, and the merged contexts in file order.
#[derive(Debug, Clone, Default)]
pub(super) struct Kubeconfigs {
    /// The lines.
    pub checks: Vec<Check>,
    /// Every context of the merged kubeconfig, in order.
    pub contexts: Vec<String>,
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Checks the kubeconfig files this process would use (its `KUBECONFIG`, else
/// `~/.kube/config`): each exists and parses, and together they hold contexts.
pub(super) fn kubeconfig(env: &Environment) -> Kubeconfigs {
    let mut out = Kubeconfigs::default();
    let paths = cluster::kubeconfig_paths(&env.vars, env.cwd.as_deref());
    let from_var = env.var("KUBECONFIG").is_some();
    if paths.is_empty() {
        out.checks.push(Check::fail(
            "kubeconfig",
            "neither KUBECONFIG nor HOME is set, so there is no kubeconfig to read",
        ));
        return out;
    }
    let mut readable = 0;
    let mut missing = Vec::new();
    for p in &paths {
        if !p.exists() {
            missing.push(p.clone());
            continue;
        }
        match kube::config::Kubeconfig::read_from(p) {
            Ok(kc) => {
                readable += 1;
                let mut what = plural(kc.contexts.len(), "context", "contexts");
                if let Some(c) = &kc.current_context {
                    what.push_str(&format!(", current {c}"));
                }
                out.checks
                    .push(Check::ok("kubeconfig", format!("{} ({what})", p.display())));
            }
            Err(e) => out
                .checks
                .push(Check::fail("kubeconfig", format!("{}: {e}", p.display()))),
        }
    }
    let list = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if readable == 0 && out.checks.is_empty() {
        let message = if from_var {
            format!(
                "none of the files KUBECONFIG names exists ({}): Telepresence has no cluster to talk to",
                list(&missing)
            )
        } else {
            format!(
                "{} does not exist and KUBECONFIG is not set: create it (your cluster's `get-credentials` command does) or point KUBECONFIG at one",
                list(&missing)
            )
        };
        out.checks.push(Check::fail("kubeconfig", message));
        return out;
    }
    if from_var {
        for p in &missing {
            out.checks.push(Check::warn(
                "kubeconfig",
                format!("{} (named in KUBECONFIG) does not exist", p.display()),
            ));
        }
    }
    if readable == 0 {
        return out;
    }
    merged_contexts(&paths, &mut out);
    out
}

/// The contexts of the kubeconfig files merged, and whether the current one is among them.
fn merged_contexts(paths: &[PathBuf], out: &mut Kubeconfigs) {
    let list = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match cluster::load_merged(paths) {
        Ok(kc) => {
            out.contexts = kc.contexts.iter().map(|c| c.name.clone()).collect();
            if out.contexts.is_empty() {
                out.checks
                    .push(Check::fail("kubeconfig", format!("no contexts in {list}")));
            }
            match &kc.current_context {
                None if !out.contexts.is_empty() => out.checks.push(Check::warn(
                    "kubeconfig",
                    "no current-context is set: a Telepresence started without --context fails",
                )),
                Some(c) if !out.contexts.contains(c) => out.checks.push(Check::warn(
                    "kubeconfig",
                    format!("current-context {c:?} names no context in these files"),
                )),
                _ => {}
            }
        }
        Err(e) => out.checks.push(Check::fail("kubeconfig", e.to_string())),
    }
}

/// What a program's `--version` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Version {
    /// A 0.x version (`0.109`).
    Legacy(String),
    /// A 2.x (or later) version (`v2.17.0`).
    Modern(String),
    /// Something else: the first line printed.
    Unknown(String),
}

/// Reads a `telepresence --version` output. 0.x prints its version alone (`0.109`); 2.x
/// prints lines such as `Client: v2.17.0` (and, when it can reach them, its daemons').
pub(super) fn parse_version(output: &str) -> Version {
    let is_version = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') && s.contains('.')
    };
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let line = line.strip_prefix("Telepresence ").unwrap_or(line);
        let word = line.split_whitespace().next().unwrap_or("");
        if is_version(word) && word.starts_with("0.") {
            return Version::Legacy(word.to_string());
        }
        // `Client: v2.17.0`, `OSS Client : v2.20.1`.
        let client = line
            .split_once(':')
            .filter(|(left, _)| left.contains("Client"))
            .map(|(_, right)| right.trim());
        let v = client.unwrap_or(word);
        let bare = v.split_whitespace().next().unwrap_or("");
        let digits = bare.strip_prefix('v').unwrap_or(bare);
        if is_version(digits) && !digits.starts_with("0.") {
            return Version::Modern(bare.to_string());
        }
    }
    Version::Unknown(
        output
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string(),
    )
}

/// Runs `program --version`, bounded by `timeout` (the program is killed when it runs
/// longer), and returns what it printed on stdout, then stderr.
async fn version_output(program: &Path, timeout: Duration) -> Result<String, DoctorError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => Err(DoctorError::VersionTimeout {
            program: program.to_path_buf(),
            secs: timeout.as_secs_f64(),
        }),
        Ok(Err(source)) => Err(DoctorError::RunVersion {
            program: program.to_path_buf(),
            source,
        }),
        Ok(Ok(out)) => Ok(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Which generation the program's file is, from its first bytes (as the agent tells a
/// running one), for when `--version` says nothing recognisable.
fn flavor_of_file(program: &Path) -> Option<Flavor> {
    use std::io::Read;
    let mut head = vec![0u8; 256];
    let n = std::fs::File::open(program).ok()?.read(&mut head).ok()?;
    head.truncate(n);
    let name = program.file_name()?.to_string_lossy().into_owned();
    let argv = [program.display().to_string()];
    telepresence::classify(&argv, Some(&head), &[name.as_str()]).map(|(f, _)| f)
}

async fn program(program: PathBuf, configured: bool, follows_2x: bool, timeout: Duration) -> Check {
    let name = "telepresence";
    if !program.is_file() {
        return if configured {
            Check::fail(
                name,
                format!(
                    "{} (in the config's telepresence_programs) does not exist: the daemon will not start",
                    program.display()
                ),
            )
        } else {
            Check::warn(name, format!("{} is not a file", program.display()))
        };
    }
    let at = program.display();
    let followed = "0.x: the agent follows its sessions";
    let modern = "2.x: the agent follows its connectors and ends the sessions of those that die";
    match version_output(&program, timeout)
        .await
        .map(|o| parse_version(&o))
    {
        Ok(Version::Legacy(v)) => Check::ok(name, format!("{at} {v} ({followed})")),
        Ok(Version::Modern(v)) if follows_2x => Check::ok(name, format!("{at} {v} ({modern})")),
        Ok(Version::Modern(v)) => Check::warn(
            name,
            format!("{at} {v} (2.x: not followed, `telepresence2 = false` in the config)"),
        ),
        other => {
            let said = match other {
                Ok(Version::Unknown(first)) => format!("its --version printed {first:?}"),
                Err(e) => e.to_string(),
                Ok(_) => String::new(),
            };
            match flavor_of_file(&program) {
                Some(Flavor::Legacy) => Check::warn(
                    name,
                    format!(
                        "{at}: version unknown ({said}); a Python program, so 0.x ({followed})"
                    ),
                ),
                _ => Check::warn(
                    name,
                    format!(
                        "{at}: version unknown ({said}); not a Python program, so taken for 2.x (its connectors are followed)"
                    ),
                ),
            }
        }
    }
}

/// Checks every Telepresence program the daemon would watch: the configured ones, or those
/// found on `PATH` and in the usual places, each with its version (all run at once).
pub(super) async fn programs(
    cfg: Option<&Config>,
    env: &Environment,
    timeout: Duration,
) -> Vec<Check> {
    let configured = cfg
        .map(|c| c.telepresence_programs.clone())
        .unwrap_or_default();
    let found =
        crate::signals::discovery::programs_to_watch(&configured, env.var("PATH"), env.var("HOME"));
    if found.is_empty() {
        let every = cfg.map_or(crate::config::DEFAULT_SCAN_INTERVAL_SECS, |c| {
            c.scan_interval.as_secs_f64()
        });
        return vec![Check::warn(
            "telepresence",
            format!(
                "no program named telepresence on PATH, in /usr/local/bin, /usr/bin, /opt/homebrew/bin or ~/.local/bin: a Telepresence elsewhere (a venv, a project's bin/) is followed all the same, found the first time by the safety-net scan (every {every} s) and watched from then on; set telepresence_programs to its path to watch it from the start"
            ),
        )];
    }
    let is_configured = !configured.is_empty();
    let follows_2x = cfg.is_none_or(|c| c.telepresence2);
    futures::future::join_all(
        found
            .into_iter()
            .map(|p| program(p, is_configured, follows_2x, timeout)),
    )
    .await
}

/// Checks that a daemon holds the lock in `runtime_dir` and answers on its socket, and
/// lists the Telepresence processes it passed over or follows half-blind. Blocks for up to
/// 5 s (the socket client's bound).
pub(super) fn daemon(runtime_dir: &Path) -> Vec<Check> {
    let (check, doc) = daemon_answer(runtime_dir);
    let mut out = vec![check];
    let sight: Option<crate::daemon::unfollowed::Sight> = doc
        .as_ref()
        .and_then(|d| serde_json::from_value(d["sight"].clone()).ok());
    match sight {
        Some(crate::daemon::unfollowed::Sight {
            problem: Some(p), ..
        }) => out.push(Check::fail("sight", p)),
        Some(crate::daemon::unfollowed::Sight {
            checked_pid: Some(pid),
            problem: None,
        }) => out.push(Check::ok(
            "sight",
            format!("the daemon reads the environment and working directory of the user's processes (checked on pid {pid})"),
        )),
        _ => {}
    }
    let unfollowed: Vec<crate::daemon::unfollowed::Unfollowed> = doc
        .and_then(|d| serde_json::from_value(d["unfollowed"].clone()).ok())
        .unwrap_or_default();
    for u in unfollowed {
        let how = if u.followed {
            "followed half-blind"
        } else {
            "not followed"
        };
        out.push(Check::warn(
            "processes",
            format!("pid {} {how}: {} (`{}`)", u.pid, u.reason, u.command),
        ));
    }
    out
}

fn daemon_answer(runtime_dir: &Path) -> (Check, Option<serde_json::Value>) {
    let lock = crate::daemon::lock_path(runtime_dir);
    let socket = crate::daemon::control::socket_path(runtime_dir);
    if !crate::daemon::is_running(runtime_dir) {
        let check = Check::fail(
            "daemon",
            format!(
                "not running (no agent holds {}): nothing watches Telepresence sessions; start it with `telepolice-agent run`, or install the service",
                lock.display()
            ),
        );
        return (check, None);
    }
    let Some(doc) = crate::daemon::control::ask_status(runtime_dir) else {
        let check = Check::fail(
            "daemon",
            format!(
                "an agent holds {} but does not answer on {}; restart it",
                lock.display(),
                socket.display()
            ),
        );
        return (check, None);
    };
    let field = |k: &str| doc["daemon"][k].to_string().trim_matches('"').to_string();
    let version = field("version");
    let said = format!(
        "running (pid {}, version {version}, started {}), answering on {}",
        field("pid"),
        field("started"),
        socket.display()
    );
    let ours = env!("CARGO_PKG_VERSION");
    let check = if version != ours {
        Check::warn(
            "daemon",
            format!("{said}; but this binary is version {ours}: restart the daemon to run it"),
        )
    } else {
        Check::ok("daemon", said)
    };
    (check, Some(doc))
}

/// Checks the journal: it opens, every record loads, nothing sits in quarantine, and says
/// which sessions need a person.
pub(super) fn journal(state_dir: &Path) -> Vec<Check> {
    let name = "journal";
    let sessions = state_dir.join("sessions");
    if !sessions.exists() {
        return vec![Check::ok(
            name,
            format!(
                "none yet ({} is made when the agent first records a session)",
                sessions.display()
            ),
        )];
    }
    let journal = match Journal::open(state_dir) {
        Ok(j) => j,
        Err(e) => return vec![Check::fail(name, e.to_string())],
    };
    let (records, problems) = match journal.load_all() {
        Ok(loaded) => loaded,
        Err(e) => return vec![Check::fail(name, e.to_string())],
    };
    let live = records.iter().filter(|r| !r.state.is_final()).count();
    let mut out = vec![Check::ok(
        name,
        format!(
            "{} ({}, {live} live)",
            journal.dir().display(),
            plural(records.len(), "session record", "session records")
        ),
    )];
    for p in &problems {
        out.push(match p {
            // Already moved aside: the other records work; a person should look.
            LoadProblem::Quarantined { .. } => Check::warn(name, p.to_string()),
            // A record the agent cannot read is a session it cannot repair.
            LoadProblem::NewerSchema { .. } | LoadProblem::Unreadable { .. } => {
                Check::fail(name, p.to_string())
            }
        });
    }
    if let Some(w) = journal.quarantine_warning() {
        out.push(Check::warn(name, w));
    }
    let attention: Vec<&str> = records
        .iter()
        .filter(|r| r.state == State::NeedsAttention)
        .map(|r| r.key.as_str())
        .collect();
    if !attention.is_empty() {
        out.push(Check::warn(
            name,
            format!(
                "{} need attention ({}): see `telepolice-agent status`",
                plural(attention.len(), "session", "sessions"),
                attention.join(", ")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::Status;

    #[test]
    fn versions_of_both_generations_are_told_apart() {
        assert_eq!(parse_version("0.109\n"), Version::Legacy("0.109".into()));
        assert_eq!(
            parse_version("Telepresence 0.105 \n"),
            Version::Legacy("0.105".into())
        );
        assert_eq!(
            parse_version("Client: v2.17.0 (api v3)\nRoot Daemon: not running\n"),
            Version::Modern("v2.17.0".into())
        );
        assert_eq!(
            parse_version("OSS Client : v2.20.1\n"),
            Version::Modern("v2.20.1".into())
        );
        assert_eq!(parse_version("v2.5.3\n"), Version::Modern("v2.5.3".into()));
        assert_eq!(
            parse_version("\nusage: telepresence [-h]\n"),
            Version::Unknown("usage: telepresence [-h]".into())
        );
        assert_eq!(parse_version(""), Version::Unknown(String::new()));
    }

    #[test]
    fn a_missing_journal_is_fine_and_a_record_from_a_newer_agent_is_not() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let c = journal(tmp.path());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Ok);
        assert!(c[0].message.contains("none yet"), "{}", c[0].message);
        assert!(
            !tmp.path().join("sessions").exists(),
            "the check creates nothing"
        );

        std::fs::create_dir_all(tmp.path().join("sessions")).expect("dir");
        std::fs::write(
            tmp.path().join("sessions/k.json"),
            r#"{"schema": 999999, "key": "k"}"#,
        )
        .expect("record");
        let c = journal(tmp.path());
        assert_eq!(c[0].status, Status::Ok);
        assert!(
            c[0].message.contains("0 session records"),
            "{}",
            c[0].message
        );
        assert!(
            c.iter()
                .any(|c| c.status == Status::Fail && c.message.contains("newer")),
            "{c:?}"
        );
    }
}
