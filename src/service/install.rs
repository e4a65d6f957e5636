//! `install` and `uninstall`: observe what is installed and running (read-only queries to
//! `systemctl --user` or `launchctl`), plan the steps that bring it where it should be
//! (pure, table-tested), then print each step and carry it out (or, in a dry run, only
//! print it).
//!
//! # Guarantees
//! - Idempotent: installing the same content again while the service runs changes nothing;
//!   a changed unit or plist is rewritten and the service restarted; uninstalling what is
//!   not installed does nothing.
//! - Nothing is written before the service manager has been reached, so an install that
//!   cannot work (no `systemctl`, no user manager) leaves no file behind.
//! - Files are replaced atomically (written beside, then renamed).
//!
//! # Caveats
//! The agent's journal, logs and configuration are left in place by `uninstall`, and so is
//! a systemd drop-in made with `systemctl --user edit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::files::{self, LAUNCHD_LABEL, UNIT_NAME, UnitBinary};
use super::{Result, ServiceError};

/// The service managers the agent installs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// A systemd user manager (`systemctl --user`).
    Systemd,
    /// launchd's per-user GUI domain (`launchctl ... gui/<uid>`).
    Launchd,
}

impl Manager {
    /// The manager of this OS, or (debug builds) the one `TELEPOLICE_SERVICE_MANAGER` names.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        match test_knob(env, "TELEPOLICE_SERVICE_MANAGER") {
            Some(v) if v == "systemd" => Ok(Self::Systemd),
            Some(v) if v == "launchd" => Ok(Self::Launchd),
            Some(value) => Err(ServiceError::UnknownManager { value }),
            None if cfg!(target_os = "macos") => Ok(Self::Launchd),
            None if cfg!(target_os = "linux") => Ok(Self::Systemd),
            None => Err(ServiceError::UnsupportedPlatform),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Systemd => "systemd user",
            Self::Launchd => "launchd",
        }
    }

    fn program_var(self) -> &'static str {
        match self {
            Self::Systemd => "TELEPOLICE_SYSTEMCTL",
            Self::Launchd => "TELEPOLICE_LAUNCHCTL",
        }
    }

    fn default_program(self) -> &'static str {
        match self {
            Self::Systemd => "systemctl",
            Self::Launchd => "launchctl",
        }
    }

    /// Where to look when a step failed.
    fn hint(self) -> &'static str {
        match self {
            Self::Systemd => {
                "see `systemctl --user status telepolice-agent` and `journalctl --user -u telepolice-agent`"
            }
            Self::Launchd => {
                "see `launchctl print gui/$(id -u)/dev.telepolice.agent` and ~/Library/Logs/telepolice-agent"
            }
        }
    }
}

/// A test's stand-in for the service manager, from `env`: debug builds only, so that an
/// installed agent always talks to the real `systemctl` or `launchctl`.
fn test_knob(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    if cfg!(debug_assertions) {
        env(name).filter(|v| !v.is_empty())
    } else {
        None
    }
}

/// Where the service definition goes and how to reach the service manager, resolved from
/// the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The service manager.
    pub manager: Manager,
    /// The program that talks to it (`systemctl`, `launchctl`, or a stand-in).
    pub program: String,
    /// The unit or plist file.
    pub file: PathBuf,
    /// Directories that must exist: the file's, and launchd's log dir.
    pub dirs: Vec<PathBuf>,
    /// The user's home directory.
    pub home: PathBuf,
    /// The user's uid (launchd's domain is `gui/<uid>`).
    pub uid: u32,
}

/// Where a user's own systemd units live: `$XDG_CONFIG_HOME/systemd/user`, else
/// `~/.config/systemd/user` (systemd ignores a relative `XDG_CONFIG_HOME`, as the XDG spec
/// says to).
pub fn user_unit_dir(home: &Path, xdg_config_home: Option<&str>) -> PathBuf {
    xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(".config"))
        .join("systemd/user")
}

