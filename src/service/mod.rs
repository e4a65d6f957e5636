//! Running the agent as a user service: the systemd unit and launchd plist it generates
//! (`files`), and installing and removing them (`install`). (Telling systemd how the running
//! daemon is doing is the daemon's own: `crate::daemon::notify`.)
//!
//! The commands `service-files`, `install` and `uninstall` are implemented here; the CLI
//! only maps their errors to exit codes.
//!
//! # Testing hooks
//! Debug builds only (release builds ignore them): `TELEPOLICE_SYSTEMCTL` and
//! `TELEPOLICE_LAUNCHCTL` name the programs run in place of `systemctl` and `launchctl`, and
//! `TELEPOLICE_SERVICE_MANAGER` (`systemd` or `launchd`)
//! picks the service manager regardless of the OS, so that the tests can install into a
//! temp dir with stand-ins that log their arguments.

pub mod files;
pub mod install;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use files::{LAUNCHD_LABEL, PLIST_NAME, UNIT_NAME};
pub use install::{Manager, Setup};

/// Why a service command failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A path cannot be written into a unit or plist.
    #[error("cannot name {path} in a service definition: {why}")]
    UnusablePath { path: PathBuf, why: &'static str },
    /// A dry run found that the real command would stop here.
    #[error("the install would fail here: {source}")]
    WouldFail {
        #[source]
        source: Box<ServiceError>,
    },
    /// No home directory to install into.
    #[error("HOME is not set: it says where the service definition goes")]
    NoHome,
    /// Neither Linux nor macOS, and no manager named.
    #[error("installing as a service is supported with systemd (Linux) and launchd (macOS) only")]
    UnsupportedPlatform,
    /// `TELEPOLICE_SERVICE_MANAGER` names something else.
    #[error("TELEPOLICE_SERVICE_MANAGER={value:?}: expected \"systemd\" or \"launchd\"")]
    UnknownManager { value: String },
    /// The path of the running binary is unknown.
    #[error("finding the path of this telepolice-agent binary: {source}")]
    CurrentExe {
        #[source]
        source: std::io::Error,
    },
    /// The binary the service would start is not there.
    #[error("the binary to install, {path}, is not a file: {why}")]
    BinaryMissing { path: PathBuf, why: String },
    /// `systemctl` or `launchctl` is not installed.
    #[error(
        "{program} not found: telepolice-agent installs itself as a {manager} service, which needs it{hint}"
    )]
    ManagerMissing {
        program: String,
        manager: &'static str,
        /// Debug builds: which variable names a stand-in.
        hint: String,
    },
    /// `systemctl` or `launchctl` could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// systemd runs no manager for this user.
    #[error(
        "no systemd user manager (is this a container, or an ssh session without lingering? `loginctl enable-linger $USER` keeps one running); {command} said: {said}"
    )]
    NoUserManager { command: String, said: String },
    /// launchd has no GUI domain for this user (no one logged in at the screen).
    #[error(
        "launchd has no gui/{uid} domain (LaunchAgents run for a user logged in at the Mac's screen, not over ssh alone); {command} said: {said}"
    )]
    NoGuiSession {
        uid: u32,
        command: String,
        said: String,
    },
    /// A step run with `systemctl` or `launchctl` failed.
    #[error("{command} failed ({status}): {said}; {hint}")]
    CommandFailed {
        command: String,
        status: String,
        said: String,
        hint: &'static str,
    },
    /// An agent started by hand holds the lock, so the service could not start.
    #[error(
        "another telepolice-agent runs outside the service manager (lock {lock} is held): stop it (Ctrl-C in its terminal) and install again"
    )]
    AnotherAgent { lock: PathBuf },
    /// A directory could not be made.
    #[error("creating the directory {path}: {source}")]
    MakeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be removed.
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Standard output could not be written.
    #[error("writing the output: {source}")]
    Output {
        #[from]
        source: std::io::Error,
    },
}

/// This module's result.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// What `service-files` renders for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Render {
    /// The committed copies (see [`files::canonical_unit`] and [`files::canonical_plist`]).
    Canonical,
    /// `binary` (default: this one) and the home directory in `HOME`.
    For { binary: Option<PathBuf> },
}

/// `telepolice-agent service-files`: prints the unit and the plist, or writes them into
/// `out_dir` as `systemd/telepolice-agent.service` and `launchd/dev.telepolice.agent.plist`
/// (the repository's layout, so `--canonical --out .` regenerates the committed copies).
///
/// # Errors
/// A binary that cannot be named in a service file, no `HOME` (unless canonical), or a file
/// that cannot be written.
pub fn service_files(render: &Render, out_dir: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    let (unit, plist) = match render {
        Render::Canonical => (files::canonical_unit()?, files::canonical_plist()?),
        Render::For { binary } => {
            let binary = binary_path(binary.as_deref(), false)?;
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from);
            let unit = files::unit(&files::UnitBinary::for_path(&binary, home.as_deref()))?;
            let plist = files::plist(&binary, home.as_deref().ok_or(ServiceError::NoHome)?)?;
            (unit, plist)
        }
    };
    let outputs = [
        (files::COMMITTED_UNIT, unit),
        (files::COMMITTED_PLIST, plist),
    ];
    match out_dir {
        Some(dir) => {
            for (name, content) in &outputs {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| ServiceError::MakeDir {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                install::write_file(&path, content)?;
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        None => {
            for (name, content) in &outputs {
                write!(out, "==> {name} <==\n{content}")?;
            }
        }
    }
    Ok(())
}

/// The binary a service should start: `given` made absolute, else this one; it must be a
/// file when `must_exist`.
pub(crate) fn binary_path(given: Option<&Path>, must_exist: bool) -> Result<PathBuf> {
    let path = match given {
        Some(p) => std::path::absolute(p).map_err(|e| ServiceError::BinaryMissing {
            path: p.to_path_buf(),
            why: e.to_string(),
        })?,
        None => std::env::current_exe().map_err(|source| ServiceError::CurrentExe { source })?,
    };
    if must_exist {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(ServiceError::BinaryMissing {
                    path,
                    why: "it is a directory".to_string(),
                });
            }
            Err(e) => {
                return Err(ServiceError::BinaryMissing {
                    path,
                    why: e.to_string(),
                });
            }
        }
    }
    Ok(path)
}

