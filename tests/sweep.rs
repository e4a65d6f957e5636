//! Team mode end to end: laptop agents writing facts and heartbeats, and `telepolice-agent
//! sweep` run as it runs in a pod: in a mount namespace of its own whose
//! `/var/run/secrets/kubernetes.io/serviceaccount` holds a token, the CA and a namespace,
//! with `KUBERNETES_SERVICE_HOST`/`PORT` set (kube-rs's in-cluster configuration, unchanged).
//! Short timings (a grace of seconds, an election of 6/4/0.5 s) stand in for the defaults.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::{Agent, actions, wait_for};
use crate::standin::{Session, replicas, setup};
use crate::util::{Env, root_with, text};

static SWEEPERS: AtomicUsize = AtomicUsize::new(0);

/// Whether this machine can run a sweeper as in a pod (root, for the mount namespace).
fn can_run() -> bool {
    root_with(
        "the sweeper tests",
        &["/usr/bin/unshare"],
        (true, ""),
        "run the tests as root; unshare is in util-linux",
    )
}

/// A free loopback port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A sweeper process, as a pod runs it.
struct Sweeper {
    child: Option<Child>,
    log: PathBuf,
    status: SocketAddr,
    identity: String,
}

impl Sweeper {
    /// Starts `sweep` reaching the API server at `api` (the emulator, or a cut-able proxy
    /// in front of it), with `extra` flags.
    fn start(env: &Env, api: SocketAddr, name: &str, extra: &[&str]) -> Self {
        Self::start_with(env, api, name, extra, &[])
    }

    /// Like [`Sweeper::start`], with extra environment variables.
    fn start_with(
        env: &Env,
        api: SocketAddr,
        name: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Self {
        let n = SWEEPERS.fetch_add(1, Ordering::Relaxed);
        let sa = env.path(&format!("sa-{n}"));
        std::fs::create_dir_all(&sa).expect("sa dir");
        std::fs::write(sa.join("token"), env.cluster.token()).expect("token");
        std::fs::write(sa.join("ca.crt"), env.cluster.ca_pem()).expect("ca");
        std::fs::write(sa.join("namespace"), "telepolice").expect("namespace");
        let log = env.path(&format!("sweeper-{name}.err"));
        let port = free_port();
        let status: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        // A tmpfs over /run in a private mount namespace: the service account files
        // appear where a pod has them, and nothing outside the namespace changes.
        let script = r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$SA"/token "$SA"/ca.crt "$SA"/namespace /run/secrets/kubernetes.io/serviceaccount/
exec "$@""#;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_telepolice-agent"))
        .args([
            "sweep",
            "--listen",
            &status.to_string(),
            "--leader-elect-lease-duration",
            "6",
            "--leader-elect-renew-deadline",
            "4",
            "--leader-elect-retry-period",
            "0.5",
        ])
        .args(extra)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SA", &sa)
        .env("KUBERNETES_SERVICE_HOST", api.ip().to_string())
        .env("KUBERNETES_SERVICE_PORT", api.port().to_string())
        .env("POD_NAME", name)
        .env(
            "TELEPOLICE_LOG",
            "debug,kube=info,hyper=info,tower=info,h2=info,rustls=info",
        )
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("unshare runs");
        let s = Self {
            child: Some(child),
            log,
            status,
            identity: format!("sweeper/{name}"),
        };
        s.wait_log("telepolice sweeper started");
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        let end = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < end,
                "the sweeper never logged {needle:?}:\n{}",
                self.log()
            );
            assert!(
                !self.exited(),
                "the sweeper exited before logging {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited(&self) -> bool {
        self.child
            .as_ref()
            .is_none_or(|c| !crate::standin::alive(c.id()))
    }

    /// `GET path` on its status port: (status code, body).
    fn get(&self, path: &str) -> (u16, String) {
        let Ok(mut c) = TcpStream::connect_timeout(&self.status, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes());
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    fn leads(&self) -> bool {
        self.get("/status")
            .1
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(": leading"))
    }

    /// SIGKILL, as a node lost or an OOM kill.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // unshare execs sh, which execs the sweeper: the pid is the sweeper's.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as a pod's deletion; waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- sweeper {} log:\n{}", self.identity, self.log());
        }
    }
}

/// The election Lease's holder.
fn leader(env: &Env) -> String {
    env.cluster
        .get("leases", "telepolice", "telepolice-sweeper")
        .map(|l| text(&l, "/spec/holderIdentity"))
        .unwrap_or_default()
}

fn setup_sweep() -> Option<Env> {
    if !can_run() {
        return None;
    }
    let env = setup()?;
    env.cluster
        .create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "telepolice"}}),
        )
        .expect("namespace");
    Some(env)
}

