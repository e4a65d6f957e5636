//! The real `telepolice-agent` binary against the emulator and the Telepresence stand-in:
//! sessions killed with SIGKILL are repaired, sessions that end normally are left alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

static AGENTS: AtomicUsize = AtomicUsize::new(0);
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::standin::{SCRIPT, Session, alive, label, replicas, setup};
use crate::util::{Env, live_pods, text};

/// A running agent with its own config, state, runtime and log dirs.
pub(crate) struct Agent {
    child: Option<Child>,
    envs: Vec<(&'static str, PathBuf)>,
    stderr: PathBuf,
}

impl Agent {
    /// Copies the stand-in to a path of this test's own, and starts an agent that watches
    /// only that path.
    pub(crate) fn start(env: &Env, extra_config: &str) -> (Self, PathBuf) {
        let program = Self::program(env);
        (Self::start_with(env, &program, extra_config), program)
    }

    /// This test's own copy of the stand-in.
    pub(crate) fn program(env: &Env) -> PathBuf {
        let bin = env.path("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let program = bin.join("telepresence");
        if !program.exists() {
            std::fs::copy(SCRIPT, &program).expect("the stand-in is copied");
        }
        program
    }

    /// Starts an agent (with this test's dirs: a restarted agent finds its journal).
    pub(crate) fn start_with(env: &Env, program: &Path, extra_config: &str) -> Self {
        Self::start_with_env(env, program, extra_config, &[])
    }

    /// Like [`Agent::start_with`], with extra environment variables for the agent.
    pub(crate) fn start_with_env(
        env: &Env,
        program: &Path,
        extra_config: &str,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let stderr = env.path(&format!(
            "agent-{}.err",
            AGENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        write_config(env, program, extra_config);
        let envs = agent_envs(env);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
        cmd.arg("run")
            .env("TELEPOLICE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the agent starts");
        let agent = Self {
            child: Some(child),
            envs,
            stderr,
        };
        agent.wait_log("watching Telepresence programs");
        agent
    }

    /// Stops the agent gracefully and waits for it.
    pub(crate) fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let status = c.wait().expect("the agent exits");
            assert!(
                status.success(),
                "a graceful stop exits 0: {status}\n{}",
                self.log()
            );
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends the agent SIGHUP (a reload).
    pub(crate) fn hangup(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    pub(crate) fn wait_log(&self, needle: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < end,
                "the agent never logged {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `telepolice-agent status --json -v` (every session).
    pub(crate) fn sessions(&self) -> Vec<Value> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
        cmd.args(["history", "--json"]);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("history runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["daemon_running"], true);
        v["sessions"].as_array().cloned().unwrap_or_default()
    }

    pub(crate) fn wait_state(&self, state: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.sessions();
            if let Some(found) = s.iter().find(|r| r["state"] == state) {
                return found.clone();
            }
            assert!(
                Instant::now() < end,
                "no session reached {state}: {s:#?}\nagent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `status --json`'s repairs waiting for their cluster, by session key.
    fn waiting(&self) -> serde_json::Map<String, Value> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
        cmd.args(["status", "--json"]);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("status runs");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["waiting"].as_object().cloned().unwrap_or_default()
    }

    pub(crate) fn status_table(&self) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
        cmd.arg("status");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        String::from_utf8_lossy(&cmd.output().expect("status runs").stdout).into_owned()
    }
}

impl Agent {
    /// Waits until the agent died of SIGKILL at `failpoint` (as `TELEPOLICE_FAILPOINT`
    /// named it); fails the test if it exits otherwise or not within 30 s.
    pub(crate) fn wait_killed_at(&mut self, failpoint: &str) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("the agent was running");
        let end = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= end {
                crate::util::stop_child(child);
                panic!(
                    "the agent did not die at failpoint {failpoint} within 30 s:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.signal(),
            Some(9),
            "the agent dies of SIGKILL at {failpoint}: {status}\n{}",
            self.log()
        );
        let said = format!("failpoint {failpoint}: killing the agent");
        assert!(
            self.log().contains(&said),
            "the agent names the failpoint ({said:?}):\n{}",
            self.log()
        );
    }
}

/// Writes the agents' config file for this test: it watches only `program`, with short
/// grace and scan intervals (unless `extra_config` sets one), plus `extra_config` (TOML lines).
pub(crate) fn write_config(env: &Env, program: &Path, extra_config: &str) {
    // No desktop notifications from the tests unless a test asks for them.
    let quiet = if extra_config.contains("notifications") {
        ""
    } else {
        "notifications = false\n"
    };
    let scan = if extra_config.contains("scan_interval_secs") {
        ""
    } else {
        "scan_interval_secs = 5\n"
    };
    std::fs::write(
        env.path("agent-config.toml"),
        format!(
            "telepresence_programs = [{:?}]\ngrace_period_secs = 0.5\n{scan}{quiet}{extra_config}\n",
            program.display().to_string()
        ),
    )
    .expect("config written");
}

/// The variables that give an agent (or another command of the binary) this test's own
/// config file, state, runtime and log dirs, and this test's sessions only (an agent
/// follows a session wherever its program lives: the mark keeps parallel tests apart). Not
/// a temp dir: it looks for Telepresence's tel-* dirs in /tmp, as it does installed, and
/// must tell this test's from the others'.
pub(crate) fn agent_envs(env: &Env) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("TELEPOLICE_TEST_ENV", env.dir.path().to_path_buf()),
        ("TELEPOLICE_CONFIG", env.path("agent-config.toml")),
        ("TELEPOLICE_STATE_DIR", env.path("agent-state")),
        ("TELEPOLICE_RUNTIME_DIR", env.path("agent-run")),
        ("TELEPOLICE_LOG_DIR", env.path("agent-logs")),
    ]
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::util::stop_child(c);
        }
        // A failing test's temp dir goes with it: keep what the agent said in the output.
        if std::thread::panicking() {
            eprintln!(
                "--- the agent's log ({}):\n{}",
                self.stderr.display(),
                self.log()
            );
        }
    }
}

/// Requests the agent made (kube-rs sends no User-Agent; kubectl does) that change things.
pub(crate) fn agent_writes(env: &Env) -> Vec<String> {
    env.cluster
        .audit()
        .into_iter()
        .filter(|e| {
            e.user_agent.is_empty()
                && matches!(
                    e.verb.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                )
        })
        .map(|e| format!("{} {} {}", e.verb, e.resource, e.name.unwrap_or_default()))
        .collect()
}

pub(crate) fn actions(rec: &Value) -> Vec<String> {
    rec["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{} -> {}", text(x, "/action"), text(x, "/outcome")))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a stand-in session from `program` and waits until the agent follows it: its
/// session id known, its `helpers` running, and its record `Active`.
pub(crate) fn followed(
    env: &Env,
    agent: &Agent,
    program: &Path,
    version: &str,
    args: &[&str],
    helpers: usize,
) -> (Session, String, Value) {
    let mut s = Session::start_program(env, program, version, args);
    let id = s.wait_id(env);
    s.wait_ready(env, helpers);
    let rec = agent.wait_state("Active");
    (s, id, rec)
}

/// The usual session: a 0.109 swap of `app` (a Pod proxy and four helpers), followed.
pub(crate) fn swap_followed(env: &Env, agent: &Agent, program: &Path) -> (Session, String, Value) {
    followed(
        env,
        agent,
        program,
        "0.109",
        &["--swap-deployment", "app"],
        4,
    )
}

#[test]
fn a_killed_pod_proxy_swap_is_repaired() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let mut s = Session::start_program(&env, &program, "0.109", &["--swap-deployment", "app"]);
    let id = s.wait_id(&env);
    let helpers = s.wait_ready(&env, 4);
    let rec = agent.wait_state("Active");
    assert_eq!(rec["original"]["replicas"], 2, "{rec:#}");
    assert_eq!(rec["original"]["source"], "Observed");
    assert_eq!(rec["telepresence_id"], id.as_str());
    assert_eq!(replicas(&env, "app"), 0);

    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("Cleaned");
    assert_eq!(
        replicas(&env, "app"),
        2,
        "the original is back: {:#?}",
        actions(&rec)
    );
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
    env.wait("two app pods run again", |c| {
        live_pods(c, "default", "app").len() == 2
    });
    let writes = agent_writes(&env);
    assert_eq!(
        writes,
        [
            "patch deployments app".to_string(),
            format!("delete pods app-{id}"),
        ]
    );
    for (pid, argv) in helpers {
        wait_for(&format!("helper {pid} {argv:?} stops"), || !alive(pid));
    }
    assert!(
        s.session_id().is_none(),
        "the session's temp dir is removed"
    );
    let table = agent.status_table();
    assert!(table.contains("no live sessions"), "{table}");
}

#[test]
fn a_killed_deployment_proxy_swap_is_repaired() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, id, _) = followed(
        &env,
        &agent,
        &program,
        "0.105",
        &["--swap-deployment", "app", "--method", "inject-tcp"],
        3,
    );
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2, "{:#?}", actions(&rec));
    assert!(
        env.cluster
            .get("deployments", "default", &format!("app-{id}"))
            .is_none()
    );
    env.wait("the proxy's pods are collected", |c| {
        c.list("pods", Some("default"))
            .iter()
            .all(|p| label(p, "telepresence").is_empty())
    });
    assert_eq!(
        agent_writes(&env),
        [
            "patch deployments app".to_string(),
            format!("delete deployments app-{id}"),
        ]
    );
}

