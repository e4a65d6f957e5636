//! Sleeps announced by logind: a private `dbus-daemon` with a stand-in logind (its
//! `Inhibit` hands out one end of a pipe, so the test sees when the agent lets go), and the
//! agent pointed at it with `DBUS_SYSTEM_BUS_ADDRESS`.

use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::agent::{Agent, swap_followed, wait_for};
use crate::standin::{alive, replicas, setup};
use crate::util::{Env, in_ci};

/// A `dbus-daemon` of the test's own, on a socket in its dir.
struct PrivateBus {
    child: Option<Child>,
    address: String,
}

impl PrivateBus {
    /// Starts one; `None` (outside CI) when `dbus-daemon` is not installed.
    fn start(env: &Env) -> Option<Self> {
        let socket = env.path("bus.sock");
        let config = env.path("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !in_ci(),
                    "dbus-daemon is required in CI (Debian: apt-get install dbus-daemon): {e}"
                );
                eprintln!("dbus-daemon not found ({e}); skipping the logind test");
                return None;
            }
        };
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the bus prints its address");
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "bus address {address:?}");
        Some(Self {
            child: Some(child),
            address,
        })
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::util::stop_child(c);
        }
    }
}

/// What the stand-in logind saw.
#[derive(Default)]
struct Seen {
    /// `(what, mode)` of each `Inhibit` call.
    inhibits: Mutex<Vec<(String, String)>>,
    /// Inhibitors whose descriptor the agent closed.
    released: AtomicUsize,
}

/// The part of `org.freedesktop.login1.Manager` the agent uses.
struct Manager {
    seen: Arc<Seen>,
    /// How long `Inhibit` takes to answer (a real logind asks polkit first).
    answer_after: std::time::Duration,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    async fn inhibit(
        &self,
        what: &str,
        _who: &str,
        _why: &str,
        mode: &str,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        tokio::time::sleep(self.answer_after).await;
        let (mut reader, writer) =
            std::io::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        self.seen
            .inhibits
            .lock()
            .expect("lock")
            .push((what.to_string(), mode.to_string()));
        let seen = self.seen.clone();
        // End of file once every copy of the write end is closed: the agent let go.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
            seen.released.fetch_add(1, Ordering::SeqCst);
        });
        Ok(std::os::fd::OwnedFd::from(writer).into())
    }

    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> u64 {
        // Generous, so that a loaded test machine does not cut the sessions' cleanup short.
        30_000_000
    }

    #[zbus(signal)]
    async fn prepare_for_sleep(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        start: bool,
    ) -> zbus::Result<()>;
}

/// The stand-in logind, served from a runtime of its own.
struct Logind {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
    seen: Arc<Seen>,
}

const PATH: &str = "/org/freedesktop/login1";

impl Logind {
    fn serve(address: &str) -> Self {
        Self::serve_answering_after(address, std::time::Duration::ZERO)
    }

    /// As [`Logind::serve`], answering `Inhibit` only after `answer_after`.
    fn serve_answering_after(address: &str, answer_after: std::time::Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let seen = Arc::new(Seen::default());
        let manager = Manager {
            seen: seen.clone(),
            answer_after,
        };
        let conn = rt
            .block_on(async {
                zbus::connection::Builder::address(address)?
                    .name("org.freedesktop.login1")?
                    .serve_at(PATH, manager)?
                    .build()
                    .await
            })
            .expect("the stand-in logind is on the bus");
        Self { rt, conn, seen }
    }

    fn prepare_for_sleep(&self, start: bool) {
        self.rt
            .block_on(async {
                let iface = self
                    .conn
                    .object_server()
                    .interface::<_, Manager>(PATH)
                    .await?;
                Manager::prepare_for_sleep(iface.signal_emitter(), start).await
            })
            .expect("PrepareForSleep sent");
    }

    fn inhibits(&self) -> Vec<(String, String)> {
        self.seen.inhibits.lock().expect("lock").clone()
    }

    fn released(&self) -> usize {
        self.seen.released.load(Ordering::SeqCst)
    }
}