#[test]
fn two_sweepers_elect_one_leader_and_the_other_takes_over_when_it_is_killed() {
    let Some(env) = setup_sweep() else { return };
    let api = env.cluster.addr();
    let mut a = Sweeper::start(&env, api, "sweeper-a", &[]);
    let mut b = Sweeper::start(&env, api, "sweeper-b", &[]);
    wait_for("one sweeper leads", || a.leads() || b.leads());
    // Both try every 0.5 s: never do both lead at once.
    for _ in 0..30 {
        let (la, lb) = (a.leads(), b.leads());
        assert!(!(la && lb), "both lead\n{}\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("one sweeper leads", || a.leads() || b.leads());
    let (first, second) = if a.leads() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(leader(&env), first.identity);
    let lease = env
        .cluster
        .get("leases", "telepolice", "telepolice-sweeper")
        .expect("lease");
    let transitions = lease
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64);
    assert_eq!(lease.pointer("/spec/leaseDurationSeconds"), Some(&json!(6)));
    assert_eq!(second.get("/readyz").0, 200, "the standby is ready too");

    let killed = Instant::now();
    first.kill();
    wait_for("the other sweeper leads", || second.leads());
    let took = killed.elapsed();
    eprintln!("leader killed -> the other leads in {took:?} (lease 6 s, retry 0.5 s)");
    assert_eq!(leader(&env), second.identity);
    let lease = env
        .cluster
        .get("leases", "telepolice", "telepolice-sweeper")
        .expect("lease");
    assert_eq!(
        lease
            .pointer("/spec/leaseTransitions")
            .and_then(Value::as_i64),
        transitions.map(|t| t + 1),
        "a take-over is one transition"
    );
    // A graceful stop releases the lease at once (client-go's ReleaseOnCancel).
    second.stop();
    let lease = env
        .cluster
        .get("leases", "telepolice", "telepolice-sweeper")
        .expect("lease");
    assert_eq!(
        text(&lease, "/spec/holderIdentity"),
        "",
        "released: {lease:#}"
    );
    assert_eq!(lease.pointer("/spec/leaseDurationSeconds"), Some(&json!(1)));
}

/// The session's heartbeat Lease, once the laptop agent made it.
fn heartbeat(env: &Env, id: &str) -> Option<Value> {
    env.cluster
        .get("leases", "default", &format!("telepolice-{id}"))
}

/// Events on `kind/name` with `reason`.
fn events(env: &Env, kind: &str, name: &str, reason: &str) -> Vec<Value> {
    env.cluster
        .list("events", Some("default"))
        .into_iter()
        .filter(|e| {
            text(e, "/involvedObject/kind") == kind
                && text(e, "/involvedObject/name") == name
                && text(e, "/reason") == reason
        })
        .collect()
}

/// Writes of the sweeper (`telepolice-sweeper/<version>`) and the laptop agent (kube-rs: no
/// User-Agent) alike, on the
/// session's objects: `verb resource name`.
fn writes_on(env: &Env, names: &[&str]) -> Vec<String> {
    env.cluster
        .audit()
        .into_iter()
        .filter(|e| {
            (e.user_agent.is_empty() || e.user_agent.starts_with("telepolice-sweeper/"))
                && matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete")
                && (200..300).contains(&e.status)
                && e.name.as_deref().is_some_and(|n| names.contains(&n))
                && e.resource != "leases"
        })
        .map(|e| format!("{} {} {}", e.verb, e.resource, e.name.unwrap_or_default()))
        .collect()
}

/// A followed 0.109 swap of `app` with its heartbeat Lease made: the agent, the session, its
/// Telepresence id and its proxy's name.
fn followed_swap(env: &Env) -> (Agent, Session, String, String) {
    let (agent, program) = Agent::start(env, "");
    let mut s = Session::start_program(env, &program, "0.109", &["--swap-deployment", "app"]);
    let id = s.wait_id(env);
    s.wait_ready(env, 4);
    agent.wait_state("Active");
    wait_for("the heartbeat lease", || heartbeat(env, &id).is_some());
    let proxy = format!("app-{id}");
    (agent, s, id, proxy)
}

/// The laptop gone for good: its agent and its Telepresence killed.
fn laptop_gone(agent: &mut Agent, s: &mut Session, env: &Env) {
    agent.kill();
    s.signal("KILL");
    s.wait_exit(env);
}

/// Waits until the laptop's facts are on the proxy.
fn wait_facts(env: &Env, proxy: &str) {
    wait_for("the facts on the proxy", || {
        env.cluster.get("pods", "default", proxy).is_some_and(|p| {
            text(
                &p,
                "/metadata/annotations/telepolice.dev~1original-replicas",
            ) == "2"
        })
    });
}

/// Waits until `app` is back at its 2 replicas.
fn wait_restored(env: &Env) {
    env.wait("the original is back at 2", |c| {
        c.get("deployments", "default", "app")
            .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64))
            == Some(2)
    });
}