#[test]
fn a_killed_new_deployment_with_expose_is_repaired() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, _, rec) = followed(
        &env,
        &agent,
        &program,
        "0.109",
        &["--new-deployment", "tp-shell", "--expose", "8080"],
        4,
    );
    assert!(rec["original"].is_null(), "{rec:#}");
    wait_for("both proxies are recorded", || {
        agent
            .sessions()
            .iter()
            .any(|r| r["proxies"].as_array().map_or(0, Vec::len) == 2)
    });
    s.signal("KILL");
    s.wait_exit(&env);
    agent.wait_state("Cleaned");
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", "tp-shell").is_none()
    });
    assert!(env.cluster.get("services", "default", "tp-shell").is_none());
    assert_eq!(replicas(&env, "app"), 2, "nothing else touched");
}

#[test]
fn a_session_that_ends_normally_is_left_alone() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, _, _) = swap_followed(&env, &agent, &program);
    s.signal("INT");
    s.wait_exit(&env);
    let rec = agent.wait_state("Ended");
    assert_eq!(replicas(&env, "app"), 2);
    assert_eq!(
        agent_writes(&env),
        Vec::<String>::new(),
        "{:#?}",
        actions(&rec)
    );
}

#[test]
fn a_workload_rescaled_during_the_session_is_not_overwritten() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, id, _) = swap_followed(&env, &agent, &program);
    env.kubectl_ok(&["scale", "deployment", "app", "--replicas=5"]);
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("NeedsAttention");
    assert_eq!(replicas(&env, "app"), 5, "a person's change stands");
    let why = rec["history"]
        .as_array()
        .and_then(|h| h.last())
        .map(|t| text(t, "/reason"))
        .unwrap_or_default();
    assert!(
        why.contains("someone rescaled it") && why.contains("kubectl"),
        "{why}"
    );
    env.wait("the proxy is still removed", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
}

