//! The service definitions, generated here and nowhere else (pure functions): the systemd
//! user unit and the launchd LaunchAgent plist. `service-files` prints them, `install`
//! writes them, and the copies committed under `systemd/` and `launchd/` are what
//! [`canonical_unit`] and [`canonical_plist`] return (a test fails when they drift).

use std::path::{Path, PathBuf};

use super::{Result, ServiceError};

/// The systemd unit's file name.
pub const UNIT_NAME: &str = "telepolice-agent.service";

/// The launchd label. The project has no domain of its own; `dev.telepolice` is a
/// reverse-DNS name in the style launchd expects, unlikely to collide with another job.
pub const LAUNCHD_LABEL: &str = "dev.telepolice.agent";

/// The plist's file name: the label, as launchd's conventions want.
pub const PLIST_NAME: &str = "dev.telepolice.agent.plist";

/// Where the committed unit expects the binary: `cargo install`'s place, relative to the
/// home directory (systemd's `%h`).
pub const CANONICAL_UNIT_BINARY: &str = ".cargo/bin/telepolice-agent";

/// Where the committed plist expects the binary: the usual place for programs installed by
/// hand or by Homebrew on an Intel Mac.
pub const CANONICAL_PLIST_BINARY: &str = "/usr/local/bin/telepolice-agent";

/// The home directory the committed plist is rendered for (launchd expands neither `~` nor
/// `$HOME`, so its log paths must be absolute). It is a reference copy: `install` renders
/// the plist for the real home.
pub const CANONICAL_PLIST_HOME: &str = "/Users/example";

/// Where the committed copies live in the repository, relative to its root.
pub const COMMITTED_UNIT: &str = "systemd/telepolice-agent.service";
/// See [`COMMITTED_UNIT`].
pub const COMMITTED_PLIST: &str = "launchd/dev.telepolice.agent.plist";

/// The binary a unit starts: a path under the user's home (written with `%h`, so one unit
/// serves any user) or anywhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitBinary {
    /// Relative to the home directory.
    InHome(PathBuf),
    /// An absolute path outside it.
    Absolute(PathBuf),
}

impl UnitBinary {
    /// `binary` as the unit should name it: relative to `home` when it lies inside.
    pub fn for_path(binary: &Path, home: Option<&Path>) -> Self {
        match home.and_then(|h| binary.strip_prefix(h).ok()) {
            Some(rest) if !rest.as_os_str().is_empty() && home != Some(Path::new("/")) => {
                Self::InHome(rest.to_path_buf())
            }
            _ => Self::Absolute(binary.to_path_buf()),
        }
    }
}

/// A path as text fit for a service file: valid UTF-8, no control characters (a newline
/// would end the line in a unit and is not allowed in a plist string), absolute unless it
/// is relative to the home directory.
fn path_text(path: &Path, must_be_absolute: bool) -> Result<&str> {
    let unusable = |why: &'static str| ServiceError::UnusablePath {
        path: path.to_path_buf(),
        why,
    };
    let text = path
        .to_str()
        .ok_or_else(|| unusable("it is not valid UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(unusable("it contains a control character"));
    }
    if must_be_absolute && !path.is_absolute() {
        return Err(unusable("it is not an absolute path"));
    }
    if text.is_empty() {
        return Err(unusable("it is empty"));
    }
    Ok(text)
}

/// The program word of a unit's `ExecStart=` line: `%` escaped (it introduces a
/// specifier), in double quotes when it holds anything but plain path characters. (`$`
/// needs no escape there: systemd expands variables in the arguments only.)
///
/// # Errors
/// systemd refuses a program path with a quote or a backslash in it, escaped or not
/// ("Executable name contains special characters"), so such a path is refused here.
fn exec_word(prefix: &str, path: &Path, text: &str) -> Result<String> {
    if text.contains(['"', '\'', '\\']) {
        return Err(ServiceError::UnusablePath {
            path: path.to_path_buf(),
            why: "systemd does not run a program whose path holds a quote or a backslash",
        });
    }
    let escaped = text.replace('%', "%%");
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+@:,=".contains(c));
    Ok(if plain {
        format!("{prefix}{escaped}")
    } else {
        format!("\"{prefix}{escaped}\"")
    })
}