/// Every write on a swap session's objects, each once: the laptop's facts on the proxy,
/// then the restore and the delete.
fn facts_then_repair(proxy: &str) -> [String; 3] {
    [
        format!("patch pods {proxy}"),
        "patch deployments app".to_string(),
        format!("delete pods {proxy}"),
    ]
}

#[test]
fn a_session_whose_laptop_never_returns_is_repaired_by_the_sweeper_after_the_grace() {
    let Some(env) = setup_sweep() else { return };
    let (mut agent_proc, mut s, id, proxy) = followed_swap(&env);
    wait_facts(&env, &proxy);
    let lease = heartbeat(&env, &id).expect("lease");
    assert_eq!(
        text(&lease, "/metadata/ownerReferences/0/name"),
        proxy,
        "owned by the proxy"
    );
    assert!(
        text(&lease, "/spec/holderIdentity").starts_with("laptop/"),
        "{lease:#}"
    );
    assert_eq!(
        text(
            &lease,
            "/metadata/annotations/telepolice.dev~1original-name"
        ),
        "app"
    );
    assert_eq!(
        text(
            &lease,
            "/metadata/annotations/telepolice.dev~1replicas-evidence"
        ),
        "observed"
    );

    // The laptop is gone for good: its agent and its Telepresence die together.
    laptop_gone(&mut agent_proc, &mut s, &env);
    assert_eq!(replicas(&env, "app"), 0, "nobody repaired it yet");
    let sweeper = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
    );
    wait_restored(&env);
    env.wait("the proxy and the heartbeat lease are gone", |c| {
        c.get("pods", "default", &proxy)
            .is_none_or(|p| p.pointer("/metadata/deletionTimestamp").is_some())
            && c.get("leases", "default", &format!("telepolice-{id}"))
                .is_none()
    });
    assert_eq!(
        writes_on(&env, &["app", &proxy]),
        [
            format!("patch pods {proxy}"), // the laptop's facts
            "patch deployments app".to_string(),
            format!("delete pods {proxy}"),
        ],
        "each repair write once"
    );
    assert_eq!(
        events(&env, "Deployment", "app", "RestoredAfterTelepresence").len(),
        1
    );
    assert_eq!(
        events(&env, "Pod", &proxy, "DeletedTelepresenceProxy").len(),
        1
    );
    let message = text(
        &events(&env, "Deployment", "app", "RestoredAfterTelepresence")[0],
        "/message",
    );
    assert!(
        message.contains(&id) && message.contains("heartbeat stopped"),
        "{message}"
    );
    let (_, status) = sweeper.get("/status");
    assert!(status.contains("repaired"), "{status}");
    assert_rbac_covers_the_sweepers_requests(&env);
}

#[test]
fn a_laptop_returning_during_the_sweepers_repair_is_fenced_and_each_write_happens_once() {
    let Some(env) = setup_sweep() else { return };
    let (agent_proc, mut s, id, proxy) = followed_swap(&env);
    // The laptop sleeps (its agent stopped, not dead), and its Telepresence dies.
    agent_proc.signal("STOP");
    s.signal("KILL");
    s.wait_exit(&env);
    // A sweeper takes the session and dies after journaling its first step, before
    // carrying it out.
    let mut first = Sweeper::start_with(
        &env,
        env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
        &[("TELEPOLICE_FAILPOINT", "sweep.started")],
    );
    wait_for("the first sweeper dies at its failpoint", || first.exited());
    assert!(
        first.log().contains("failpoint sweep.started: killing"),
        "{}",
        first.log()
    );
    first.kill();
    let lease = heartbeat(&env, &id).expect("the lease is kept while the repair is unfinished");
    assert_eq!(
        text(&lease, "/spec/holderIdentity"),
        "sweeper/sweeper-a",
        "{lease:#}"
    );
    assert_eq!(
        text(&lease, "/metadata/annotations/telepolice.dev~1sweep-state"),
        "repairing"
    );
    assert!(
        lease
            .pointer("/metadata/ownerReferences")
            .is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)),
        "the journal outlives the proxy: {lease:#}"
    );
    assert!(
        text(&lease, "/metadata/annotations/telepolice.dev~1taken-from").starts_with("laptop/"),
        "{lease:#}"
    );
    assert!(
        text(
            &lease,
            "/metadata/annotations/telepolice.dev~1sweep-journal"
        )
        .ends_with("-> started"),
        "{lease:#}"
    );

    // The laptop wakes: its session is dead, but the lease is a sweeper's now.
    agent_proc.signal("CONT");
    let rec = agent_proc.wait_state("Ended");
    let reason = crate::agent::last_reason(&rec);
    assert!(
        reason.contains("sweeper/sweeper-a took the session's heartbeat Lease"),
        "{reason}"
    );
    assert!(
        actions(&rec)
            .iter()
            .any(|a| a.starts_with("stop local helper")),
        "the laptop stops its own helpers: {:#?}",
        actions(&rec)
    );
    assert_eq!(
        replicas(&env, "app"),
        0,
        "the laptop wrote nothing to the cluster"
    );

    // Another sweeper leads once the first one's election lease runs out, and finishes.
    let second = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-b",
        &["--grace-minutes", "0.05"],
    );
    wait_restored(&env);
    env.wait("the heartbeat lease is gone", |c| {
        c.get("leases", "default", &format!("telepolice-{id}"))
            .is_none()
    });
    assert_eq!(
        writes_on(&env, &["app", &proxy]),
        facts_then_repair(&proxy),
        "each write once, by one writer\n{}",
        second.log()
    );
    assert_rbac_covers_the_sweepers_requests(&env);
}