impl Setup {
    /// Resolves from `env` (a lookup, so the tests need not touch the process environment).
    ///
    /// # Errors
    /// No `HOME`, or a manager that does not exist (see [`Manager::resolve`]).
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>, uid: u32) -> Result<Self> {
        let manager = Manager::resolve(env)?;
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from).ok_or(ServiceError::NoHome)?;
        let program = test_knob(env, manager.program_var())
            .unwrap_or_else(|| manager.default_program().to_string());
        let (file, dirs) = match manager {
            Manager::Systemd => {
                let dir = user_unit_dir(&home, var("XDG_CONFIG_HOME").as_deref());
                (dir.join(UNIT_NAME), vec![dir])
            }
            Manager::Launchd => {
                let dir = home.join("Library/LaunchAgents");
                (
                    dir.join(files::PLIST_NAME),
                    vec![dir, files::launchd_log_dir(&home)],
                )
            }
        };
        Ok(Self {
            manager,
            program,
            file,
            dirs,
            home,
            uid,
        })
    }

    /// The unit or plist that starts `binary`.
    pub fn render(&self, binary: &Path) -> Result<String> {
        match self.manager {
            Manager::Systemd => files::unit(&UnitBinary::for_path(binary, Some(&self.home))),
            Manager::Launchd => files::plist(binary, &self.home),
        }
    }

    fn domain(&self) -> String {
        format!("gui/{}", self.uid)
    }

    fn service_target(&self) -> String {
        format!("gui/{}/{LAUNCHD_LABEL}", self.uid)
    }

    fn command_line(&self, args: &[String]) -> String {
        let mut line = self.program.clone();
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }
}

/// What is installed and running now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The unit or plist file's content; `None` when there is none.
    pub file: Option<String>,
    /// The directories of [`Setup::dirs`] that do not exist.
    pub missing_dirs: Vec<PathBuf>,
    /// systemd: enabled (started at login). launchd: the same as `running`.
    pub enabled: bool,
    /// systemd: active. launchd: loaded into the GUI domain.
    pub running: bool,
    /// The per-user lock file, when some agent of this user holds it.
    pub held_lock: Option<PathBuf>,
}

/// One step of an install or uninstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make a directory (and its parents).
    MakeDir(PathBuf),
    /// Write a file (atomically).
    Write { path: PathBuf, content: String },
    /// Remove a file.
    Remove(PathBuf),
    /// Run the service manager's program with these arguments.
    Run(Vec<String>),
}

/// The steps, and what to say once they are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// The last line printed.
    pub outcome: String,
}

fn run(args: &[&str]) -> Step {
    Step::Run(args.iter().map(ToString::to_string).collect())
}

/// The steps that make `content` the installed and running service (pure).
///
/// # Errors
/// [`ServiceError::AnotherAgent`] when an agent holds the lock while the service does not
/// run: the service could not start (nothing is planned then).
pub fn plan_install(setup: &Setup, now: &Observed, content: &str) -> Result<Plan> {
    let file = setup.file.display();
    let same = now.file.as_deref() == Some(content);
    if same && now.enabled && now.running {
        return Ok(Plan {
            steps: Vec::new(),
            outcome: format!("already installed and running: {file} is up to date"),
        });
    }
    if let Some(lock) = &now.held_lock
        && !now.running
    {
        return Err(ServiceError::AnotherAgent { lock: lock.clone() });
    }
    let mut steps: Vec<Step> = now
        .missing_dirs
        .iter()
        .cloned()
        .map(Step::MakeDir)
        .collect();
    let write = Step::Write {
        path: setup.file.clone(),
        content: content.to_string(),
    };
    let outcome;
    match setup.manager {
        Manager::Systemd => {
            if same {
                steps.push(run(&["--user", "enable", "--now", UNIT_NAME]));
                outcome = format!("already installed ({file}); enabled and started it");
            } else {
                steps.push(write);
                steps.push(run(&["--user", "daemon-reload"]));
                if now.file.is_none() {
                    steps.push(run(&["--user", "enable", "--now", UNIT_NAME]));
                    outcome = format!("installed {file} and started it");
                } else {
                    steps.push(run(&["--user", "enable", UNIT_NAME]));
                    steps.push(run(&["--user", "restart", UNIT_NAME]));
                    outcome = format!("updated {file} and restarted the agent");
                }
            }
        }
        Manager::Launchd => {
            let domain = setup.domain();
            let target = setup.service_target();
            let plist = setup.file.display().to_string();
            if !same {
                // launchd keeps the definition it loaded: the old one goes first.
                if now.running {
                    steps.push(run(&["bootout", &target]));
                }
                steps.push(write);
            }
            // Clears a `launchctl disable` left from before, which would refuse the load.
            steps.push(run(&["enable", &target]));
            steps.push(run(&["bootstrap", &domain, &plist]));
            outcome = match (&now.file, same) {
                (_, true) => format!("already installed ({file}); loaded and started it"),
                (None, _) => format!("installed {file} and started it"),
                (Some(_), false) => format!("updated {file} and restarted the agent"),
            };
        }
    }
    Ok(Plan { steps, outcome })
}