#[test]
fn a_second_agent_is_refused() {
    let Some(env) = Env::new() else { return };
    let (agent, _program) = Agent::start(&env, "");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
    cmd.arg("run");
    for (k, v) in &agent.envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_broken_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "grace_period_secs = 1\nsurprise = true\n").expect("written");
    let out = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"))
        .arg("run")
        .env("TELEPOLICE_CONFIG", &config)
        .env("TELEPOLICE_STATE_DIR", dir.path().join("state"))
        .env("TELEPOLICE_RUNTIME_DIR", dir.path().join("run"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&config.display().to_string())
            && err.contains("surprise")
            && err.contains("line 2"),
        "{err}"
    );
}

fn run_cli(agent_envs: &[(&'static str, PathBuf)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
    cmd.args(args);
    for (k, v) in agent_envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the agent's CLI runs")
}

#[test]
fn an_agent_started_late_takes_the_original_count_from_the_log() {
    let Some(env) = setup() else { return };
    let program = Agent::program(&env);
    let mut s = Session::start_program(&env, &program, "0.109", &["--swap-deployment", "app"]);
    let id = s.wait_id(&env);
    s.wait_ready(&env, 4);
    assert_eq!(
        replicas(&env, "app"),
        0,
        "the session already scaled the original down"
    );
    let agent = Agent::start_with(&env, &program, "");
    let rec = agent.wait_state("Active");
    assert_eq!(rec["original"]["replicas"], 2, "{rec:#}");
    assert_eq!(rec["original"]["source"], "Log");
    s.signal("KILL");
    s.wait_exit(&env);
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
}

#[test]
fn an_unknown_original_count_needs_a_person_and_cleanup_takes_it() {
    let Some(env) = setup() else { return };
    let program = Agent::program(&env);
    // 0.105 without --verbose logs no JSON of the original, and the agent starts late.
    let mut s = Session::start_program(
        &env,
        &program,
        "0.105",
        &["--swap-deployment", "app", "--method", "inject-tcp"],
    );
    let id = s.wait_id(&env);
    s.wait_ready(&env, 3);
    let agent = Agent::start_with(&env, &program, "");
    let rec = agent.wait_state("Active");
    assert_eq!(rec["original"]["source"], "Uncertain", "{rec:#}");
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("NeedsAttention");
    let why = rec["history"]
        .as_array()
        .and_then(|h| h.last())
        .map(|t| text(t, "/reason"))
        .unwrap_or_default();
    assert!(
        why.contains("original count is unknown") && why.contains("kubectl"),
        "{why}"
    );
    assert_eq!(replicas(&env, "app"), 0, "the agent does not guess");
    env.wait("the proxy deployment is still removed", |c| {
        c.get("deployments", "default", &format!("app-{id}"))
            .is_none()
    });

    let key = text(&rec, "/key");
    // `cleanup`, the command's older name, still works.
    let dry = run_cli(
        &agent.envs,
        &["cleanup", &key, "--replicas", "2", "--dry-run"],
    );
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("dry-run"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert_eq!(replicas(&env, "app"), 0, "a dry run changes nothing");
    let out = run_cli(&agent.envs, &["repair", &key, "--replicas", "2"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replicas(&env, "app"), 2);
    let missing = run_cli(&agent.envs, &["repair", "no-such-session"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no session"));
}

#[test]
fn a_restarted_agent_finishes_the_work() {
    let Some(env) = setup() else { return };
    let program = Agent::program(&env);
    let agent = Agent::start_with(&env, &program, "");
    let (mut s, id, _) = swap_followed(&env, &agent, &program);
    agent.stop();
    // Restarted mid-session: it resumes following the live session.
    let agent = Agent::start_with(&env, &program, "");
    agent.wait_log("resuming session from the journal");
    agent.stop();
    // The session dies while no agent runs; the next one repairs it.
    s.signal("KILL");
    s.wait_exit(&env);
    let agent = Agent::start_with(&env, &program, "");
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
    assert_eq!(
        agent_writes(&env).len(),
        2,
        "each repair step ran once: {:?}",
        agent_writes(&env)
    );
}

/// A second cluster, context "two", with a namespace `team` and a deployment `app` of 3
/// replicas; and a KUBECONFIG that names both clusters.
fn second_cluster(env: &Env) -> (testcluster::TestCluster, String) {
    let two = testcluster::TestCluster::start(testcluster::Options {
        context: "two".to_string(),
        ..Default::default()
    })
    .expect("a second cluster");
    two.create(
        "namespaces",
        "",
        &serde_json::json!({"metadata": {"name": "team"}}),
    )
    .expect("namespace");
    two.create("deployments", "team", &crate::util::deployment("app", 3))
        .expect("deployment");
    let kc2 = env.path("kubeconfig-two");
    two.write_kubeconfig(&kc2).expect("kubeconfig");
    let both = format!("{}:{}", env.kubeconfig.display(), kc2.display());
    (two, both)
}

/// Two swap sessions of `app` from `program`, one in each cluster of `both`: (session,
/// Telepresence id) in the first, then the second's own dir (its log and temp dir), session
/// and id.
fn two_sessions(
    env: &Env,
    program: &Path,
    both: &str,
) -> ((Session, String), (Env, Session, String)) {
    let mut a = Session::start_with(
        env,
        program,
        "0.109",
        &["--swap-deployment", "app", "--context", "testcluster"],
        &[("KUBECONFIG", both.to_string())],
    );
    let id_a = a.wait_id(env);
    a.wait_ready(env, 4);
    let env_b = crate::util::Env::without_kubectl_check(
        testcluster::Options::default(),
        env.kubectl.clone(),
    );
    let mut b = Session::start_with(
        &env_b,
        program,
        "0.109",
        &[
            "--swap-deployment",
            "app",
            "--context",
            "two",
            "--namespace",
            "team",
        ],
        &[
            ("KUBECONFIG", both.to_string()),
            // The first env's agent follows it (the mark of env_b's own dir would hide it).
            ("TELEPOLICE_TEST_ENV", env.dir.path().display().to_string()),
        ],
    );
    let id_b = b.wait_id(&env_b);
    b.wait_ready(&env_b, 4);
    ((a, id_a), (env_b, b, id_b))
}

/// The record of the session with Telepresence id `id`, if any.
fn session_with_id(agent: &Agent, id: &str) -> Option<Value> {
    agent
        .sessions()
        .into_iter()
        .find(|r| r["telepresence_id"] == id)
}

#[test]
fn only_the_killed_one_of_two_sessions_in_two_clusters_is_repaired() {
    let Some(env) = setup() else { return };
    let (two, both) = second_cluster(&env);
    let program = Agent::program(&env);
    let agent = Agent::start_with(&env, &program, "");
    let ((mut a, id_a), (env_b, mut b, id_b)) = two_sessions(&env, &program, &both);
    wait_for("both sessions are active", || {
        agent
            .sessions()
            .iter()
            .filter(|r| r["state"] == "Active")
            .count()
            == 2
    });
    assert!(two.get("pods", "team", &format!("app-{id_b}")).is_some());
    a.signal("KILL");
    a.wait_exit(&env);
    let rec = agent.wait_state("Cleaned");
    assert_eq!(rec["telepresence_id"], id_a.as_str());
    assert_eq!(rec["cluster"]["context"], "testcluster");
    assert_eq!(replicas(&env, "app"), 2);
    assert_eq!(
        two.get("deployments", "team", "app")
            .and_then(|d| d.pointer("/spec/replicas").cloned()),
        Some(0.into()),
        "the other session's cluster is untouched"
    );
    assert!(two.get("pods", "team", &format!("app-{id_b}")).is_some());
    let other = session_with_id(&agent, &id_b).expect("the other session");
    assert_eq!(other["state"], "Active");
    assert_eq!(other["cluster"]["server"], two.url().as_str());
    b.signal("TERM");
    b.wait_exit(&env_b);
}

#[test]
fn one_unreachable_cluster_does_not_delay_the_repair_in_another() {
    let Some(env) = setup() else { return };
    let (two, both) = second_cluster(&env);
    let program = Agent::program(&env);
    let agent = Agent::start_with(&env, &program, "");
    let ((mut a, id_a), (env_b, mut b, id_b)) = two_sessions(&env, &program, &both);
    wait_for("both sessions are active", || {
        [&id_a, &id_b]
            .iter()
            .all(|id| session_with_id(&agent, id).is_some_and(|r| r["state"] == "Active"))
    });
    assert!(env.cluster.set_reachable(false));
    a.signal("KILL");
    b.signal("KILL");
    a.wait_exit(&env);
    b.wait_exit(&env_b);
    wait_for("the session in the reachable cluster is repaired", || {
        session_with_id(&agent, &id_b).is_some_and(|r| r["state"] == "Cleaned")
    });
    assert_eq!(
        two.get("deployments", "team", "app")
            .and_then(|d| d.pointer("/spec/replicas").cloned()),
        Some(3.into())
    );
    assert!(
        two.wait_until(Duration::from_secs(20), |c| c
            .get("pods", "team", &format!("app-{id_b}"))
            .is_none()),
        "the proxy in the reachable cluster is deleted"
    );
    let stuck = session_with_id(&agent, &id_a).expect("the first session");
    assert_eq!(stuck["state"], "Orphaned", "{stuck:#}");
    assert!(
        agent.waiting().contains_key(text(&stuck, "/key").as_str()),
        "the unreachable one waits"
    );
    assert!(env.cluster.set_reachable(true));
    wait_for(
        "the first session is repaired once its cluster is back",
        || session_with_id(&agent, &id_a).is_some_and(|r| r["state"] == "Cleaned"),
    );
    assert_eq!(replicas(&env, "app"), 2);
}

/// A followed swap session killed while its cluster is unreachable; returns once its
/// repair has failed once, with the session's key.
fn killed_while_unreachable(env: &Env, agent: &Agent, program: &Path) -> String {
    let (mut s, _, rec) = swap_followed(env, agent, program);
    assert!(env.cluster.set_reachable(false));
    s.signal("KILL");
    s.wait_exit(env);
    let key = text(&rec, "/key");
    wait_for("the repair has failed once", || {
        agent
            .waiting()
            .get(key.as_str())
            .is_some_and(|w| w["tries"] == 1)
    });
    key
}

#[test]
fn a_resume_makes_a_waiting_repair_try_again_at_once() {
    let Some(env) = setup() else { return };
    let suspended = env.path("suspended-secs");
    std::fs::write(&suspended, "0").expect("written");
    let program = Agent::program(&env);
    let agent = Agent::start_with_env(
        &env,
        &program,
        "",
        &[
            (
                "TELEPOLICE_TEST_SUSPEND_FILE",
                &suspended.display().to_string(),
            ),
            // Ten minutes between tries and no knocking: only a wake can make the next one
            // happen soon.
            ("TELEPOLICE_TEST_RETRY_SECS", "600"),
            ("TELEPOLICE_TEST_NO_KNOCK", "1"),
        ],
    );
    killed_while_unreachable(&env, &agent, &program);
    assert!(env.cluster.set_reachable(true));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replicas(&env, "app"), 0, "no try before the wake");
    assert!(!agent.log().contains("asleep"), "{}", agent.log());
    // The clocks now say the machine slept for 45 s.
    std::fs::write(&suspended, "45").expect("written");
    agent.wait_log("the machine was asleep");
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
    assert!(
        agent
            .log()
            .contains("the machine woke up: trying the unreachable clusters again now"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_waiting_repair_runs_as_soon_as_its_server_takes_connections_again() {
    let Some(env) = setup() else { return };
    let program = Agent::program(&env);
    // Ten minutes between tries: only a knock answered can make the next one happen soon.
    let agent = Agent::start_with_env(&env, &program, "", &[("TELEPOLICE_TEST_RETRY_SECS", "600")]);
    let key = killed_while_unreachable(&env, &agent, &program);
    // Refused knocks meanwhile: still one try.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.waiting()[key.as_str()]["tries"], 1, "no full try yet");
    assert!(env.cluster.set_reachable(true));
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
    assert!(!agent.log().contains("asleep"), "{}", agent.log());

    // `history` with filters finds it, and only where they say.
    let found = |args: &[&str]| {
        let out = run_cli(&agent.envs, &[&["history", "--json"][..], args].concat());
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["sessions"]
            .as_array()
            .map(|a| a.iter().map(|r| text(r, "/key")).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        found(&["--state", "cleaned", "--since", "1h"]),
        [key.as_str()]
    );
    assert_eq!(found(&["--session", &key]), [key.as_str()]);
    assert!(found(&["--state", "Active"]).is_empty());
    let bad = run_cli(&agent.envs, &["history", "--state", "gone"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[test]
fn saving_the_config_or_sighup_reloads_it_and_a_broken_one_leaves_the_running_one_in_place() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let config = env.path("agent-config.toml");
    let written = std::fs::read_to_string(&config).expect("the agent's config");
    std::fs::write(&config, format!("{written}grace_period = 3\n")).expect("written");
    agent.wait_log("the config file changed: keeping the running configuration");
    assert!(
        agent.log().contains("grace_period") && agent.log().contains(&*config.to_string_lossy()),
        "the message names the key and the file:\n{}",
        agent.log()
    );
    agent.hangup();
    agent.wait_log("SIGHUP: keeping the running configuration");
    std::fs::write(&config, format!("{written}dry_run = true\n")).expect("written");
    agent.wait_log("the config file changed: configuration reloaded");
    let (mut s, _, _) = swap_followed(&env, &agent, &program);
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("NeedsAttention");
    assert!(last_reason(&rec).contains("dry run"), "{rec:#}");
    assert_eq!(replicas(&env, "app"), 0, "the reloaded dry_run holds");
    agent.stop();
}

#[test]
fn repairs_are_announced_on_the_desktop_unless_turned_off() {
    let Some(env) = setup() else { return };
    // A stand-in `notify-send` that writes down its arguments.
    let bin = env.path("fake-bin");
    std::fs::create_dir_all(&bin).expect("dir");
    let said = env.path("notifications.txt");
    let fake = bin.join("notify-send");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s|' \"$@\" >> '{}'\necho >> '{}'\n",
            said.display(),
            said.display()
        ),
    )
    .expect("written");
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let program = Agent::program(&env);
    let agent = Agent::start_with_env(&env, &program, "notifications = true", &[("PATH", &path)]);
    let (mut s, id, _) = swap_followed(&env, &agent, &program);
    s.signal("KILL");
    s.wait_exit(&env);
    agent.wait_state("Cleaned");
    wait_for("the repair is announced", || {
        std::fs::read_to_string(&said).is_ok_and(|t| t.contains("repaired"))
    });
    let text = std::fs::read_to_string(&said).expect("notifications");
    assert!(
        text.contains("Telepresence session repaired: swap deployment/app")
            && text.contains(&format!(
                "testcluster/default: scale deployment/app to 2; delete pod/app-{id}|"
            ))
            && text.contains("--urgency=normal"),
        "{text}"
    );

    // Turned off: the next repair says nothing.
    let config = env.path("agent-config.toml");
    let written = std::fs::read_to_string(&config).expect("the agent's config");
    std::fs::write(
        &config,
        written.replace("notifications = true", "notifications = false"),
    )
    .expect("written");
    agent.wait_log("configuration reloaded");
    let (mut s, _, rec) = swap_followed(&env, &agent, &program);
    s.signal("KILL");
    s.wait_exit(&env);
    wait_for("the second session is repaired", || {
        agent
            .sessions()
            .iter()
            .any(|r| r["key"] == rec["key"] && r["state"] == "Cleaned")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&said).expect("notifications"),
        text,
        "nothing more was announced"
    );
}

#[test]
fn json_logs_are_one_object_per_line_on_stderr_and_in_the_file() {
    let Some(env) = setup() else { return };
    let logs = env.path("json-logs");
    let err = env.path("json.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"))
        .args(["run", "--json-logs"])
        .env("TELEPOLICE_CONFIG", env.path("none.toml"))
        .env("TELEPOLICE_STATE_DIR", env.path("json-state"))
        .env("TELEPOLICE_RUNTIME_DIR", env.path("json-run"))
        .env("TELEPOLICE_LOG_DIR", &logs)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("the agent starts");
    wait_for("the agent has started", || {
        std::fs::read_to_string(&err).is_ok_and(|t| t.contains("telepolice-agent started"))
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
    let file = std::fs::read_dir(&logs)
        .expect("log dir")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    for (what, text) in [
        ("stderr", std::fs::read_to_string(&err).unwrap_or_default()),
        ("file", file),
    ] {
        assert!(text.contains("telepolice-agent started"), "{what}: {text}");
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{what}: {line}"
            );
        }
    }
}

#[test]
fn when_the_shell_dies_telepresence_is_asked_to_clean_up() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let script = format!("'{}' --swap-deployment app; echo done", program.display());
    let mut shell =
        Session::start_with(&env, Path::new("/bin/bash"), "0.109", &["-c", &script], &[]);
    shell.wait_id(&env);
    agent.wait_state("Active");
    // A terminal window closing: the shell gets SIGHUP and dies; Telepresence lives on.
    shell.signal("HUP");
    shell.wait_exit(&env);
    let rec = agent.wait_state("Ended");
    assert!(
        actions(&rec)
            .iter()
            .any(|a| a.starts_with("SIGTERM to Telepresence (its shell died) -> done")),
        "{:#?}",
        actions(&rec)
    );
    assert_eq!(
        replicas(&env, "app"),
        2,
        "Telepresence's own cleanup restored it"
    );
    assert_eq!(agent_writes(&env), Vec::<String>::new());
}

#[test]
fn dry_run_plans_without_acting() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "dry_run = true");
    let (mut s, _, _) = swap_followed(&env, &agent, &program);
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("NeedsAttention");
    let acts = actions(&rec);
    assert!(
        acts.iter()
            .any(|a| a.starts_with("scale deployment/app to 2") && a.contains("dry-run")),
        "{acts:#?}"
    );
    assert_eq!(agent_writes(&env), Vec::<String>::new());
    assert_eq!(replicas(&env, "app"), 0);
}

#[test]
fn status_asks_the_daemon_over_a_private_socket_and_reads_the_journal_without_one() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let socket = env.path("agent-run").join("telepolice-agent.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let dir_mode = std::fs::metadata(env.path("agent-run"))
        .expect("runtime dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "{dir_mode:o}");
    let (mut s, _, _) = swap_followed(&env, &agent, &program);
    let table = agent.status_table();
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("SESSION")
            && header.contains("STATE")
            && header.contains("CONTEXT/NAMESPACE"),
        "{table}"
    );
    assert!(
        table.contains("Active")
            && table.contains("swap deployment/app")
            && table.contains("testcluster/default"),
        "{table}"
    );
    let envs = agent.envs.clone();
    agent.stop();
    let out = run_cli(&envs, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not running") && text.contains("Active"),
        "{text}"
    );
    s.signal("INT");
    s.wait_exit(&env);
}

#[test]
fn exec_credential_plugins_run_with_the_sessions_path() {
    let Some(env) = setup() else { return };
    // A credential plugin only the session's PATH can find.
    let plugins = env.path("session-bin");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let plugin = plugins.join("fake-cloud-auth");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{}\"}}}}'\n",
            env.cluster.token()
        ),
    )
    .expect("plugin written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("executable");
    let ca = std::fs::read_to_string(&env.kubeconfig)
        .expect("kubeconfig")
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("certificate-authority-data: ")
                .map(str::to_string)
        })
        .expect("CA data");
    let kubeconfig = env.path("exec-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: fake-cloud-auth\n      interactiveMode: Never\ncontexts:\n- name: cloud\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: cloud\n",
            env.cluster.url()
        ),
    )
    .expect("kubeconfig written");
    let (agent, program) = Agent::start(&env, "");
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut s = Session::start_with(
        &env,
        &program,
        "0.109",
        &["--swap-deployment", "app"],
        &[
            ("KUBECONFIG", kubeconfig.display().to_string()),
            ("PATH", path),
        ],
    );
    s.wait_id(&env);
    s.wait_ready(&env, 4);
    let rec = agent.wait_state("Active");
    assert_eq!(rec["cluster"]["context"], "cloud");
    assert_eq!(rec["original"]["replicas"], 2);
    s.signal("KILL");
    s.wait_exit(&env);
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
}

#[test]
fn a_late_agent_uses_its_own_earlier_observation_before_the_log() {
    let Some(env) = setup() else { return };
    let program = Agent::program(&env);
    let agent = Agent::start_with(&env, &program, "");
    // A first session, seen from its start: the agent observes the original at 2.
    let (mut first, _, _) = followed(
        &env,
        &agent,
        &program,
        "0.105",
        &["--swap-deployment", "app", "--method", "inject-tcp"],
        3,
    );
    first.signal("INT");
    first.wait_exit(&env);
    agent.wait_state("Ended");
    agent.stop();
    // A second one (0.105 logs no JSON of the original) starts while no agent runs.
    std::fs::remove_file(env.path("work/telepresence.log")).expect("old log removed");
    let mut second = Session::start_program(
        &env,
        &program,
        "0.105",
        &["--swap-deployment", "app", "--method", "inject-tcp"],
    );
    second.wait_id(&env);
    second.wait_ready(&env, 3);
    let agent = Agent::start_with(&env, &program, "");
    let rec = agent.wait_state("Active");
    assert_eq!(rec["original"]["source"], "Earlier", "{rec:#}");
    assert_eq!(rec["original"]["replicas"], 2);
    second.signal("KILL");
    second.wait_exit(&env);
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
}

#[test]
fn a_killed_deployment_proxy_of_a_newer_version_with_use_deployment_is_repaired() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let mut s = Session::start_with(
        &env,
        &program,
        "0.109",
        &["--swap-deployment", "app", "--method", "inject-tcp"],
        &[("TELEPRESENCE_USE_DEPLOYMENT", "1".to_string())],
    );
    let id = s.wait_id(&env);
    s.wait_ready(&env, 3);
    let rec = agent.wait_state("Active");
    assert_eq!(rec["proxies"][0]["kind"], "Deployment", "{rec:#}");
    s.signal("KILL");
    s.wait_exit(&env);
    agent.wait_state("Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
    assert!(
        env.cluster
            .get("deployments", "default", &format!("app-{id}"))
            .is_none()
    );
}

pub(crate) fn last_reason(rec: &Value) -> String {
    rec["history"]
        .as_array()
        .and_then(|h| h.last())
        .map(|t| text(t, "/reason"))
        .unwrap_or_default()
}

/// Every file under `dir`, read as text.
fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}