#[test]
fn an_unrecorded_pod_proxy_gets_events_naming_the_commands_and_nothing_is_guessed() {
    let Some(env) = setup_sweep() else { return };
    // What a 0.106+ swap leaves without an agent: the original at 0, a bare proxy Pod
    // labelled with the session id and the original's selector labels.
    let id = "0123456789abcdef0123456789abcdef";
    let proxy = format!("app-{id}");
    env.kubectl_ok(&["scale", "deployment", "app", "--replicas=0"]);
    env.cluster
        .create(
            "pods",
            "default",
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": proxy, "labels": {"telepresence": id, "app": "app"}},
                "spec": {"containers": [{"name": "app", "image": "datawire/telepresence-k8s:0.109"}]}}),
        )
        .expect("proxy pod");
    let sweeper = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
    );
    wait_for("events on the proxy and the original", || {
        !events(&env, "Pod", &proxy, "UnrecordedTelepresenceProxy").is_empty()
            && !events(&env, "Deployment", "app", "UnrecordedTelepresenceProxy").is_empty()
    });
    let e = &events(&env, "Pod", &proxy, "UnrecordedTelepresenceProxy")[0];
    assert_eq!(text(e, "/type"), "Warning");
    let m = text(e, "/message");
    assert!(
        m.contains(&format!("kubectl -n default delete pod {proxy}")),
        "{m}"
    );
    assert!(
        m.contains(
            "kubectl -n default scale deployment app --replicas=<its count before the swap>"
        ),
        "{m}"
    );
    let (_, status) = sweeper.get("/status");
    assert!(
        status.contains(&format!("default/pod {proxy}: session {id}, unrecorded")),
        "{status}"
    );
    // Nothing guessed: the proxy stays, the original stays at 0, and it is said once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replicas(&env, "app"), 0);
    assert!(env.cluster.get("pods", "default", &proxy).is_some());
    assert_eq!(writes_on(&env, &["app", &proxy]), Vec::<String>::new());
    assert_eq!(
        events(&env, "Pod", &proxy, "UnrecordedTelepresenceProxy").len(),
        1
    );
    assert_rbac_covers_the_sweepers_requests(&env);
}

