//! The Telepresence 0.x stand-in, against the emulator: each mode makes the objects the real
//! one makes, in its order; SIGTERM runs Telepresence's cleanup; SIGKILL leaves everything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Env, examples_dir, live_pods, python3_available, text};

pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/telepresence-standin/telepresence"
);

/// Sessions started so far by this test binary: each gets a report file of its own.
static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A running stand-in session.
pub struct Session {
    pub child: Child,
    /// Where the stand-in tells the test its session id and `tel-*` dir (the real
    /// Telepresence tells no one; the agent never reads this).
    pub report: PathBuf,
    pub work: PathBuf,
    /// Helpers seen so far, with their start times: stopped on drop if still the same
    /// processes (they outlive the stand-in when it is killed).
    helpers: std::cell::RefCell<Vec<(u32, String)>>,
}

impl Session {
    pub fn start(env: &Env, version: &str, args: &[&str]) -> Self {
        Self::start_program(env, Path::new(SCRIPT), version, args)
    }

    /// Starts the stand-in from `program` (a copy of it, for tests that watch one path).
    pub fn start_program(env: &Env, program: &Path, version: &str, args: &[&str]) -> Self {
        Self::start_with(env, program, version, args, &[])
    }

    /// Like [`Session::start_program`], with extra environment variables (set last).
    pub fn start_with(
        env: &Env,
        program: &Path,
        version: &str,
        args: &[&str],
        extra_env: &[(&str, String)],
    ) -> Self {
        // The session's own TMPDIR, which Telepresence 0.x ignores (its tel-* dir is always
        // in /tmp): every test runs as a user with libpam-tmpdir or a Mac would.
        let tmp = env.path("tmp");
        let work = env.path("work");
        let report = env.path(&format!(
            "standin-report-{}.json",
            SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        std::fs::create_dir_all(&work).expect("work dir");
        let helper = examples_dir().join("telepresence_helper");
        assert!(
            helper.is_file(),
            "{} is missing: `cargo test` builds the examples; run the tests through cargo",
            helper.display()
        );
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&work)
            .env("TMPDIR", &tmp)
            .env("TELEPRESENCE_STANDIN_REPORT", &report)
            .env("TELEPRESENCE_STANDIN_VERSION", version)
            .env("TELEPRESENCE_STANDIN_HELPER", &helper)
            .env("TELEPRESENCE_STANDIN_KUBECTL", &env.kubectl)
            .env_remove("TELEPRESENCE_USE_DEPLOYMENT")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(env.path("standin.out")).expect("out file"))
            .stderr(std::fs::File::create(env.path("standin.err")).expect("err file"));
        for (k, v) in env.envs() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the stand-in starts");
        Self {
            child,
            report,
            work,
            helpers: Default::default(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The session's `tel-*` dir, once the stand-in made it (it may be gone since).
    pub fn tel_dir(&self) -> Option<PathBuf> {
        let report: Value = serde_json::from_slice(&std::fs::read(&self.report).ok()?).ok()?;
        report["tmpdir"].as_str().map(PathBuf::from)
    }

    /// The session id, while the stand-in's `tel-*/session_id.txt` exists.
    pub fn session_id(&self) -> Option<String> {
        std::fs::read_to_string(self.tel_dir()?.join("session_id.txt"))
            .ok()
            .filter(|s| s.len() == 32)
    }

    pub fn wait_id(&mut self, env: &Env) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(id) = self.session_id() {
                assert!(
                    id.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                    "{id}"
                );
                return id;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the stand-in exited ({status}) before writing its session id:\n{}",
                    diagnostics(env)
                );
            }
            assert!(
                Instant::now() < end,
                "no session id after 20 s:\n{}",
                diagnostics(env)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the stand-in logged that setup is complete and its helpers run.
    pub fn wait_ready(&mut self, env: &Env, helpers: usize) -> Vec<(u32, Vec<String>)> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let log =
                std::fs::read_to_string(self.work.join("telepresence.log")).unwrap_or_default();
            let kids = helper_children(self.pid());
            self.remember(&kids);
            if log.contains("Setup complete") && kids.len() >= helpers {
                return kids;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the stand-in exited ({status}) during setup:\n{}",
                    diagnostics(env)
                );
            }
            assert!(
                Instant::now() < end,
                "setup not complete after 60 s ({kids:?}):\n{}",
                diagnostics(env)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    pub fn wait_exit(&mut self, env: &Env) {
        let end = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < end,
                "the stand-in did not exit within 60 s:\n{}",
                diagnostics(env)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("telepresence.log")).unwrap_or_default()
    }
}

impl Session {
    fn remember(&self, kids: &[(u32, Vec<String>)]) {
        let mut known = self.helpers.borrow_mut();
        for (pid, _) in kids {
            if let Some(start) = start_of(*pid)
                && !known.iter().any(|(p, _)| p == pid)
            {
                known.push((*pid, start));
            }
        }
    }
}

/// The start time field of `/proc/<pid>/stat`, to tell a process from a later one with its pid.
fn start_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)
        .map(str::to_string)
}

