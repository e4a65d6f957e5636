//! The real daemon telling a test-owned notify socket that it is ready, alive, and stopping.

use super::*;

/// A notify socket of the test's own: a path, or an abstract name.
struct NotifySocket {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` says.
    value: String,
}

impl NotifySocket {
    fn at_path(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bound");
        Self {
            socket,
            value: path.display().to_string(),
        }
    }

    #[cfg(target_os = "linux")]
    fn abstract_name() -> Self {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!(
            "telepolice-agent-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("a name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bound");
        Self {
            socket,
            value: format!("@{name}"),
        }
    }

    /// The next message, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("a timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Waits up to `timeout` for a message with the line `line`, returning it and
    /// the messages before it.
    fn wait_for(&self, line: &str, timeout: Duration) -> (String, Vec<String>) {
        let end = Instant::now() + timeout;
        let mut before = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.lines().any(|l| l == line) => return (m, before),
                Some(m) => before.push(m),
                None => break,
            }
        }
        panic!("no {line} within {timeout:?}; got {before:?}");
    }
}

/// The real daemon, with every path in `dir` and `NOTIFY_SOCKET` set.
fn start_daemon(dir: &Path, notify: &NotifySocket, watchdog_usec: Option<&str>) -> Child {
    let program = dir.join("bin/telepresence");
    std::fs::create_dir_all(program.parent().expect("a parent")).expect("bin dir");
    std::fs::write(&program, "#!/bin/sh\n").expect("a program to watch");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "telepresence_programs = [{:?}]\nscan_interval_secs = 30\n",
            program.display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(AGENT);
    cmd.arg("run")
        .env("TELEPOLICE_CONFIG", dir.join("config.toml"))
        .env("TELEPOLICE_STATE_DIR", dir.join("state"))
        .env("TELEPOLICE_RUNTIME_DIR", dir.join("run"))
        .env("TELEPOLICE_LOG_DIR", dir.join("logs"))
        .env("TELEPOLICE_TMPDIR", dir.join("tmp"))
        .env("NOTIFY_SOCKET", &notify.value)
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.err")).expect("stderr file"));
    match watchdog_usec {
        Some(u) => cmd.env("WATCHDOG_USEC", u),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    cmd.spawn().expect("the agent starts")
}

fn sigterm_and_wait(mut child: Child, notify: &NotifySocket, log: &Path) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let (stopping, _) = notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waits") {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent did not stop within 10 s of SIGTERM:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "a graceful stop exits 0: {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn the_daemon_says_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::at_path(&dir.path().join("notify.sock"));
    let log = dir.path().join("agent.err");
    let child = start_daemon(dir.path(), &notify, Some("2000000"));
    let (ready, before) = notify.wait_for("READY=1", Duration::from_secs(30));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("watching Telepresence programs"),
        "READY=1 comes once the programs are watched; the log so far:\n{logged}"
    );
    assert!(before.is_empty(), "nothing before READY=1: {before:?}");
    assert!(
        ready.contains("STATUS=watching 1 Telepresence program(s)"),
        "{ready:?}"
    );
    // WATCHDOG_USEC=2 s: a ping every second. Three within six seconds leaves room for a
    // busy machine.
    let start = Instant::now();
    for n in 0..3 {
        let (ping, others) = notify.wait_for("WATCHDOG=1", Duration::from_secs(3));
        assert_eq!(ping, "WATCHDOG=1");
        assert!(others.is_empty(), "ping {n}: {others:?}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    sigterm_and_wait(child, &notify, &log);
}

#[cfg(target_os = "linux")]
#[test]
fn the_daemon_reaches_an_abstract_notify_socket_and_pings_only_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::abstract_name();
    let log = dir.path().join("agent.err");
    let child = start_daemon(dir.path(), &notify, None);
    notify.wait_for("READY=1", Duration::from_secs(30));
    // Without WATCHDOG_USEC, no pings.
    if let Some(m) = notify.next(Duration::from_millis(1500)) {
        panic!("unexpected message without a watchdog: {m:?}");
    }
    sigterm_and_wait(child, &notify, &log);
}