/// A TCP relay to the emulator that a test can cut (a network partition: connections
/// stall, nothing is refused).
struct Partition {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Partition {
    fn to(target: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("relay");
        let addr = l.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        down.try_clone().expect("clone"),
                        up.try_clone().expect("clone"),
                    ),
                    (up, down),
                ] {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let Ok(n) = from.read(&mut buf) else { return };
                            if n == 0 {
                                return;
                            }
                            // Cut: the bytes are dropped and the connection hangs.
                            while c.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// The time of the first log line containing `needle` (tracing's RFC 3339 prefix).
fn logged_at(log: &str, needle: &str) -> Option<jiff::Timestamp> {
    let line = log.lines().find(|l| l.contains(needle))?;
    line.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_leader_cut_off_from_the_api_server_stops_acting_before_another_starts() {
    let Some(env) = setup_sweep() else { return };
    let relay = Partition::to(env.cluster.addr());
    let a = Sweeper::start(&env, relay.addr, "sweeper-a", &[]);
    wait_for("a leads", || a.leads());
    let b = Sweeper::start(&env, env.cluster.addr(), "sweeper-b", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!b.leads(), "b stands by while a renews");
    relay.cut();
    wait_for("b leads", || b.leads());
    wait_for("a said it stopped", || a.log().contains("lost the lead"));
    assert!(!a.leads(), "a no longer acts");
    let stopped = logged_at(&a.log(), "acting stops").expect("a's stop is logged");
    let started =
        logged_at(&b.log(), "leading: this sweeper acts now").expect("b's start is logged");
    assert!(
        stopped < started,
        "a stopped ({stopped}) before b started ({started})\n{}\n{}",
        a.log(),
        b.log()
    );
}

#[test]
fn a_laptops_heartbeat_is_renewed_while_the_session_lives_and_goes_when_it_ends() {
    let Some(env) = setup_sweep() else { return };
    let (agent, mut s, id, _) = followed_swap(&env);
    let first = text(&heartbeat(&env, &id).expect("lease"), "/spec/renewTime");
    let lease = heartbeat(&env, &id).expect("lease");
    assert_eq!(
        lease.pointer("/spec/leaseDurationSeconds"),
        Some(&json!(40))
    );
    assert_eq!(
        text(&lease, "/metadata/labels/app.kubernetes.io~1managed-by"),
        "telepolice-agent"
    );
    // Renewed about every 10 s (kubelet-style).
    let end = Instant::now() + Duration::from_secs(30);
    while text(&heartbeat(&env, &id).expect("lease"), "/spec/renewTime") == first {
        assert!(Instant::now() < end, "the heartbeat was never renewed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Telepresence's own clean exit: the proxy goes, and its lease with it.
    s.signal("INT");
    s.wait_exit(&env);
    agent.wait_state("Ended");
    env.wait("the heartbeat lease is gone", |c| {
        c.get("leases", "default", &format!("telepolice-{id}"))
            .is_none()
    });
}

#[test]
fn a_laptop_refused_its_heartbeat_says_so_and_repairs_alone() {
    let Some(env) = setup_sweep() else { return };
    env.cluster.deny("create", "leases");
    let (agent, program) = Agent::start(&env, "");
    let mut s = Session::start_program(&env, &program, "0.109", &["--swap-deployment", "app"]);
    let id = s.wait_id(&env);
    s.wait_ready(&env, 4);
    agent.wait_state("Active");
    agent.wait_log("team mode: ");
    let log = agent.log();
    let said = log
        .lines()
        .find(|l| l.contains("team mode: "))
        .unwrap_or_default();
    assert!(
        said.contains("lease") && said.contains("repairs this session alone"),
        "{said}"
    );
    // No heartbeat, so no facts on the proxy either: facts always mean a heartbeat.
    let pod = env
        .cluster
        .get("pods", "default", &format!("app-{id}"))
        .expect("proxy");
    assert_eq!(
        text(&pod, "/metadata/annotations/telepolice.dev~1schema"),
        ""
    );
    s.signal("KILL");
    s.wait_exit(&env);
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
}

/// What `kubectl kustomize` renders of an overlay under `packaging/kubernetes/overlays`.
fn render(overlay: &str) -> Vec<Value> {
    let kubectl = crate::util::kubectl_binary().expect("kubectl is on the machine");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/kubernetes/overlays")
        .join(overlay);
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_saphyr::from_multiple::<Value>(&text).expect("the rendering is YAML")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| text(d, "/kind") == kind).collect()
}

/// The rules granted to the sweeper's service account, each with its scope (`None`: the
/// whole cluster, through a ClusterRoleBinding).
fn granted(docs: &[Value]) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    for (binding, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        for b in of_kind(docs, binding) {
            let to_sweeper = b["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    text(s, "/name") == "telepolice-sweeper"
                        && text(s, "/namespace") == "telepolice"
                })
            });
            if !to_sweeper {
                continue;
            }
            let scope = (binding == "RoleBinding").then(|| text(b, "/metadata/namespace"));
            let role = of_kind(docs, role_kind).into_iter().find(|r| {
                text(r, "/metadata/name") == text(b, "/roleRef/name")
                    && (role_kind == "ClusterRole"
                        || text(r, "/metadata/namespace") == text(b, "/metadata/namespace"))
            });
            let role = role.unwrap_or_else(|| panic!("{binding} refers to a missing role: {b:#}"));
            for r in role["rules"].as_array().cloned().unwrap_or_default() {
                out.push((scope.clone(), r));
            }
        }
    }
    out
}

