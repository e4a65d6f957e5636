//! What a killed Telepresence 2 leaves on the laptop besides its session cache: the
//! connector's socket (the user's own: the agent removes it once it is proven stale and no
//! connector runs), and the root daemon's socket, a root daemon left without a connector,
//! and the DNS settings a killed root daemon leaves (root's: only reported, with the
//! command a person runs).
//!
//! Paths are Telepresence's own (`pkg/client/socket/sockets_unix.go`, v2.20.2). Debug builds
//! read `TELEPOLICE_TEST_TEL2_DIR`, which release builds ignore: the sockets and the
//! resolver dir are then under that dir, so that parallel tests do not share `/tmp` and
//! `/var/run`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::platform;

/// Where Telepresence 2 keeps its sockets and (on macOS) its resolver files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The connector's socket (user-owned).
    pub connector_socket: PathBuf,
    /// The root daemon's socket (root-owned).
    pub root_socket: PathBuf,
    /// Where the root daemon writes `telepresence.*` resolver files (macOS).
    pub resolver_dir: PathBuf,
}

impl Paths {
    /// Telepresence's paths (or the test dir's, see the module doc).
    pub fn telepresence() -> Self {
        #[cfg(debug_assertions)]
        if let Some(dir) = std::env::var_os("TELEPOLICE_TEST_TEL2_DIR") {
            return Self::under(Path::new(&dir));
        }
        Self {
            connector_socket: PathBuf::from("/tmp/telepresence-connector.socket"),
            root_socket: PathBuf::from("/var/run/telepresence-daemon.socket"),
            resolver_dir: PathBuf::from("/etc/resolver"),
        }
    }

    /// The same names under `dir`.
    pub fn under(dir: &Path) -> Self {
        Self {
            connector_socket: dir.join("telepresence-connector.socket"),
            root_socket: dir.join("telepresence-daemon.socket"),
            resolver_dir: dir.join("resolver"),
        }
    }
}

/// What a socket file says of the daemon that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketState {
    /// No such file.
    Absent,
    /// Something answers on it.
    Live,
    /// It refuses connections: its daemon is gone.
    Stale,
    /// It cannot be told (not a socket, no permission to connect): why.
    Unknown(String),
}

/// Connects to `path` to tell a live socket from one its daemon left behind.
pub fn socket_state(path: &Path) -> SocketState {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SocketState::Absent,
        Err(e) => return SocketState::Unknown(e.to_string()),
    };
    if !meta.file_type().is_socket() {
        return SocketState::Unknown("not a socket".to_string());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => SocketState::Live,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => SocketState::Stale,
        Err(e) => SocketState::Unknown(e.to_string()),
    }
}

/// Removes the connector's socket when it is the user's (`uid`), stale, and no connector
/// process of the user runs; the path when it did.
pub fn remove_stale_connector_socket(paths: &Paths, uid: u32) -> std::io::Result<Option<PathBuf>> {
    remove_if_stale(paths, uid, || !processes(uid, CONNECTOR).is_empty())
}

/// [`remove_stale_connector_socket`], with whether a connector of the user runs asked of
/// `connector_runs`.
fn remove_if_stale(
    paths: &Paths,
    uid: u32,
    connector_runs: impl Fn() -> bool,
) -> std::io::Result<Option<PathBuf>> {
    let path = &paths.connector_socket;
    if socket_state(path) != SocketState::Stale
        || std::fs::symlink_metadata(path)?.uid() != uid
        || connector_runs()
    {
        return Ok(None);
    }
    // Once more just before: a connector may have started and bound it meanwhile.
    if socket_state(path) != SocketState::Stale {
        return Ok(None);
    }
    std::fs::remove_file(path)?;
    Ok(Some(path.clone()))
}

const CONNECTOR: &str = "connector-foreground";
const ROOT_DAEMON: &str = "daemon-foreground";

/// The pids of processes whose first argument is `command` (`uid`: of that user only).
fn processes_of(uid: Option<u32>, command: &str) -> Vec<u32> {
    platform::all_argv()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, argv)| argv.get(1).map(String::as_str) == Some(command))
        .filter(|(pid, _)| {
            uid.is_none_or(|u| platform::process_info(*pid).is_ok_and(|p| p.uid == u))
        })
        .filter(|(pid, _)| same_test(*pid))
        .map(|(pid, _)| pid)
        .collect()
}

/// In a debug build run by a test (`TELEPOLICE_TEST_ENV` set), only that test's processes
/// count, as for discovery; always true otherwise.
pub(crate) fn same_test(pid: u32) -> bool {
    #[cfg(debug_assertions)]
    if let Ok(mine) = std::env::var("TELEPOLICE_TEST_ENV") {
        return platform::process_environ(pid).is_ok_and(|env| {
            env.into_iter()
                .any(|(k, v)| k == "TELEPOLICE_TEST_ENV" && v == mine)
        });
    }
    let _ = pid;
    true
}

