//! The harness: a real `telepolice-agent` with its own dirs, and the waits and reads the
//! tests share.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

static AGENTS: AtomicUsize = AtomicUsize::new(0);
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::standin::{SCRIPT, Session};
use crate::util::{Env, text};

/// A running agent with its own config, state, runtime and log dirs.
pub(crate) struct Agent {
    child: Option<Child>,
    pub(crate) envs: Vec<(&'static str, PathBuf)>,
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
    pub(crate) fn waiting(&self) -> serde_json::Map<String, Value> {
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
    /// Sends the agent `sig` (`STOP`, `CONT`: a laptop asleep and awake again).
    pub(crate) fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let sent = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// SIGKILL, and reaped: a laptop gone for good.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

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
        // Telepresence 2's sockets, this test's own (not /tmp and /var/run).
        ("TELEPOLICE_TEST_TEL2_DIR", env.path("tel2-run")),
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

/// Requests the agent made (kube-rs sends no User-Agent; kubectl does) that change things,
/// as `verb resource name`, team mode's included.
pub(crate) fn all_agent_writes(env: &Env) -> Vec<String> {
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

/// Whether a write is team mode's: a heartbeat Lease, or the recovery facts patched onto
/// a proxy (a repair never patches a proxy; 0.x names a swap's proxy `<name>-<session id>`).
pub(crate) fn is_team_write(w: &str) -> bool {
    let mut parts = w.split(' ');
    let (verb, resource, name) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let session_suffix = name.rsplit_once('-').is_some_and(|(_, id)| {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    resource == "leases" || (verb == "patch" && (resource == "pods" || session_suffix))
}

/// The repair's writes: what the agent changed in the cluster, team mode's writes left out.
pub(crate) fn agent_writes(env: &Env) -> Vec<String> {
    all_agent_writes(env)
        .into_iter()
        .filter(|w| !is_team_write(w))
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

pub(crate) fn last_reason(rec: &Value) -> String {
    rec["history"]
        .as_array()
        .and_then(|h| h.last())
        .map(|t| text(t, "/reason"))
        .unwrap_or_default()
}

/// Every file under `dir`, read as text.
pub(crate) fn all_text_under(dir: &Path) -> String {
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