/// Whether the rules let the sweeper `verb` `resource` (with any subresource) in `ns`
/// (`None`: across namespaces, or a cluster-scoped object).
fn allows(rules: &[(Option<String>, Value)], verb: &str, resource: &str, ns: Option<&str>) -> bool {
    rules.iter().any(|(scope, r)| {
        let has = |k: &str, v: &str| r[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
        has("resources", resource)
            && has("verbs", verb)
            && scope.as_deref().is_none_or(|s| Some(s) == ns)
    })
}

/// Every request the sweeper made (its User-Agent) is one the cluster-wide install's RBAC
/// grants: the RBAC is what the code needs, checked against what it did.
fn assert_rbac_covers_the_sweepers_requests(env: &Env) {
    let rules = granted(&render("cluster-wide"));
    let asked: std::collections::BTreeSet<(String, String, Option<String>)> = env
        .cluster
        .audit()
        .into_iter()
        .filter(|e| e.user_agent.starts_with("telepolice-sweeper/"))
        .map(|e| (e.verb, e.resource, e.namespace))
        .collect();
    assert!(
        !asked.is_empty(),
        "the sweeper's requests carry its User-Agent"
    );
    for (verb, resource, ns) in &asked {
        assert!(
            allows(&rules, verb, resource, ns.as_deref()),
            "the cluster-wide RBAC does not grant {verb} {resource} in {ns:?}; the sweeper asked: {asked:#?}"
        );
    }
}

#[test]
fn each_kustomize_overlay_renders_a_least_privilege_install() {
    for overlay in ["cluster-wide", "one-namespace"] {
        let docs = render(overlay);
        let deps = of_kind(&docs, "Deployment");
        assert_eq!(deps.len(), 1, "{overlay}");
        let d = deps[0];
        assert_eq!(
            d["spec"]["replicas"], 2,
            "{overlay}: two replicas, one leads"
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"], json!(["sweep"]));
        assert_eq!(text(c, "/livenessProbe/httpGet/path"), "/healthz");
        assert_eq!(text(c, "/readinessProbe/httpGet/path"), "/readyz");
        assert_eq!(
            text(d, "/spec/template/spec/serviceAccountName"),
            "telepolice-sweeper"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let pdb = of_kind(&docs, "PodDisruptionBudget");
        assert_eq!(pdb.len(), 1, "{overlay}");
        assert_eq!(pdb[0]["spec"]["minAvailable"], 1);
        assert_eq!(of_kind(&docs, "ServiceAccount").len(), 1);
        for role in of_kind(&docs, "Role")
            .into_iter()
            .chain(of_kind(&docs, "ClusterRole"))
        {
            let rules = role["rules"].as_array().cloned().unwrap_or_default();
            let resources: Vec<String> = rules
                .iter()
                .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            for bad in ["pods/exec", "secrets", "configmaps", "*"] {
                assert!(
                    !resources.iter().any(|r| r == bad),
                    "{overlay}: {bad} granted: {role:#}"
                );
            }
            for r in &rules {
                assert!(
                    !r["verbs"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x == "*")),
                    "{role:#}"
                );
            }
            // Leases in their own roles.
            if resources.iter().any(|r| r == "leases") {
                assert!(
                    resources.iter().all(|r| r == "leases"),
                    "{overlay}: {role:#}"
                );
            }
        }
        let env_of = |name: &str| {
            c["env"]
                .as_array()
                .and_then(|e| e.iter().find(|v| v["name"] == name))
                .map(|v| text(v, "/value"))
        };
        match overlay {
            "one-namespace" => {
                assert!(
                    of_kind(&docs, "ClusterRole").is_empty(),
                    "no cluster-wide right"
                );
                assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
                assert_eq!(env_of("TELEPOLICE_SWEEP_NAMESPACE").as_deref(), Some("dev"));
                let rules = granted(&docs);
                assert!(allows(&rules, "delete", "pods", Some("dev")));
                assert!(!allows(&rules, "delete", "pods", Some("default")));
            }
            _ => assert_eq!(env_of("TELEPOLICE_SWEEP_NAMESPACE"), None),
        }
    }
}

#[test]
fn a_dead_laptops_telepresence2_session_is_departed_by_the_sweeper() {
    if !can_run() {
        return;
    }
    let Some(t) = crate::telepresence2::Tel2::new() else {
        return;
    };
    for ns in ["telepolice", "telepresence-leases"] {
        t.env
            .cluster
            .create(
                "namespaces",
                "",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .expect("namespace");
    }
    let mut agent = t.agent("team_lease_namespace = \"telepresence-leases\"\n");
    let (mut connector, id) = t.connect(Some("echo"), &[]);
    let name = format!("telepolice-tel2-{id}");
    wait_for("the 2.x session's heartbeat lease", || {
        t.env
            .cluster
            .get("leases", "telepresence-leases", &name)
            .is_some()
    });
    let lease = t
        .env
        .cluster
        .get("leases", "telepresence-leases", &name)
        .expect("lease");
    assert_eq!(
        text(&lease, "/metadata/annotations/telepolice.dev~1session-kind"),
        "telepresence-2"
    );
    assert_eq!(
        text(&lease, "/metadata/annotations/telepolice.dev~1session"),
        id
    );
    assert_eq!(
        text(
            &lease,
            "/metadata/annotations/telepolice.dev~1manager-namespace"
        ),
        "ambassador"
    );
    // Laptop and connector gone for good: the traffic-manager would keep the session (and
    // its intercept) for its TTL, 24 hours by default.
    agent.kill();
    crate::telepresence2::kill9(&mut connector);
    assert!(t.tm.sessions().contains(&id));
    let sweeper = Sweeper::start(
        &t.env,
        t.env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
    );
    wait_for("the session departed", || !t.tm.sessions().contains(&id));
    assert_eq!(t.tm.calls_of("Depart", &id).len(), 1, "{:?}", t.tm.calls());
    t.env.wait("the lease is gone", |c| {
        c.get("leases", "telepresence-leases", &name).is_none()
    });
    let departed: Vec<Value> = t
        .env
        .cluster
        .list("events", Some("telepresence-leases"))
        .into_iter()
        .filter(|e| text(e, "/reason") == "DepartedTelepresenceSession")
        .collect();
    assert_eq!(departed.len(), 1, "{departed:#?}");
    assert!(
        text(&departed[0], "/message").contains("1 intercept(s) ended"),
        "{departed:#?}"
    );
    let (_, status) = sweeper.get("/status");
    assert!(
        status.contains("departed Telepresence 2 session"),
        "{status}"
    );
    assert_rbac_covers_the_sweepers_requests(&t.env);
}

#[test]
fn an_opt_out_or_a_dry_run_leaves_the_cluster_as_it_is() {
    let Some(env) = setup_sweep() else { return };
    let (mut agent, mut s, id, proxy) = followed_swap(&env);
    laptop_gone(&mut agent, &mut s, &env);
    let lease_before = heartbeat(&env, &id).expect("lease");

    env.kubectl_ok(&[
        "annotate",
        "deployment",
        "app",
        "telepolice.dev/sweep=false",
    ]);
    let mut opted = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
    );
    wait_for("the opt-out is said", || {
        opted.get("/status").1.contains("opted out")
    });
    let (_, status) = opted.get("/status");
    assert!(
        status.contains("deployment/app opted out (telepolice.dev/sweep: \"false\")"),
        "{status}"
    );
    opted.stop();

    // The same on the namespace.
    env.kubectl_ok(&["annotate", "deployment", "app", "telepolice.dev/sweep-"]);
    env.kubectl_ok(&[
        "annotate",
        "namespace",
        "default",
        "telepolice.dev/sweep=false",
    ]);
    let mut opted = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-a2",
        &["--grace-minutes", "0.05"],
    );
    wait_for("the namespace's opt-out is said", || {
        opted
            .get("/status")
            .1
            .contains("namespace/default opted out")
    });
    opted.stop();
    env.kubectl_ok(&["annotate", "namespace", "default", "telepolice.dev/sweep-"]);
    let dry = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-b",
        &["--grace-minutes", "0.05", "--dry-run"],
    );
    let lease_name = format!("telepolice-{id}");
    wait_for("the dry run's event", || {
        !events(&env, "Lease", &lease_name, "SweepDryRun").is_empty()
    });
    let e = &events(&env, "Lease", &lease_name, "SweepDryRun")[0];
    let m = text(e, "/message");
    assert!(
        m.contains("would scale deployment/app to 2") && m.contains(&format!("delete pod/{proxy}")),
        "{m}"
    );
    let (_, status) = dry.get("/status");
    assert!(
        status.contains("dry run: would scale deployment/app to 2"),
        "{status}"
    );
    // Nothing written: the original at 0, the proxy there, the lease still the laptop's.
    assert_eq!(replicas(&env, "app"), 0);
    assert!(env.cluster.get("pods", "default", &proxy).is_some());
    assert_eq!(
        writes_on(&env, &["app", &proxy]),
        [format!("patch pods {proxy}")],
        "only the laptop's facts"
    );
    let lease_now = heartbeat(&env, &id).expect("lease");
    assert_eq!(
        lease_now.pointer("/metadata/resourceVersion"),
        lease_before.pointer("/metadata/resourceVersion"),
        "the lease is untouched"
    );
}