/// The steps that stop the service and remove its definition (pure).
pub fn plan_uninstall(setup: &Setup, now: &Observed) -> Plan {
    let file = setup.file.display();
    let mut steps = Vec::new();
    match setup.manager {
        Manager::Systemd => {
            if now.enabled || now.running {
                steps.push(run(&["--user", "disable", "--now", UNIT_NAME]));
            }
            if now.file.is_some() {
                steps.push(Step::Remove(setup.file.clone()));
                steps.push(run(&["--user", "daemon-reload"]));
            }
        }
        Manager::Launchd => {
            if now.running {
                steps.push(run(&["bootout", &setup.service_target()]));
            }
            if now.file.is_some() {
                steps.push(Step::Remove(setup.file.clone()));
            }
        }
    }
    let outcome = match (steps.is_empty(), now.file.is_some()) {
        (true, _) => format!("not installed ({file} does not exist); nothing to do"),
        (false, true) => format!(
            "uninstalled: the agent is stopped and {file} removed (its journal, logs and config are kept)"
        ),
        (false, false) => format!(
            "stopped and disabled the agent; {file} does not exist, so its unit comes from elsewhere (a package?)"
        ),
    };
    Plan { steps, outcome }
}

/// The output of one run of the manager's program.
struct Ran {
    ok: bool,
    status: String,
    stderr: String,
}

fn run_program(setup: &Setup, args: &[String]) -> Result<Ran> {
    let out = Command::new(&setup.program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ServiceError::ManagerMissing {
                    program: setup.program.clone(),
                    manager: setup.manager.name(),
                    hint: if cfg!(debug_assertions) {
                        format!(" ({} names another program)", setup.manager.program_var())
                    } else {
                        String::new()
                    },
                }
            } else {
                ServiceError::Spawn {
                    command: setup.command_line(args),
                    source,
                }
            }
        })?;
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Ok(Ran {
        ok: out.status.success(),
        status: out.status.to_string(),
        stderr,
    })
}

fn query(setup: &Setup, args: &[&str]) -> Result<Ran> {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    run_program(setup, &args)
}

/// Looks at what is installed and running; read-only. `held_lock` is the per-user lock
/// file when some agent holds it.
///
/// # Errors
/// The manager's program missing, or no manager to talk to (no systemd user manager, no
/// launchd GUI domain): an install could not work, so nothing is planned.
pub fn observe(setup: &Setup, held_lock: Option<PathBuf>) -> Result<Observed> {
    let mut now = observe_files(setup, held_lock)?;
    (now.enabled, now.running) = observe_manager(setup)?;
    Ok(now)
}

/// As [`observe`], for a dry run: what cannot be observed is taken as absent (no file, not
/// enabled, not running), and the error that would stop the real command comes back beside
/// it, so that every step can still be printed before saying why it would fail.
pub fn observe_for_dry_run(
    setup: &Setup,
    held_lock: Option<PathBuf>,
) -> (Observed, Option<ServiceError>) {
    let mut now = match observe_files(setup, held_lock.clone()) {
        Ok(now) => now,
        Err(e) => {
            let now = Observed {
                missing_dirs: setup.dirs.clone(),
                held_lock,
                ..Observed::default()
            };
            return (now, Some(e));
        }
    };
    match observe_manager(setup) {
        Ok(state) => {
            (now.enabled, now.running) = state;
            (now, None)
        }
        Err(e) => (now, Some(e)),
    }
}

/// The definition file and the directories; `enabled` and `running` left false.
fn observe_files(setup: &Setup, held_lock: Option<PathBuf>) -> Result<Observed> {
    let file = match std::fs::read(&setup.file) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ServiceError::Read {
                path: setup.file.clone(),
                source,
            });
        }
    };
    let missing_dirs = setup.dirs.iter().filter(|d| !d.is_dir()).cloned().collect();
    Ok(Observed {
        file,
        missing_dirs,
        enabled: false,
        running: false,
        held_lock,
    })
}