/// The systemd user unit that starts `binary run`.
///
/// # Errors
/// [`ServiceError::UnusablePath`] when the path cannot be written into a unit.
pub fn unit(binary: &UnitBinary) -> Result<String> {
    let exec = match binary {
        UnitBinary::InHome(rest) => {
            let text = path_text(rest, false)?;
            if rest.is_absolute() {
                return Err(ServiceError::UnusablePath {
                    path: rest.clone(),
                    why: "a path under the home directory must be relative to it",
                });
            }
            exec_word("%h/", rest, text)?
        }
        UnitBinary::Absolute(path) => exec_word("", path, path_text(path, true)?)?,
    };
    Ok(UNIT_TEMPLATE.replace("@EXEC_START@", &exec))
}

/// XML text: the five characters with a meaning escaped.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The launchd LaunchAgent plist that starts `binary run` for the user whose home is
/// `home` (its log files go to `<home>/Library/Logs/telepolice-agent`).
///
/// # Errors
/// [`ServiceError::UnusablePath`] when a path cannot be written into a plist.
pub fn plist(binary: &Path, home: &Path) -> Result<String> {
    let binary = xml(path_text(binary, true)?);
    let home = xml(path_text(home, true)?.trim_end_matches('/'));
    Ok(PLIST_TEMPLATE
        .replace("@BINARY@", &binary)
        .replace("@HOME@", &home))
}

/// The unit committed as `systemd/telepolice-agent.service`.
pub fn canonical_unit() -> Result<String> {
    unit(&UnitBinary::InHome(PathBuf::from(CANONICAL_UNIT_BINARY)))
}

/// The plist committed as `launchd/dev.telepolice.agent.plist`.
pub fn canonical_plist() -> Result<String> {
    plist(
        Path::new(CANONICAL_PLIST_BINARY),
        Path::new(CANONICAL_PLIST_HOME),
    )
}

/// The log directory a plist names for `home`.
pub fn launchd_log_dir(home: &Path) -> PathBuf {
    home.join("Library/Logs/telepolice-agent")
}

const UNIT_TEMPLATE: &str = r#"# telepolice-agent as a systemd user service.
#
# Generated by `telepolice-agent service-files`; do not edit. `telepolice-agent install`
# writes it to ~/.config/systemd/user/ with the path of the binary that ran it, and writes
# it again (restarting the agent) whenever the generated unit changes. Local changes belong
# in a drop-in, `systemctl --user edit telepolice-agent`, which survives a reinstall.

[Unit]
Description=telepolice-agent: puts the cluster back after a Telepresence session dies
# A crash loop ends after 5 starts within a minute instead of spinning on;
# `systemctl --user reset-failed telepolice-agent` lets it start again.
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
# The agent says READY=1 once it watches the Telepresence programs (from then on every
# session that starts is seen) and STOPPING=1 when a graceful stop begins.
Type=notify
NotifyAccess=main
ExecStart=@EXEC_START@ run
# SIGHUP reloads config.toml; a file that does not load leaves the running config in place
# (the agent logs why).
ExecReload=/bin/kill -HUP $MAINPID
# The agent's main loop pings the watchdog at half this interval; a loop stuck for longer
# is killed and restarted. Time asleep does not count: the watchdog runs on the monotonic
# clock, which stops while the machine sleeps.
WatchdogSec=30
Restart=on-failure
RestartSec=2
# Exit 2 is a configuration the agent cannot use, exit 3 another agent of this user already
# running: a restart would fail the same way, so the unit stays failed and
# `systemctl --user status telepolice-agent` shows the reason.
RestartPreventExitStatus=2 3
# A graceful stop takes at most about 5 s; SIGKILL after 10. The journal is written ahead
# of every action, so even a SIGKILL loses nothing.
TimeoutStopSec=10
# journald keeps the agent's stderr; colour codes would only clutter it.
Environment=NO_COLOR=1
# The journal, logs and socket are private to the user.
UMask=0077