#[test]
fn a_sweeper_killed_after_a_step_before_journaling_it_is_finished_once_by_the_next() {
    let Some(env) = setup_sweep() else { return };
    let (mut agent, mut s, id, proxy) = followed_swap(&env);
    laptop_gone(&mut agent, &mut s, &env);
    // The first sweeper restores the original and dies before journaling it; the second
    // deletes the proxy and dies before journaling that; the third finishes.
    for (name, failpoint) in [
        ("sweeper-a", "sweep.carried"),
        ("sweeper-b", "sweep.carried"),
    ] {
        let mut dying = Sweeper::start_with(
            &env,
            env.cluster.addr(),
            name,
            &["--grace-minutes", "0.05"],
            &[("TELEPOLICE_FAILPOINT", failpoint)],
        );
        wait_for("the sweeper dies at its failpoint", || dying.exited());
        assert!(
            dying.log().contains("failpoint sweep.carried: killing"),
            "{}",
            dying.log()
        );
        dying.kill();
    }
    let last = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-c",
        &["--grace-minutes", "0.05"],
    );
    env.wait("the heartbeat lease is gone", |c| {
        c.get("leases", "default", &format!("telepolice-{id}"))
            .is_none()
    });
    assert_eq!(replicas(&env, "app"), 2);
    assert_eq!(
        writes_on(&env, &["app", &proxy]),
        facts_then_repair(&proxy),
        "each write once across two sweepers killed mid-repair\n{}",
        last.log()
    );
}