impl Drop for Session {
    fn drop(&mut self) {
        // Neither the stand-in nor its helpers may outlive the test, whatever happened.
        let kids = helper_children(self.pid());
        self.remember(&kids);
        // Started through a shell or a wrapper, the stand-in is not the child itself: its
        // pid is in its report (still the stand-in if its command line says so).
        let reported = std::fs::read(&self.report)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|r| r["pid"].as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != self.pid())
            .filter(|p| {
                argv_of(*p).is_some_and(|a| a.iter().any(|x| x.ends_with("/telepresence")))
            });
        if let Some(pid) = reported {
            let kids = helper_children(pid);
            self.remember(&kids);
            kill_pid(pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, start) in self.helpers.borrow().iter() {
            if start_of(*pid).as_ref() == Some(start) {
                kill_pid(*pid);
            }
        }
        // A killed session's tel-* dir stays in the shared /tmp unless a test's agent
        // removed it: this test's own, named by its report, goes.
        if let Some(dir) = self
            .tel_dir()
            .filter(|d| d.to_string_lossy().starts_with("/tmp/tel-"))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

pub fn diagnostics(env: &Env) -> String {
    let read = |n: &str| std::fs::read_to_string(env.path(n)).unwrap_or_default();
    format!(
        "--- stdout\n{}\n--- stderr\n{}\n--- telepresence.log\n{}",
        read("standin.out"),
        read("standin.err"),
        std::fs::read_to_string(env.path("work/telepresence.log")).unwrap_or_default()
    )
}

fn argv_of(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The stand-in's long-lived helpers: children whose argv is a `logs -f`, `port-forward`,
/// `ssh` or `sshfs` command line.
pub fn helper_children(parent: u32) -> Vec<(u32, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<(u32, Vec<String>)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ppid_of(*pid) == Some(parent))
        .filter_map(|pid| Some((pid, argv_of(pid)?)))
        .filter(|(_, argv)| {
            argv.iter().any(|a| a == "-f" || a == "port-forward")
                || matches!(argv.first().map(String::as_str), Some("ssh" | "sshfs"))
        })
        .collect();
    out.sort();
    out
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

pub fn replicas(env: &Env, name: &str) -> i64 {
    env.cluster
        .get("deployments", "default", name)
        .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64))
        .unwrap_or(-1)
}

pub fn label(v: &Value, key: &str) -> String {
    text(v, &format!("/metadata/labels/{key}"))
}

/// Index of the first audited request matching, for order checks.
pub fn position(env: &Env, verb: &str, resource: &str) -> usize {
    env.cluster
        .audit()
        .iter()
        .position(|e| e.verb == verb && e.resource == resource)
        .unwrap_or_else(|| panic!("no {verb} {resource} in the audit log"))
}

pub fn setup() -> Option<Env> {
    setup_with(Default::default())
}

/// Like [`setup`], with an emulator started with `opts`.
pub fn setup_with(opts: testcluster::Options) -> Option<Env> {
    if !python3_available() {
        return None;
    }
    let env = Env::with(opts)?;
    env.deployment("default", "app", 2);
    env.wait("two app pods", |c| {
        live_pods(c, "default", "app").len() == 2
    });
    Some(env)
}

#[test]
fn swap_0_109_makes_a_bare_pod_proxy_and_sigterm_restores_the_original() {
    let Some(env) = setup() else { return };
    let mut s = Session::start(
        &env,
        "0.109",
        &["--swap-deployment", "app", "--namespace", "default"],
    );
    let id = s.wait_id(&env);
    let helpers = s.wait_ready(&env, 4); // logs -f, port-forward, ssh, sshfs (vpn-tcp)
    let proxy = format!("app-{id}");
    let pod = env
        .cluster
        .get("pods", "default", &proxy)
        .expect("the proxy pod exists");
    assert_eq!(label(&pod, "telepresence"), id);
    assert_eq!(
        label(&pod, "app"),
        "app",
        "the pod carries the template labels"
    );
    assert!(pod.pointer("/metadata/ownerReferences").is_none());
    assert_eq!(text(&pod, "/spec/restartPolicy"), "Never");
    assert_eq!(
        text(&pod, "/spec/containers/0/image"),
        "datawire/telepresence-k8s:0.109"
    );
    assert_eq!(replicas(&env, "app"), 0);
    env.wait("only the proxy pod carries app=app", |c| {
        live_pods(c, "default", "app").len() == 1
    });
    assert!(position(&env, "create", "pods") < position(&env, "patch", "deployments/scale"));
    assert!(
        s.log().contains("\"replicas\": 2"),
        "0.106+ logs the original's JSON:\n{}",
        s.log()
    );
    let forward = helpers
        .iter()
        .find(|(_, a)| {
            a.get(3).is_some_and(|x| x == "--namespace") && a.contains(&"port-forward".to_string())
        })
        .expect("a port-forward helper");
    assert_eq!(
        forward.1[..5],
        [
            "kubectl",
            "--context",
            "testcluster",
            "--namespace",
            "default"
        ]
    );
    assert!(
        helpers
            .iter()
            .any(|(_, a)| a[0] == "ssh" && a.iter().any(|x| x.starts_with("-R9055:127.0.0.1:")))
    );
    assert!(
        helpers
            .iter()
            .any(|(_, a)| a.iter().any(|x| x == "logs") && a.contains(&proxy))
    );

    s.signal("TERM");
    s.wait_exit(&env);
    assert_eq!(replicas(&env, "app"), 2, "the original is scaled back");
    assert!(
        env.cluster.get("pods", "default", &proxy).is_none(),
        "the proxy pod is deleted"
    );
    assert!(position(&env, "patch", "deployments/scale") < position(&env, "delete", "pods"));
    assert!(s.session_id().is_none(), "the temp dir is removed");
    env.wait("two app pods again", |c| {
        live_pods(c, "default", "app").len() == 2
    });
    for (pid, argv) in helpers {
        let end = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "helper {pid} {argv:?} was stopped");
    }
}

