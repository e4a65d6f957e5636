//! Telling systemd how the daemon is doing: its notify protocol, without a library. The
//! service manager names a Unix datagram socket in `NOTIFY_SOCKET` (a path, or an abstract
//! name written with a leading `@`); each message is one datagram of `KEY=value` lines:
//! `READY=1` once the daemon does its job, `WATCHDOG=1` as a sign of life (expected every
//! `WATCHDOG_USEC` microseconds; the daemon sends it twice as often), `STOPPING=1` when a
//! graceful stop begins, and `STATUS=` for `systemctl status`.
//!
//! # Guarantees
//! - Without `NOTIFY_SOCKET` (not started by systemd, or by launchd) every call does
//!   nothing.
//! - Sending never fails the daemon: a message that cannot be sent is logged at debug level
//!   and dropped; a send waits at most 2 s for a full socket.
//!
//! # Caveats
//! The variables stay in the environment, so processes the agent starts (credential
//! plugins, `docker`) inherit them; the unit's `NotifyAccess=main` makes systemd ignore
//! anything they might send.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, warn};

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading `@`).
    Abstract(Vec<u8>),
}

/// Why `NOTIFY_SOCKET` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifySocketError {
    /// Neither a path nor an abstract name (newer systemd also knows `vsock:`, which a user
    /// service never gets).
    #[error("NOTIFY_SOCKET={value:?} is neither an absolute path nor an abstract name (@...)")]
    Unsupported { value: String },
    /// An abstract name outside Linux.
    #[error("NOTIFY_SOCKET={value:?} is an abstract socket name, which only Linux has")]
    AbstractNotHere { value: String },
}

/// Reads `NOTIFY_SOCKET`'s value (pure).
pub fn parse_socket(value: &str) -> Result<NotifyTarget, NotifySocketError> {
    if let Some(name) = value.strip_prefix('@') {
        if !cfg!(target_os = "linux") {
            return Err(NotifySocketError::AbstractNotHere {
                value: value.to_string(),
            });
        }
        return Ok(NotifyTarget::Abstract(name.as_bytes().to_vec()));
    }
    if value.starts_with('/') {
        return Ok(NotifyTarget::Path(PathBuf::from(value)));
    }
    Err(NotifySocketError::Unsupported {
        value: value.to_string(),
    })
}

/// How often to send `WATCHDOG=1` (half the interval systemd expects), from
/// `WATCHDOG_USEC` and `WATCHDOG_PID` (pure). `None` when there is no watchdog, or it is
/// meant for another process (`WATCHDOG_PID` names a pid other than `own_pid`).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The message that says the daemon is ready, with a status line.
pub fn ready_message(status: &str) -> String {
    format!("READY=1\nSTATUS={}", one_line(status))
}

/// The message sent when a graceful stop begins.
pub const STOPPING: &str = "STOPPING=1\nSTATUS=stopping";

/// The watchdog's sign of life.
pub const WATCHDOG: &str = "WATCHDOG=1";

/// A status line cannot hold a newline (it would start a new assignment).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The daemon's line to its service manager; does nothing when there is none.
#[derive(Debug)]
pub struct Notifier {
    /// The socket and where to send; `None` without a service manager.
    target: Option<(UnixDatagram, SocketAddr)>,
    /// How often to send `WATCHDOG=1`.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    /// The notifier the environment describes (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`); a socket that cannot be used is logged and the notifier disabled.
    pub fn from_env() -> Self {
        let Some(value) = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|v| !v.is_empty())
        else {
            return Self::disabled();
        };
        let target = match parse_socket(&value)
            .map_err(|e| e.to_string())
            .and_then(|t| Self::connect(&t).map_err(|e| format!("NOTIFY_SOCKET={value:?}: {e}")))
        {
            Ok(t) => t,
            Err(e) => {
                warn!("{e}; the service manager is not told when the agent is ready");
                return Self::disabled();
            }
        };
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Self {
            target: Some(target),
            watchdog,
        }
    }

    /// An unbound datagram socket and the address to send to.
    fn connect(target: &NotifyTarget) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let addr = match target {
            NotifyTarget::Path(p) => SocketAddr::from_pathname(p)?,
            #[cfg(target_os = "linux")]
            NotifyTarget::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            #[cfg(not(target_os = "linux"))]
            NotifyTarget::Abstract(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "abstract socket names are Linux only",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok((socket, addr))
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to call [`Notifier::watchdog`]; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog)
    }

    /// `READY=1`, with `status` for `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.send(&ready_message(status));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(WATCHDOG);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(STOPPING);
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            debug!("telling the service manager {message:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values() {
        assert_eq!(
            parse_socket("/run/user/1000/systemd/notify"),
            Ok(NotifyTarget::Path("/run/user/1000/systemd/notify".into()))
        );
        if cfg!(target_os = "linux") {
            assert_eq!(
                parse_socket("@/org/freedesktop/systemd1/notify/1"),
                Ok(NotifyTarget::Abstract(
                    b"/org/freedesktop/systemd1/notify/1".to_vec()
                ))
            );
        } else {
            assert!(parse_socket("@x").is_err());
        }
        for bad in ["relative/sock", "vsock:2:1234", ""] {
            assert!(
                matches!(
                    parse_socket(bad),
                    Err(NotifySocketError::Unsupported { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_interval_if_it_is_ours() {
        let cases: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (None, None, None),
            (Some("30000000"), None, Some(Duration::from_secs(15))),
            (Some("30000000"), Some("42"), Some(Duration::from_secs(15))),
            (Some("30000000"), Some("43"), None),
            (Some("30000000"), Some("not a pid"), None),
            (Some("2000000"), None, Some(Duration::from_secs(1))),
            (Some("0"), None, None),
            (Some("soon"), None, None),
            (Some("1"), None, Some(Duration::from_millis(1))),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(
                watchdog_interval(*usec, *pid, 42),
                *want,
                "{usec:?} {pid:?}"
            );
        }
    }

    #[test]
    fn a_status_is_one_line() {
        assert_eq!(ready_message("a\nb"), "READY=1\nSTATUS=a b");
    }

    #[test]
    fn a_disabled_notifier_sends_nothing_and_has_no_watchdog() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x");
        n.stopping();
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bound");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let target = Notifier::connect(&NotifyTarget::Path(path)).expect("connects");
        let n = Notifier {
            target: Some(target),
            watchdog: Some(Duration::from_secs(1)),
        };
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        n.ready("watching 1 program");
        n.watchdog();
        n.stopping();
        assert_eq!(receive(&listener), "READY=1\nSTATUS=watching 1 program");
        assert_eq!(receive(&listener), "WATCHDOG=1");
        assert_eq!(receive(&listener), "STOPPING=1\nSTATUS=stopping");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("telepolice-agent-unit-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("a name");
        let listener = UnixDatagram::bind_addr(&addr).expect("bound");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let target = parse_socket(&format!("@{name}")).expect("parses");
        let n = Notifier {
            target: Some(Notifier::connect(&target).expect("connects")),
            watchdog: None,
        };
        n.ready("ok");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=ok");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_not_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target =
            Notifier::connect(&NotifyTarget::Path(dir.path().join("nobody"))).expect("connects");
        let n = Notifier {
            target: Some(target),
            watchdog: None,
        };
        n.ready("x");
    }
}