#[test]
fn a_proxy_with_facts_but_no_heartbeat_is_repaired_from_its_facts() {
    let Some(env) = setup_sweep() else { return };
    let (mut agent, mut s, id, proxy) = followed_swap(&env);
    wait_facts(&env, &proxy);
    laptop_gone(&mut agent, &mut s, &env);
    // The heartbeat is lost (a person deleted it): the facts on the proxy are all there is.
    env.kubectl_ok(&["delete", "lease", &format!("telepolice-{id}")]);
    let sweeper = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
    );
    wait_restored(&env);
    env.wait("the proxy and the lease made for it are gone", |c| {
        c.get("pods", "default", &proxy)
            .is_none_or(|p| p.pointer("/metadata/deletionTimestamp").is_some())
            && c.get("leases", "default", &format!("telepolice-{id}"))
                .is_none()
    });
    assert_eq!(
        events(&env, "Pod", &proxy, "AdoptedTelepresenceProxy").len(),
        1
    );
    assert!(events(&env, "Pod", &proxy, "UnrecordedTelepresenceProxy").is_empty());
    assert_eq!(
        writes_on(&env, &["app", &proxy]),
        facts_then_repair(&proxy),
        "{}",
        sweeper.log()
    );
    assert_rbac_covers_the_sweepers_requests(&env);
}

#[test]
fn facts_pointing_at_another_namespace_are_left_for_a_person() {
    let Some(env) = setup_sweep() else { return };
    // Someone who may write Leases in `default` forges facts naming a Deployment at 0 in
    // another namespace.
    env.cluster
        .create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "victim"}}),
        )
        .expect("namespace");
    let db = env
        .cluster
        .create("deployments", "victim", &crate::util::deployment("db", 0))
        .expect("deployment");
    let id = "0123456789abcdef0123456789abcdef";
    let now = jiff::Timestamp::now().to_string();
    let facts = json!({
        "telepolice.dev/schema": "1", "telepolice.dev/session": id,
        "telepolice.dev/session-kind": "telepresence-0", "telepolice.dev/namespace": "victim",
        "telepolice.dev/mode": "swap-deployment=db", "telepolice.dev/original-kind": "Deployment",
        "telepolice.dev/original-name": "db", "telepolice.dev/original-uid": text(&db, "/metadata/uid"),
        "telepolice.dev/original-replicas": "5", "telepolice.dev/replicas-evidence": "observed",
    });
    let name = format!("telepolice-{id}");
    env.cluster
        .create(
            "leases",
            "default",
            &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "telepolice-agent"},
                             "annotations": facts},
                "spec": {"holderIdentity": "laptop/x@y/1", "leaseDurationSeconds": 40, "renewTime": now}}),
        )
        .expect("lease");
    let sweeper = Sweeper::start(
        &env,
        env.cluster.addr(),
        "sweeper-a",
        &["--grace-minutes", "0.05"],
    );
    wait_for("the warning on the lease", || {
        !events(&env, "Lease", &name, "TelepresenceSessionNeedsAttention").is_empty()
    });
    let m = text(
        &events(&env, "Lease", &name, "TelepresenceSessionNeedsAttention")[0],
        "/message",
    );
    assert!(
        m.contains("name namespace \"victim\" but were found in \"default\""),
        "{m}"
    );
    assert_eq!(
        env.cluster
            .get("deployments", "victim", "db")
            .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64)),
        Some(0),
        "nothing scaled\n{}",
        sweeper.log()
    );
    assert!(
        env.cluster
            .audit()
            .iter()
            .all(|e| e.namespace.as_deref() != Some("victim")
                || e.verb == "get"
                || e.verb == "list"
                || e.verb == "watch"),
        "nothing written in victim"
    );
}