# Sandboxing. What the agent must still be able to do: read /proc of the user's processes
# (command lines, environments, working directories) and signal them; read the kubeconfig
# files a session names, anywhere in the home directory; run the exec credential plugins
# those name (gcloud, aws, kubelogin, ... from any path), which write caches and refreshed
# tokens in the home directory (~/.config/gcloud, ~/.aws, ~/.kube/cache); run `docker stop`;
# remove Telepresence's tel-* dirs from /tmp; keep its journal and logs in ~/.local/state
# and its lock and socket in $XDG_RUNTIME_DIR. Everything below also applies to the plugins
# it runs, so nothing here may break one.
#
# Only settings that a user manager applies with seccomp and process attributes are set: none
# that needs a namespace. What was measured under a real systemd user manager (systemd 252,
# Debian 12's own, run as PID 1 in namespaces; see issue 10), and in the user namespace that
# 254 and later make (measured with PrivateUsers=yes, which makes the same one):
# - ProtectKernelModules= and ProtectKernelLogs= drop capabilities from the bounding set,
#   which a user manager cannot do without a user namespace: on 252 the start failed with
#   status=218/CAPABILITIES and the unit stayed failed. ProtectHostname= warned on every
#   start.
# - The file system settings (ProtectSystem=, ReadWritePaths=, ProtectKernelTunables=,
#   ProtectControlGroups=) were silently not applied on 252 (/ and /usr stayed writable);
#   from 254 a user manager applies them inside a user namespace of the service's own, and
#   in it reading /proc/<pid>/environ and /proc/<pid>/cwd of the user's other processes
#   fails with EACCES: the agent would record every session without its KUBECONFIG, working
#   directory or log. (The same for PrivateUsers=, ProtectHome=, PrivateTmp=, which would
#   also hide the home directory or /tmp.)
# So the agent runs with the user's own view of the file system, as the user's shells do.
# This unit as it is starts, keeps its watchdog quiet and repairs a killed session under
# the user managers of systemd 252 (Debian 12), 254 (bookworm-backports) and 257 (Debian
# 13): the real_init tests run all three.

# Nothing the agent runs can gain privileges (setuid programs run as the user); this is
# also what lets the filters below apply without privileges.
NoNewPrivileges=yes
# No new namespaces, realtime scheduling, setuid or setgid files, or execution domain
# changes: neither the agent nor a credential plugin uses them.
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Native system calls only (a 32-bit credential plugin would not run; none is in common use).
SystemCallArchitectures=native
# System calls that change the clock, load modules, mount, reboot, swap, do raw I/O or
# debug other processes (ptrace), and obsolete ones: an unprivileged user cannot make most
# of them anyway and nothing here needs them. They fail with EPERM rather than killing the
# caller, so a plugin that probes one fails softly.
SystemCallFilter=~@clock @cpu-emulation @debug @module @mount @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM
# Sockets: Unix (the control socket, D-Bus for logind, docker), IP (the API servers) and
# netlink (network change notices).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Not set, on purpose:
# - MemoryDenyWriteExecute=: inherited by credential plugins, and JIT runtimes (Node.js,
#   Java) cannot run under it.
# - PrivateDevices=, ProtectClock=: both come with a device access list, which a user
#   manager cannot always enforce; the user has no access to disks or the clock anyway.
# - ProtectProc=, ProcSubset=: they need a /proc of the service's own, which a user
#   service cannot mount; and the agent reads other processes' entries in /proc.
# - PrivateNetwork=, IPAddressDeny=: API servers can be anywhere.

[Install]
WantedBy=default.target
"#;

const PLIST_TEMPLATE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!--
  telepolice-agent as a launchd LaunchAgent (a per-user job in the gui/<uid> domain).

  Generated by `telepolice-agent service-files`; do not edit. `telepolice-agent install`
  writes it to ~/Library/LaunchAgents/ with the path of the binary that ran it and the
  user's home directory, and loads it with `launchctl bootstrap`.