#[test]
fn swap_0_105_makes_a_deployment_proxy() {
    let Some(env) = setup() else { return };
    let mut s = Session::start(
        &env,
        "0.105",
        &["--swap-deployment", "app", "--method", "inject-tcp"],
    );
    let id = s.wait_id(&env);
    s.wait_ready(&env, 3);
    let proxy = format!("app-{id}");
    let d = env
        .cluster
        .get("deployments", "default", &proxy)
        .expect("the proxy deployment exists");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(label(&d, "telepresence"), id);
    assert_eq!(text(&d, "/spec/selector/matchLabels/telepresence"), id);
    assert_eq!(text(&d, "/spec/template/metadata/labels/telepresence"), id);
    assert_eq!(
        text(&d, "/spec/template/spec/containers/0/image"),
        "datawire/telepresence-k8s:0.105"
    );
    assert_eq!(replicas(&env, "app"), 0);
    assert!(position(&env, "create", "deployments") < position(&env, "patch", "deployments/scale"));

    s.signal("TERM");
    s.wait_exit(&env);
    assert_eq!(replicas(&env, "app"), 2);
    assert!(env.cluster.get("deployments", "default", &proxy).is_none());
    env.wait("the proxy's pods are collected", |c| {
        c.list("pods", Some("default"))
            .iter()
            .all(|p| label(p, "telepresence").is_empty())
    });
}