/// (enabled, running), from the service manager.
fn observe_manager(setup: &Setup) -> Result<(bool, bool)> {
    Ok(match setup.manager {
        Manager::Systemd => {
            let probe = ["--user", "show", "--property=Version"];
            let ran = query(setup, &probe)?;
            if !ran.ok {
                return Err(ServiceError::NoUserManager {
                    command: setup.command_line(&probe.map(String::from)),
                    said: ran.stderr,
                });
            }
            (
                query(setup, &["--user", "is-enabled", UNIT_NAME])?.ok,
                query(setup, &["--user", "is-active", UNIT_NAME])?.ok,
            )
        }
        Manager::Launchd => {
            let domain = setup.domain();
            let ran = query(setup, &["print", &domain])?;
            if !ran.ok {
                return Err(ServiceError::NoGuiSession {
                    uid: setup.uid,
                    command: setup.command_line(&["print".to_string(), domain]),
                    said: ran.stderr,
                });
            }
            let loaded = query(setup, &["print", &setup.service_target()])?.ok;
            (loaded, loaded)
        }
    })
}

/// One line saying what was found.
pub fn describe(setup: &Setup, now: &Observed) -> String {
    let file = match &now.file {
        None => "not installed".to_string(),
        Some(_) => format!("{} exists", setup.file.display()),
    };
    let state = match (setup.manager, now.enabled, now.running) {
        (Manager::Systemd, true, true) => "enabled and running",
        (Manager::Systemd, true, false) => "enabled, not running",
        (Manager::Systemd, false, true) => "running, not enabled",
        (Manager::Systemd, false, false) => "not enabled, not running",
        (Manager::Launchd, _, true) => "loaded",
        (Manager::Launchd, _, false) => "not loaded",
    };
    format!("found: {file}; {state}")
}

/// Writes `content` to `path` atomically: a file beside it, then a rename.
pub(crate) fn write_file(path: &Path, content: &str) -> Result<()> {
    let err = |source| ServiceError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(content.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    #[cfg(unix)]
    {
        // Readable by all, writable by the user: launchd refuses a plist others can write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Prints each step of `plan` and carries it out (only prints in a dry run), then the
/// outcome.
///
/// # Errors
/// The first step that fails; the steps before it stay done (running the command again
/// picks up from there).
pub fn execute(setup: &Setup, plan: &Plan, dry_run: bool, out: &mut dyn Write) -> Result<()> {
    for step in &plan.steps {
        let what = match step {
            Step::MakeDir(p) => format!("create the directory {}", p.display()),
            Step::Write { path, .. } => format!("write {}", path.display()),
            Step::Remove(p) => format!("remove {}", p.display()),
            Step::Run(args) => format!("run `{}`", setup.command_line(args)),
        };
        if dry_run {
            writeln!(out, "would {what}")?;
            continue;
        }
        writeln!(out, "{}", capitalised_doing(&what))?;
        match step {
            Step::MakeDir(p) => {
                std::fs::create_dir_all(p).map_err(|source| ServiceError::MakeDir {
                    path: p.clone(),
                    source,
                })?;
            }
            Step::Write { path, content } => write_file(path, content)?,
            Step::Remove(p) => match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ServiceError::Remove {
                        path: p.clone(),
                        source,
                    });
                }
            },
            Step::Run(args) => {
                let ran = run_program(setup, args)?;
                if !ran.ok {
                    return Err(ServiceError::CommandFailed {
                        command: setup.command_line(args),
                        status: ran.status,
                        said: ran.stderr,
                        hint: setup.manager.hint(),
                    });
                }
            }
        }
    }
    if dry_run {
        if plan.steps.is_empty() {
            writeln!(out, "{}", plan.outcome)?;
        }
        writeln!(out, "dry run: nothing was changed")?;
    } else {
        writeln!(out, "{}", plan.outcome)?;
    }
    Ok(())
}

/// "write x" -> "writing x", for the lines printed as steps are taken.
fn capitalised_doing(what: &str) -> String {
    let (verb, rest) = what.split_once(' ').unwrap_or((what, ""));
    let doing = match verb {
        "create" => "creating",
        "write" => "writing",
        "remove" => "removing",
        "run" => "running",
        other => other,
    };
    format!("{doing} {rest}")
}

#[cfg(test)]
mod tests;