#[test]
fn before_a_sleep_live_sessions_end_themselves_and_then_the_sleep_is_let_go() {
    let Some(env) = setup() else { return };
    let Some(bus) = PrivateBus::start(&env) else {
        return;
    };
    let logind = Logind::serve(&bus.address);
    let program = Agent::program(&env);
    let agent = Agent::start_with_env(
        &env,
        &program,
        "",
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let (mut s, _, _) = swap_followed(&env, &agent, &program);

    // The default, on_sleep = "keep": no inhibitor, and the session is left running.
    logind.prepare_for_sleep(true);
    agent.wait_log("sessions are left running");
    assert!(logind.inhibits().is_empty(), "{:?}", logind.inhibits());
    assert!(alive(s.pid()), "the session still runs");
    assert_eq!(replicas(&env, "app"), 0);
    logind.prepare_for_sleep(false);
    agent.wait_log("the machine woke up");

    // Switched by a reload: the agent takes a delay inhibitor at once.
    let config = env.path("agent-config.toml");
    let written = std::fs::read_to_string(&config).expect("the agent's config");
    std::fs::write(&config, format!("{written}on_sleep = \"end-sessions\"\n")).expect("written");
    agent.hangup();
    wait_for("the agent holds a delay inhibitor for sleep", || {
        logind.inhibits() == [("sleep".to_string(), "delay".to_string())]
    });
    assert_eq!(logind.released(), 0);

    logind.prepare_for_sleep(true);
    wait_for("the agent lets the sleep go", || logind.released() == 1);
    // By then Telepresence has run its own cleanup (the network was still up) and exited.
    assert!(!alive(s.pid()), "the session ended before the sleep");
    assert_eq!(
        replicas(&env, "app"),
        2,
        "its own cleanup scaled the original back"
    );
    s.wait_exit(&env);
    agent.wait_log("SIGTERM to Telepresence: the machine is going to sleep");
    agent.wait_log("1 of 1 session(s) ended before the sleep");
    let rec = agent.wait_state("Ended");
    assert_eq!(
        rec["actions"],
        serde_json::json!([]),
        "nothing left to repair"
    );

    // After the resume the inhibitor is taken again, for the next sleep.
    logind.prepare_for_sleep(false);
    wait_for("the inhibitor is held again", || {
        logind.inhibits().len() == 2
    });
    agent.stop();
    drop(bus);
}

#[test]
fn a_delay_inhibitor_that_logind_grants_late_is_still_taken_and_held() {
    let Some(env) = setup() else { return };
    let Some(bus) = PrivateBus::start(&env) else {
        return;
    };
    // Seen in a real boot: logind's first answer waited for polkit to start.
    let logind = Logind::serve_answering_after(&bus.address, std::time::Duration::from_secs(4));
    let program = Agent::program(&env);
    let agent = Agent::start_with_env(
        &env,
        &program,
        "on_sleep = \"end-sessions\"",
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    agent.wait_log("holding a delay inhibitor for sleep (logind took");
    let (mut s, _, _) = swap_followed(&env, &agent, &program);
    assert_eq!(logind.released(), 0, "still held");
    logind.prepare_for_sleep(true);
    wait_for("the agent lets the sleep go", || logind.released() == 1);
    assert!(!alive(s.pid()), "the session ended before the sleep");
    assert_eq!(replicas(&env, "app"), 2);
    s.wait_exit(&env);
    agent.stop();
    drop(bus);
}

/// Telepresence 2: a live connector is left alone across a sleep with `keep`; with
/// `end-sessions` it is told to quit before the sleep (SIGTERM, on which a 2.x connector
/// departs its session, as `telepresence quit` makes it), so that its intercepts do not
/// send colleagues' traffic to a sleeping laptop.
#[test]
fn a_2x_connector_is_left_alone_across_a_sleep_or_quits_before_it() {
    use crate::telepresence2::{Tel2, recorded};
    let Some(t) = Tel2::new() else { return };
    let Some(bus) = PrivateBus::start(&t.env) else {
        return;
    };
    let logind = Logind::serve(&bus.address);
    let agent = Agent::start_with_env(
        &t.env,
        &t.program,
        "telepresence2_grace_secs = 0.5\n",
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let (mut connector, id) = t.connect(Some("echo"), &[]);
    recorded(&agent, &id);

    logind.prepare_for_sleep(true);
    agent.wait_log("sessions are left running");
    logind.prepare_for_sleep(false);
    agent.wait_log("the machine woke up");
    assert!(alive(connector.id()), "the connector still runs");
    assert!(t.tm.sessions().contains(&id));
    assert!(
        t.tm.calls_of("Depart", &id).is_empty(),
        "{:?}",
        t.tm.calls()
    );

    let config = t.env.path("agent-config.toml");
    let written = std::fs::read_to_string(&config).expect("the agent's config");
    std::fs::write(&config, format!("{written}on_sleep = \"end-sessions\"\n")).expect("written");
    agent.hangup();
    wait_for("the agent holds a delay inhibitor for sleep", || {
        logind.inhibits().len() == 1
    });
    logind.prepare_for_sleep(true);
    wait_for("the agent lets the sleep go", || logind.released() == 1);
    // By then the connector departed its session and exited.
    assert!(!t.tm.sessions().contains(&id), "departed before the sleep");
    assert!(t.tm.intercepts().is_empty(), "{:?}", t.tm.intercepts());
    let _ = connector.wait();
    let rec = agent.wait_state("Ended");
    assert_eq!(
        rec["actions"],
        serde_json::json!([]),
        "nothing left for the agent"
    );
    assert_eq!(t.tm.calls_of("Depart", &id).len(), 1, "the connector's own");
    logind.prepare_for_sleep(false);
    agent.stop();
    drop(bus);
}