-->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>dev.telepolice.agent</string>
	<key>ProgramArguments</key>
	<array>
		<string>@BINARY@</string>
		<string>run</string>
	</array>
	<!-- Started at login (and when installed). -->
	<key>RunAtLoad</key>
	<true/>
	<!-- Started again when it exits with a failure, not after a clean stop. launchd
	     waits ThrottleInterval seconds between starts, so a configuration the agent cannot
	     use (exit 2) is retried every 10 s until it is fixed; the reason is in the logs. -->
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>10</integer>
	<!-- A graceful stop takes at most about 5 s; SIGKILL after 10. -->
	<key>ExitTimeOut</key>
	<integer>10</integer>
	<!-- Work the user did not start in the foreground: launchd may throttle its CPU and
	     I/O when the machine is busy. -->
	<key>ProcessType</key>
	<string>Background</string>
	<!-- launchd starts jobs with a minimal PATH; the agent looks for `telepresence` and
	     runs credential plugins (gcloud, aws, ...) through it, so it gets the usual places
	     (Homebrew on Intel and Apple Silicon, ~/.local/bin, ~/.cargo/bin). -->
	<key>EnvironmentVariables</key>
	<dict>
		<key>PATH</key>
		<string>/usr/local/bin:/opt/homebrew/bin:@HOME@/.local/bin:@HOME@/.cargo/bin:/usr/bin:/bin:/usr/sbin:/sbin</string>
		<key>NO_COLOR</key>
		<string>1</string>
	</dict>
	<!-- The agent writes its own daily log files into this directory; these two catch what
	     it prints to stdout and stderr (the same lines, and anything printed before
	     logging starts). launchd does not create the directory: `install` does. -->
	<key>StandardOutPath</key>
	<string>@HOME@/Library/Logs/telepolice-agent/launchd.stdout.log</string>
	<key>StandardErrorPath</key>
	<string>@HOME@/Library/Logs/telepolice-agent/launchd.stderr.log</string>