#[test]
fn a_session_killed_while_the_cluster_is_unreachable_is_repaired_once_it_is_back() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, id, _) = swap_followed(&env, &agent, &program);
    assert!(env.cluster.set_reachable(false));
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("Orphaned");
    wait_for("the agent reports the unreachable cluster", || {
        agent
            .sessions()
            .iter()
            .any(|r| last_reason(r).contains("unreachable"))
    });
    wait_for("status counts the tries", || {
        agent
            .waiting()
            .get(text(&rec, "/key").as_str())
            .is_some_and(|w| w["tries"].as_u64() >= Some(2))
    });
    let table = agent.status_table();
    assert!(
        table.contains("Orphaned")
            && table.contains("waiting since")
            && table.contains(" tries: ")
            && table.contains("unreachable"),
        "{table}"
    );
    assert!(
        !table.contains(env.cluster.token()),
        "no token in what status says about the failures"
    );
    assert_eq!(rec["telepresence_id"], id.as_str());
    assert!(env.cluster.set_reachable(true));
    agent.wait_state("Cleaned");
    assert!(agent.waiting().is_empty(), "nothing waits any more");
    assert_eq!(replicas(&env, "app"), 2);
    assert_eq!(
        agent_writes(&env),
        [
            "patch deployments app".to_string(),
            format!("delete pods app-{id}")
        ],
        "each step once"
    );
    // No secret of the kubeconfig in anything the agent wrote.
    let token = env.cluster.token().to_string();
    for dir in ["agent-state", "agent-logs"] {
        assert!(
            !all_text_under(&env.path(dir)).contains(&token),
            "the token leaked into {dir}"
        );
    }
    assert!(
        !agent.log().contains(&token),
        "the token leaked into the agent's stderr"
    );
    for args in [&["status", "--json", "-v"][..], &["history"][..]] {
        let out = run_cli(&agent.envs, args);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(&token),
            "the token leaked into `{}`",
            args.join(" ")
        );
    }
    assert!(
        !all_text_under(&env.path("agent-logs")).is_empty(),
        "the agent writes a log file"
    );
}