#[test]
fn swap_names_are_cut_to_17_characters() {
    let Some(env) = setup() else { return };
    env.deployment("default", "a-very-long-deployment-name", 1);
    let mut s = Session::start(
        &env,
        "0.108",
        &[
            "--swap-deployment",
            "a-very-long-deployment-name:a-very-long-deployment-name",
        ],
    );
    let id = s.wait_id(&env);
    s.wait_ready(&env, 4);
    assert!(
        env.cluster
            .get("pods", "default", &format!("a-very-long-deplo-{id}"))
            .is_some()
    );
    s.signal("HUP");
    s.wait_exit(&env);
    assert_eq!(replicas(&env, "a-very-long-deployment-name"), 1);
}

#[test]
fn new_deployment_with_expose_0_109_makes_a_pod_and_a_service() {
    let Some(env) = setup() else { return };
    let mut s = Session::start(
        &env,
        "0.109",
        &["--new-deployment", "tp-shell", "--expose", "8080"],
    );
    let id = s.wait_id(&env);
    s.wait_ready(&env, 4);
    let pod = env
        .cluster
        .get("pods", "default", "tp-shell")
        .expect("the pod exists");
    assert_eq!(label(&pod, "telepresence"), id);
    assert_eq!(text(&pod, "/spec/containers/0/name"), "telepresence");
    let svc = env
        .cluster
        .get("services", "default", "tp-shell")
        .expect("the service exists");
    assert_eq!(label(&svc, "telepresence"), id);
    assert_eq!(text(&svc, "/spec/selector/telepresence"), id);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(replicas(&env, "app"), 2, "nothing else is touched");

    s.signal("INT");
    s.wait_exit(&env);
    assert!(env.cluster.get("services", "default", "tp-shell").is_none());
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", "tp-shell").is_none()
    });
}

#[test]
fn new_deployment_with_expose_0_105_makes_a_deployment_and_a_service() {
    let Some(env) = setup() else { return };
    let mut s = Session::start(
        &env,
        "0.105",
        &["--new-deployment", "tp-shell", "--expose", "8080"],
    );
    let id = s.wait_id(&env);
    s.wait_ready(&env, 4);
    let d = env
        .cluster
        .get("deployments", "default", "tp-shell")
        .expect("the deployment exists");
    assert_eq!(text(&d, "/spec/selector/matchLabels/telepresence"), id);
    let svc = env
        .cluster
        .get("services", "default", "tp-shell")
        .expect("the service exists");
    assert_eq!(label(&svc, "telepresence"), id);

    s.signal("TERM");
    s.wait_exit(&env);
    assert!(
        s.log().contains(&format!("--selector=telepresence={id}")),
        "{}",
        s.log()
    );
    assert!(
        env.cluster
            .get("deployments", "default", "tp-shell")
            .is_none()
    );
    assert!(env.cluster.get("services", "default", "tp-shell").is_none());
}

#[test]
fn sigkill_leaves_the_proxy_the_scaled_down_original_and_the_helpers() {
    let Some(env) = setup() else { return };
    let mut s = Session::start(&env, "0.109", &["--swap-deployment", "app"]);
    let id = s.wait_id(&env);
    let helpers = s.wait_ready(&env, 4);
    s.signal("KILL");
    s.wait_exit(&env);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        env.cluster
            .get("pods", "default", &format!("app-{id}"))
            .is_some(),
        "the proxy stays"
    );
    assert_eq!(replicas(&env, "app"), 0, "the original stays at 0");
    assert_eq!(
        s.session_id().as_deref(),
        Some(id.as_str()),
        "the temp dir stays"
    );
    for (pid, argv) in &helpers {
        assert!(alive(*pid), "helper {pid} {argv:?} outlives the stand-in");
        kill_pid(*pid);
    }
}