</dict>
</plist>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_line(unit: &str) -> &str {
        unit.lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("the unit has an ExecStart line")
    }

    #[test]
    fn the_unit_starts_the_binary_with_run() {
        let cases: &[(UnitBinary, &str)] = &[
            (
                UnitBinary::InHome(".cargo/bin/telepolice-agent".into()),
                "ExecStart=%h/.cargo/bin/telepolice-agent run",
            ),
            (
                UnitBinary::Absolute("/usr/bin/telepolice-agent".into()),
                "ExecStart=/usr/bin/telepolice-agent run",
            ),
            (
                UnitBinary::Absolute("/opt/my tools/telepolice-agent".into()),
                r#"ExecStart="/opt/my tools/telepolice-agent" run"#,
            ),
            (
                UnitBinary::InHome("my bin/telepolice-agent".into()),
                r#"ExecStart="%h/my bin/telepolice-agent" run"#,
            ),
            // A specifier and a variable are literal.
            (
                UnitBinary::Absolute("/opt/100%/$HOME/a b/telepolice-agent".into()),
                r#"ExecStart="/opt/100%%/$HOME/a b/telepolice-agent" run"#,
            ),
        ];
        for (binary, want) in cases {
            let unit = unit(binary).expect("renders");
            assert_eq!(exec_line(&unit), *want, "{binary:?}");
        }
    }

    #[test]
    fn unusable_paths_are_refused_with_the_reason() {
        let cases: &[(UnitBinary, &str)] = &[
            (
                UnitBinary::Absolute("bin/agent".into()),
                "not an absolute path",
            ),
            (
                UnitBinary::Absolute("/opt/a\nb/agent".into()),
                "control character",
            ),
            (UnitBinary::InHome("/abs/agent".into()), "must be relative"),
            (UnitBinary::InHome("".into()), "empty"),
            (UnitBinary::Absolute("/opt/a\"b/agent".into()), "a quote"),
            (UnitBinary::Absolute("/opt/it's/agent".into()), "a quote"),
            (UnitBinary::InHome("a\\b/agent".into()), "a backslash"),
        ];
        for (binary, why) in cases {
            let err = unit(binary).expect_err("refused").to_string();
            assert!(err.contains(why), "{binary:?}: {err}");
        }
        let err = plist(Path::new("agent"), Path::new("/Users/a"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("not an absolute path"), "{err}");
    }

    #[test]
    fn a_binary_in_the_home_directory_is_written_with_percent_h() {
        let home = Path::new("/home/ada");
        let cases: &[(&str, Option<&Path>, UnitBinary)] = &[
            (
                "/home/ada/.cargo/bin/telepolice-agent",
                Some(home),
                UnitBinary::InHome(".cargo/bin/telepolice-agent".into()),
            ),
            (
                "/usr/bin/telepolice-agent",
                Some(home),
                UnitBinary::Absolute("/usr/bin/telepolice-agent".into()),
            ),
            // Only whole components count: /home/adam is not in /home/ada.
            (
                "/home/adam/bin/telepolice-agent",
                Some(home),
                UnitBinary::Absolute("/home/adam/bin/telepolice-agent".into()),
            ),
            (
                "/home/ada/telepolice-agent",
                None,
                UnitBinary::Absolute("/home/ada/telepolice-agent".into()),
            ),
            // A home of "/" would make every path "%h/...": no.
            (
                "/usr/bin/telepolice-agent",
                Some(Path::new("/")),
                UnitBinary::Absolute("/usr/bin/telepolice-agent".into()),
            ),
        ];
        for (path, home, want) in cases {
            assert_eq!(
                UnitBinary::for_path(Path::new(path), *home),
                *want,
                "{path}"
            );
        }
    }

    #[test]
    fn the_unit_has_what_a_supervised_agent_needs() {
        let unit = canonical_unit().expect("renders");
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=30",
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "NoNewPrivileges=yes",
            "SystemCallArchitectures=native",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
            "WantedBy=default.target",
        ] {
            assert!(unit.lines().any(|l| l == line), "missing {line:?}");
        }
        // Nothing that needs a namespace: a user manager cannot drop capabilities without
        // one (the start fails), and in one the agent cannot read the user's sessions.
        for absent in [
            "ProtectHome=",
            "PrivateTmp=",
            "PrivateUsers=",
            "ProtectSystem=",
            "ReadWritePaths=",
            "ProtectKernelTunables=",
            "ProtectKernelModules=",
            "ProtectKernelLogs=",
            "ProtectControlGroups=",
            "ProtectHostname=",
        ] {
            assert!(
                !unit.lines().any(|l| l.starts_with(absent)),
                "{absent} must not be set"
            );
        }
        assert!(!unit.contains("@EXEC_START@"));
    }

    #[test]
    fn the_plist_names_the_binary_the_home_and_the_label() {
        let p = plist(
            Path::new("/opt/homebrew/bin/telepolice-agent"),
            Path::new("/Users/ada/"),
        )
        .expect("renders");
        for want in [
            "<string>dev.telepolice.agent</string>",
            "<string>/opt/homebrew/bin/telepolice-agent</string>\n\t\t<string>run</string>",
            "<key>RunAtLoad</key>\n\t<true/>",
            "<key>SuccessfulExit</key>\n\t\t<false/>",
            "<string>Background</string>",
            "<string>/Users/ada/Library/Logs/telepolice-agent/launchd.stderr.log</string>",
            "/Users/ada/.cargo/bin:",
        ] {
            assert!(p.contains(want), "missing {want:?} in\n{p}");
        }
        assert!(!p.contains("@BINARY@") && !p.contains("@HOME@"));
    }

    #[test]
    fn the_plist_escapes_xml() {
        let p = plist(Path::new("/opt/a&b<c>/agent"), Path::new("/Users/o'd\"x")).expect("ok");
        assert!(
            p.contains("<string>/opt/a&amp;b&lt;c&gt;/agent</string>"),
            "{p}"
        );
        assert!(p.contains("/Users/o&apos;d&quot;x/Library/Logs"), "{p}");
    }

    #[test]
    fn the_label_and_the_file_name_agree() {
        assert_eq!(PLIST_NAME, format!("{LAUNCHD_LABEL}.plist"));
        assert!(PLIST_TEMPLATE.contains(&format!("<string>{LAUNCHD_LABEL}</string>")));
        assert!(COMMITTED_PLIST.ends_with(PLIST_NAME));
        assert!(COMMITTED_UNIT.ends_with(UNIT_NAME));
        assert_eq!(
            launchd_log_dir(Path::new("/Users/a")),
            Path::new("/Users/a/Library/Logs/telepolice-agent")
        );
    }
}