#[test]
fn an_rbac_refusal_needs_attention_and_names_the_permission() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, id, _) = swap_followed(&env, &agent, &program);
    env.cluster.fail(403, "patch", "deployments");
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = agent.wait_state("NeedsAttention");
    let why = last_reason(&rec);
    assert!(
        why.contains("forbidden") && why.contains("cannot patch resource \"deployments\""),
        "{why}"
    );
    assert!(
        why.ends_with(&format!(
            "run: telepolice-agent repair {}",
            text(&rec, "/key")
        )),
        "the reason says what to run once the permission is granted: {why}"
    );
    assert_eq!(replicas(&env, "app"), 0, "nothing was forced");
    env.wait("the proxy, which it may delete, is deleted", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
}

#[test]
fn server_errors_are_retried_until_the_repair_succeeds() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let (mut s, id, _) = swap_followed(&env, &agent, &program);
    env.cluster.fail(500, "delete", "pods");
    s.signal("KILL");
    s.wait_exit(&env);
    wait_for("a failed delete is retried", || {
        env.cluster
            .audit()
            .iter()
            .filter(|e| e.verb == "delete" && e.status == 500)
            .count()
            >= 2
    });
    env.cluster.clear_faults();
    agent.wait_state("Cleaned");
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
    let restores = agent_writes(&env)
        .iter()
        .filter(|w| w.starts_with("patch"))
        .count();
    assert_eq!(
        restores,
        1,
        "the restore is not repeated: {:?}",
        agent_writes(&env)
    );
    assert_eq!(replicas(&env, "app"), 2);
}

