//! The service check: the agent's service definition is installed where `telepolice-agent
//! install` (or a package) puts it, and on systemd enabled for the user.

use std::path::{Path, PathBuf};

use super::{Check, Environment};

/// The systemd user unit's file name (what `install` writes).
pub const SYSTEMD_UNIT: &str = crate::service::files::UNIT_NAME;

/// Whether a file name is the agent's service definition on this OS: the systemd user unit,
/// or on macOS the LaunchAgent plist `install` (or `brew services`) writes.
fn is_service_file(name: &str) -> bool {
    if cfg!(target_os = "macos") {
        // `install`'s, or the one `brew services` writes for the Homebrew formula.
        name == crate::service::files::PLIST_NAME || name == "homebrew.mxcl.telepolice-agent.plist"
    } else {
        name == SYSTEMD_UNIT
    }
}

/// Where `telepolice-agent install` (or a package) puts the service definition, first the
/// user's own: on Linux the systemd user unit directories (`$XDG_CONFIG_HOME/systemd/user`,
/// else `~/.config/systemd/user`, then the system-wide ones packages use); on macOS
/// `~/Library/LaunchAgents`.
pub fn service_dirs(home: &Path, xdg_config_home: Option<&str>) -> Vec<PathBuf> {
    if cfg!(target_os = "macos") {
        return vec![home.join("Library/LaunchAgents")];
    }
    vec![
        crate::service::install::user_unit_dir(home, xdg_config_home),
        PathBuf::from("/etc/systemd/user"),
        PathBuf::from("/usr/local/lib/systemd/user"),
        PathBuf::from("/usr/lib/systemd/user"),
    ]
}

/// The service definitions found in `dirs` (in order), and for systemd whether the user
/// enabled the unit (a link in one of the user directory's `*.wants` directories).
fn find_service(dirs: &[PathBuf]) -> (Vec<PathBuf>, bool) {
    let mut found = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| is_service_file(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        found.extend(names);
    }
    let enabled = dirs.first().is_some_and(|user| {
        std::fs::read_dir(user).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.file_name().to_string_lossy().ends_with(".wants")
                    && e.path().join(SYSTEMD_UNIT).exists()
            })
        })
    });
    (found, enabled)
}

/// Checks that the service definition is installed (and, for systemd, enabled).
pub(super) fn service(env: &Environment) -> Check {
    let Some(home) = env.var("HOME") else {
        return Check::warn("service", "not checked: HOME is not set");
    };
    let dirs = service_dirs(Path::new(home), env.var("XDG_CONFIG_HOME"));
    check_service(&dirs)
}

fn check_service(dirs: &[PathBuf]) -> Check {
    let (found, enabled) = find_service(dirs);
    let Some(first) = found.first() else {
        let wanted = if cfg!(target_os = "macos") {
            crate::service::files::PLIST_NAME.to_string()
        } else {
            SYSTEMD_UNIT.to_string()
        };
        let places = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Check::warn(
            "service",
            format!(
                "not installed (no {wanted} in {places}): the agent does not start at login; run `telepolice-agent install`"
            ),
        );
    };
    if cfg!(target_os = "macos") {
        Check::ok("service", format!("{} (launchd agent)", first.display()))
    } else if enabled {
        Check::ok(
            "service",
            format!("{} (systemd user unit, enabled)", first.display()),
        )
    } else {
        Check::warn(
            "service",
            format!(
                "{} is installed but not enabled: run `systemctl --user enable --now telepolice-agent`",
                first.display()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::Status;

    #[test]
    fn service_dirs_follow_the_os_conventions() {
        let dirs = service_dirs(Path::new("/home/u"), None);
        if cfg!(target_os = "macos") {
            assert_eq!(dirs, [PathBuf::from("/home/u/Library/LaunchAgents")]);
        } else {
            assert_eq!(dirs[0], PathBuf::from("/home/u/.config/systemd/user"));
            assert!(dirs.contains(&PathBuf::from("/usr/lib/systemd/user")));
            let xdg = service_dirs(Path::new("/home/u"), Some("/cfg"));
            assert_eq!(xdg[0], PathBuf::from("/cfg/systemd/user"));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_unit_is_found_and_its_enabling_noticed() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let user = tmp.path().join("user");
        let system = tmp.path().join("system");
        std::fs::create_dir_all(&user).expect("user dir");
        std::fs::create_dir_all(&system).expect("system dir");
        let dirs = [user.clone(), system.clone()];
        let c = check_service(&dirs);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("not installed"), "{}", c.message);

        std::fs::write(system.join(SYSTEMD_UNIT), "[Unit]\n").expect("unit");
        let c = check_service(&dirs);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("not enabled"), "{}", c.message);

        std::fs::create_dir_all(user.join("default.target.wants")).expect("wants");
        std::os::unix::fs::symlink(
            system.join(SYSTEMD_UNIT),
            user.join("default.target.wants").join(SYSTEMD_UNIT),
        )
        .expect("link");
        let c = check_service(&dirs);
        assert_eq!(c.status, Status::Ok, "{}", c.message);
        assert!(c.message.contains("enabled"), "{}", c.message);
    }
}