/// Whether `binary` lies in a cargo build directory (`target/debug`, `target/release`):
/// worth a word, since a later build or `cargo clean` changes or removes it.
fn in_build_dir(binary: &Path) -> bool {
    let parts: Vec<_> = binary.components().map(|c| c.as_os_str()).collect();
    parts
        .windows(2)
        .any(|w| w[0] == "target" && (w[1] == "debug" || w[1] == "release"))
}

/// `telepolice-agent install`: writes the unit (Linux) or plist (macOS) for `binary`
/// (default: this binary) and starts the service; prints each step, and in a dry run only
/// prints them. `runtime_dir` is where an agent started by hand would hold its lock.
///
/// # Errors
/// See [`install::observe`] (no service manager), [`install::plan_install`] (an agent
/// started by hand runs) and [`install::execute`] (a step failed).
pub fn install(
    dry_run: bool,
    binary: Option<&Path>,
    runtime_dir: &Path,
    out: &mut dyn Write,
) -> Result<()> {
    let setup = Setup::resolve(&crate::config::env_lookup, crate::platform::current_uid())?;
    let binary = binary_path(binary, true)?;
    let content = setup.render(&binary)?;
    if in_build_dir(&binary) {
        writeln!(
            out,
            "note: {} is in a cargo build directory; the service runs that file, so a rebuild or `cargo clean` changes it (`cargo install --locked --path .` puts a copy in ~/.cargo/bin)",
            binary.display()
        )?;
    }
    let held =
        crate::daemon::is_running(runtime_dir).then(|| crate::daemon::lock_path(runtime_dir));
    if dry_run {
        return dry_run_install(&setup, held, &content, out);
    }
    let now = install::observe(&setup, held)?;
    writeln!(out, "{}", install::describe(&setup, &now))?;
    let plan = install::plan_install(&setup, &now, &content)?;
    install::execute(&setup, &plan, false, out)?;
    let logs = match setup.manager {
        Manager::Systemd => "journalctl --user -u telepolice-agent".to_string(),
        Manager::Launchd => files::launchd_log_dir(&setup.home).display().to_string(),
    };
    writeln!(out, "see it with `telepolice-agent status`; logs: {logs}")?;
    Ok(())
}

/// `install --dry-run`: every step the install would take, even where the service manager
/// cannot be reached (then taken as having nothing installed), then the error the real
/// install would stop at, if any.
fn dry_run_install(
    setup: &Setup,
    held: Option<PathBuf>,
    content: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let (now, unreachable) = install::observe_for_dry_run(setup, held);
    match &unreachable {
        None => writeln!(out, "{}", install::describe(setup, &now))?,
        Some(_) => writeln!(
            out,
            "found: the service manager could not be asked (see below); taking it as having nothing installed"
        )?,
    }
    let (plan, refused) = match install::plan_install(setup, &now, content) {
        Ok(plan) => (plan, None),
        Err(e) => {
            // Plans as if that agent were gone, to show the steps all the same.
            let free = install::Observed {
                held_lock: None,
                ..now.clone()
            };
            (install::plan_install(setup, &free, content)?, Some(e))
        }
    };
    install::execute(setup, &plan, true, out)?;
    match unreachable.or(refused) {
        None => Ok(()),
        Some(e) => Err(ServiceError::WouldFail {
            source: Box::new(e),
        }),
    }
}

/// `telepolice-agent uninstall`: stops the service and removes its definition; prints each
/// step, and in a dry run only prints them.
///
/// # Errors
/// See [`install::observe`] and [`install::execute`].
pub fn uninstall(dry_run: bool, out: &mut dyn Write) -> Result<()> {
    let setup = Setup::resolve(&crate::config::env_lookup, crate::platform::current_uid())?;
    let now = install::observe(&setup, None)?;
    writeln!(out, "{}", install::describe(&setup, &now))?;
    let plan = install::plan_uninstall(&setup, &now);
    install::execute(&setup, &plan, dry_run, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_directories_are_recognised() {
        for (path, want) in [
            ("/src/telepolice/target/debug/telepolice-agent", true),
            ("/src/telepolice/target/release/telepolice-agent", true),
            ("/home/a/.cargo/bin/telepolice-agent", false),
            ("/home/a/target/telepolice-agent", false),
        ] {
            assert_eq!(in_build_dir(Path::new(path)), want, "{path}");
        }
    }
}