#[test]
fn a_corrupt_journal_record_is_quarantined_and_reported() {
    let Some(env) = Env::new() else { return };
    let sessions = env.path("agent-state").join("sessions");
    std::fs::create_dir_all(&sessions).expect("sessions dir");
    std::fs::write(
        sessions.join("123-456.json"),
        "{\"schema\": 1, \"key\": \"123-45",
    )
    .expect("written");
    let (agent, _program) = Agent::start(&env, "");
    let table = agent.status_table();
    assert!(
        table.contains("warning") && table.contains("corrupt journal record"),
        "{table}"
    );
    assert!(!sessions.join("123-456.json").exists());
    let quarantined = std::fs::read_dir(env.path("agent-state").join("quarantine"))
        .expect("a quarantine dir")
        .count();
    assert_eq!(quarantined, 1);
}

#[test]
fn the_original_count_is_observed_before_a_fast_swap_scales_it_down() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    // With --context and --namespace given, the stand-in skips its two `kubectl config`
    // calls and scales the original down as early as Telepresence can.
    let (mut s, _, rec) = followed(
        &env,
        &agent,
        &program,
        "0.105",
        &[
            "--swap-deployment",
            "app",
            "--context",
            "testcluster",
            "--namespace",
            "default",
            "--method",
            "inject-tcp",
        ],
        3,
    );
    // 0.105 logs no JSON of the original and the deployment has no last-applied
    // annotation: only an observation made before the scale-down gives the count.
    assert_eq!(rec["original"]["source"], "Observed", "{rec:#}");
    assert_eq!(rec["original"]["replicas"], 2);
    let recorded_at = rec["history"]
        .as_array()
        .and_then(|h| h.iter().find(|t| t["state"] == "Recorded"))
        .map(|t| text(t, "/at"))
        .unwrap_or_default();
    assert!(!recorded_at.is_empty(), "{rec:#}");
    s.signal("INT");
    s.wait_exit(&env);
}