fn processes(uid: u32, command: &str) -> Vec<u32> {
    processes_of(Some(uid), command)
}

/// One thing left on the laptop, and what a person runs about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is, with its path or pid.
    pub what: String,
    /// The command that clears it.
    pub command: String,
}

/// What a killed Telepresence 2 left on this laptop that is not the agent's to touch (the
/// root daemon's), and a stale connector socket (the agent's to remove, said here too).
pub fn leftovers(paths: &Paths, uid: u32) -> Vec<Leftover> {
    let mut out = Vec::new();
    if socket_state(&paths.root_socket) == SocketState::Stale {
        let p = paths.root_socket.display();
        out.push(Leftover {
            what: format!(
                "stale root daemon socket {p} (its daemon was killed): `telepresence connect` fails with \"remove of unresponsive socket failed\" until it is removed"
            ),
            command: format!("sudo rm {p}"),
        });
    }
    let roots = processes_of(None, ROOT_DAEMON);
    if !roots.is_empty() && processes(uid, CONNECTOR).is_empty() {
        out.push(Leftover {
            what: format!(
                "a Telepresence root daemon runs without a connector (pid {})",
                roots
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            command: "telepresence quit -s".to_string(),
        });
    }
    if roots.is_empty() {
        let mut files: Vec<String> = std::fs::read_dir(&paths.resolver_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("telepresence."))
            })
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        if !files.is_empty() {
            out.push(Leftover {
                what: format!(
                    "DNS settings a killed root daemon left: {}",
                    files.join(", ")
                ),
                command: format!("sudo rm {}", files.join(" ")),
            });
        }
    }
    if socket_state(&paths.connector_socket) == SocketState::Stale {
        let p = paths.connector_socket.display();
        out.push(Leftover {
            what: format!(
                "stale connector socket {p} (its connector was killed; the agent removes it once no connector runs)"
            ),
            command: format!("rm {p}"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_whose_daemon_is_gone_is_stale_and_only_the_users_own_is_removed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let paths = Paths::under(dir.path());
        assert_eq!(socket_state(&paths.connector_socket), SocketState::Absent);

        let live = std::os::unix::net::UnixListener::bind(&paths.connector_socket).expect("bind");
        assert_eq!(socket_state(&paths.connector_socket), SocketState::Live);
        let me = platform::current_uid();
        // (Whether a connector runs is asked of the test, not of this machine's processes.)
        let none_runs = || false;
        assert_eq!(
            remove_if_stale(&paths, me, none_runs).expect("no error"),
            None,
            "a live socket stays"
        );
        drop(live);
        assert_eq!(socket_state(&paths.connector_socket), SocketState::Stale);
        assert_eq!(
            remove_if_stale(&paths, me + 1, none_runs).expect("no error"),
            None,
            "another user's stays"
        );
        assert_eq!(
            remove_if_stale(&paths, me, || true).expect("no error"),
            None,
            "not while a connector of the user runs"
        );
        assert!(
            leftovers(&paths, platform::current_uid())
                .iter()
                .any(|l| l.what.starts_with("stale connector socket"))
        );
        assert_eq!(
            remove_if_stale(&paths, me, none_runs).expect("removed"),
            Some(paths.connector_socket.clone())
        );
        assert_eq!(socket_state(&paths.connector_socket), SocketState::Absent);

        std::fs::write(dir.path().join("plain"), "x").expect("a file");
        assert!(matches!(
            socket_state(&dir.path().join("plain")),
            SocketState::Unknown(_)
        ));
    }

    #[test]
    fn root_leftovers_are_reported_with_the_command_never_touched() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let paths = Paths::under(dir.path());
        drop(std::os::unix::net::UnixListener::bind(&paths.root_socket).expect("bind"));
        std::fs::create_dir_all(&paths.resolver_dir).expect("resolver dir");
        std::fs::write(
            paths.resolver_dir.join("telepresence.local"),
            "nameserver 127.0.0.1",
        )
        .expect("a resolver file");
        std::fs::write(paths.resolver_dir.join("corp.example"), "x").expect("someone else's");
        let found = leftovers(&paths, platform::current_uid());
        let root = found
            .iter()
            .find(|l| l.what.starts_with("stale root daemon socket"))
            .expect("the root socket");
        assert_eq!(
            root.command,
            format!("sudo rm {}", paths.root_socket.display())
        );
        // (A root daemon running elsewhere on this machine would hide the DNS line.)
        if processes_of(None, ROOT_DAEMON).is_empty() {
            let dns = found
                .iter()
                .find(|l| l.what.starts_with("DNS settings"))
                .expect("the resolver file");
            assert!(
                dns.command.ends_with("resolver/telepresence.local"),
                "{dns:?}"
            );
            assert!(!dns.command.contains("corp.example"));
        }
        assert!(paths.root_socket.exists(), "reported, not removed");
    }
}
