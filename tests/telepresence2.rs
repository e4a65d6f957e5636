//! Telepresence 2 end to end: the real agent following the connector stand-in
//! (`examples/telepresence2.rs`, run as `telepresence connector-foreground`) whose sessions
//! live in the traffic-manager stand-in, reached by the agent through the emulator's
//! `pods/portforward`, as Telepresence's own connector reaches it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use telepolice_agent::platform;
use trafficmanager::manager::manager_client::ManagerClient;
use trafficmanager::proto::{CreateInterceptRequest, InterceptSpec};
use trafficmanager::{Disposition, Options, TrafficManager};

use crate::agent::harness::{Agent, actions, last_reason, wait_for};
use crate::util::{Env, examples_dir, text};

/// An emulator with a traffic-manager installed, its stand-in, and this test's copy of the
/// connector stand-in as `telepresence`.
pub(crate) struct Tel2 {
    pub(crate) env: Env,
    pub(crate) tm: TrafficManager,
    pub(crate) program: PathBuf,
    context: String,
    /// Every stand-in process started, killed (if still there) when the test ends, also
    /// when it fails half-way.
    started: std::cell::RefCell<Vec<platform::ProcessId>>,
}

impl Drop for Tel2 {
    fn drop(&mut self) {
        for id in self.started.borrow().iter() {
            let _ = platform::signal(*id, platform::Signal::Kill);
        }
        // And what those started (a connector an intercept CLI started on its own): this
        // test's processes carry its mark.
        let mark = self.env.dir.path().to_string_lossy().into_owned();
        for pid in platform::list_pids().unwrap_or_default() {
            let ours = platform::process_environ(pid).is_ok_and(|env| {
                env.iter()
                    .any(|(k, v)| k == "TELEPOLICE_TEST_ENV" && *v == mark)
            });
            if ours
                && pid != std::process::id()
                && let Ok(info) = platform::process_info(pid)
            {
                let _ = platform::signal(info.id, platform::Signal::Kill);
            }
        }
    }
}

impl Tel2 {
    pub(crate) fn new() -> Option<Self> {
        let env = Env::new()?;
        let tm =
            TrafficManager::start(Options::default()).expect("the traffic-manager stand-in starts");
        crate::util::install_traffic_manager(&env.cluster, "ambassador", &tm)
            .expect("the traffic-manager is installed");
        let bin = env.path("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let program = bin.join("telepresence");
        std::fs::copy(examples_dir().join("telepresence2"), &program)
            .expect("the connector stand-in is copied (cargo test builds examples)");
        let kubeconfig = std::fs::read_to_string(&env.kubeconfig).expect("kubeconfig");
        let context = kubeconfig
            .lines()
            .find_map(|l| l.strip_prefix("current-context: "))
            .expect("a current context")
            .trim()
            .to_string();
        Some(Tel2 {
            env,
            tm,
            program,
            context,
            started: Default::default(),
        })
    }

    pub(crate) fn agent(&self, extra_config: &str) -> Agent {
        Agent::start_with(
            &self.env,
            &self.program,
            &format!("telepresence2_grace_secs = 0.5\n{extra_config}"),
        )
    }

    fn cache(&self) -> PathBuf {
        self.env.path("xdg-cache").join("telepresence")
    }

    /// `telepresence connect` (and an intercept of `intercept`): the connector, once it
    /// says it is connected, and its session id.
    /// The stand-in run with `args` in the user's environment (as a shell would run the
    /// CLI).
    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .env("XDG_CACHE_HOME", self.env.path("xdg-cache"))
            .env("KUBECONFIG", &self.env.kubeconfig)
            .env("TELEPOLICE_TEST_ENV", self.env.dir.path())
            .env("TEL2_STANDIN_CONTEXT", &self.context)
            .env("TEL2_STANDIN_NAMESPACE", "default")
            .env("TEL2_STANDIN_MANAGER", self.tm.addr().to_string())
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `cmd`, to be killed when the test ends if it still runs.
    fn spawn(&self, cmd: &mut Command) -> Child {
        let child = cmd.spawn().expect("the stand-in starts");
        if let Ok(info) = platform::process_info(child.id()) {
            self.started.borrow_mut().push(info.id);
        }
        child
    }

    pub(crate) fn connect(
        &self,
        intercept: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (Child, String) {
        let mut cmd = Command::new(&self.program);
        cmd.arg("connector-foreground")
            .env("XDG_CACHE_HOME", self.env.path("xdg-cache"))
            .env("KUBECONFIG", &self.env.kubeconfig)
            .env("TELEPOLICE_TEST_ENV", self.env.dir.path())
            .env("TEL2_STANDIN_CONTEXT", &self.context)
            .env("TEL2_STANDIN_NAMESPACE", "default")
            .env("TEL2_STANDIN_MANAGER", self.tm.addr().to_string())
            .env("TEL2_STANDIN_INTERCEPT", intercept.unwrap_or(""))
            .env("TEL2_STANDIN_SOCKET_DIR", self.env.path("tel2-run"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = self.spawn(&mut cmd);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the connector says it connected");
        let id = line
            .trim()
            .strip_prefix("connected ")
            .unwrap_or_else(|| panic!("not connected: {line:?}"));
        (child, id.to_string())
    }

    fn session_file(&self) -> PathBuf {
        self.cache()
            .join("sessions")
            .join(format!("{}-default.json", self.context))
    }

    /// A colleague's intercept of `workload` in their own session: its disposition.
    fn colleague_intercepts(&self, workload: &str) -> (i32, String) {
        let colleague = self.tm.arrive("colleague@desk", "default");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let mut c = ManagerClient::connect(format!("http://{}", self.tm.addr()))
                .await
                .expect("a client");
            let info = c
                .create_intercept(CreateInterceptRequest {
                    session: Some(colleague),
                    intercept_spec: Some(InterceptSpec {
                        name: workload.into(),
                        agent: workload.into(),
                        namespace: "default".into(),
                        port_identifier: "http".into(),
                        ..Default::default()
                    }),
                    api_key: String::new(),
                })
                .await
                .expect("an answer")
                .into_inner();
            (info.disposition, info.message)
        })
    }
}

pub(crate) fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Waits until the agent has recorded session `id`.
pub(crate) fn recorded(agent: &Agent, id: &str) {
    wait_for("the session recorded", || {
        session_of(&agent.sessions(), id).is_some()
    });
}

pub(crate) fn session_of<'a>(sessions: &'a [Value], id: &str) -> Option<&'a Value> {
    sessions.iter().find(|r| text(r, "/tel2/session_id") == id)
}

#[test]
fn a_killed_connectors_session_is_departed_and_a_colleague_can_intercept() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(Some("echo"), &[]);
    // Recorded while it lives: the session and its intercept.
    wait_for("the session recorded", || {
        agent.sessions().iter().any(|r| {
            text(r, "/tel2/session_id") == id
                && r["tel2"]["intercepts"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
        })
    });
    let (d, msg) = t.colleague_intercepts("echo");
    assert_eq!(
        d,
        Disposition::AgentError as i32,
        "the dead laptop's intercept is in the way: {msg}"
    );

    kill9(&mut connector);
    let rec = agent.wait_state("Cleaned");
    assert_eq!(text(&rec, "/tel2/session_id"), id);
    assert!(t.tm.sessions().iter().all(|s| *s != id), "departed");
    assert_eq!(t.tm.calls_of("Depart", &id).len(), 1, "{:?}", t.tm.calls());
    assert!(
        !t.session_file().exists(),
        "the session cache goes after the Depart"
    );
    // The socket the killed connector left is gone too.
    assert!(
        !t.env
            .path("tel2-run/telepresence-connector.socket")
            .exists()
    );
    assert!(
        actions(&rec)
            .iter()
            .any(|a| a.starts_with("remove stale connector socket")),
        "{rec:#}"
    );
    let done = actions(&rec);
    assert!(
        done.iter()
            .any(|a| a.starts_with(&format!("depart session {id}")) && a.contains("echo")),
        "{done:?}"
    );
    // The colleague's intercept is served now.
    wait_for("the dead session's intercept to go", || {
        t.tm.intercepts().iter().all(|i| !i.id.starts_with(&id))
    });
    let (d, msg) = t.colleague_intercepts("echo-2");
    assert_eq!(d, Disposition::Active as i32, "{msg}");
    agent.stop();
}

#[test]
fn a_connector_that_quits_departs_itself_and_the_agent_does_nothing() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(None, &[]);
    recorded(&agent, &id);
    let _ = Command::new("kill")
        .args(["-TERM", &connector.id().to_string()])
        .status();
    let _ = connector.wait();
    let rec = agent.wait_state("Ended");
    assert!(
        last_reason(&rec).contains("Telepresence departed the session itself"),
        "{rec:#}"
    );
    assert_eq!(
        t.tm.calls_of("Depart", &id).len(),
        1,
        "only the connector's own: {:?}",
        t.tm.calls()
    );
    agent.stop();
}

#[test]
fn a_connector_restarted_within_the_grace_keeps_its_session() {
    let Some(t) = Tel2::new() else { return };
    let agent = Agent::start_with(&t.env, &t.program, "telepresence2_grace_secs = 3\n");
    let (mut first, id) = t.connect(Some("echo"), &[]);
    recorded(&agent, &id);
    kill9(&mut first);
    // `telepresence connect` again at once: the new connector resumes the same session.
    let (mut second, resumed) = t.connect(Some("echo"), &[]);
    assert_eq!(
        resumed, id,
        "the stand-in resumes a session its manager still has"
    );
    let rec = agent.wait_state("Ended");
    assert!(
        last_reason(&rec).contains("a connector for the same daemon runs again"),
        "{rec:#}"
    );
    assert!(
        t.tm.calls_of("Depart", &id).is_empty(),
        "{:?}",
        t.tm.calls()
    );
    assert!(t.tm.sessions().contains(&id));
    assert!(t.session_file().exists());
    assert!(
        crate::standin::alive(second.id()),
        "the resumed connector runs on"
    );
    kill9(&mut second);
    agent.stop();
}

#[test]
fn a_2x_without_a_session_cache_needs_a_person_not_a_guess() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(None, &[("TEL2_STANDIN_SHAPE", "2.5")]);
    // Nothing on disk names the session: the agent cannot know it.
    std::thread::sleep(std::time::Duration::from_secs(2));
    kill9(&mut connector);
    let rec = agent.wait_state("NeedsAttention");
    let why = last_reason(&rec);
    assert!(why.contains("before 2.6.7"), "{why}");
    assert!(why.contains("telepresence connect"), "{why}");
    assert!(t.tm.calls_of("Depart", &id).is_empty());
    assert!(t.tm.sessions().contains(&id), "left alone");
    agent.stop();
}

/// The agent killed at each failpoint of a 2.x session's end, then restarted on the same
/// journal: the session is departed, exactly once, and its cache file removed.
#[test]
fn an_agent_killed_at_any_step_departs_exactly_once_after_a_restart() {
    for failpoint in [
        "tel2.recorded",
        "tel2.orphaned",
        "tel2.cleaning",
        "tel2.departed",
        "tel2.depart-saved",
    ] {
        let Some(t) = Tel2::new() else { return };
        let config = "telepresence2_grace_secs = 0.5\n";
        let mut agent = Agent::start_with_env(
            &t.env,
            &t.program,
            config,
            &[("TELEPOLICE_FAILPOINT", failpoint)],
        );
        let (mut connector, id) = t.connect(Some("echo"), &[]);
        if failpoint == "tel2.recorded" {
            agent.wait_killed_at(failpoint);
            agent = Agent::start_with(&t.env, &t.program, config);
            wait_for("the session followed again", || {
                session_of(&agent.sessions(), &id).is_some()
            });
            kill9(&mut connector);
        } else {
            recorded(&agent, &id);
            kill9(&mut connector);
            agent.wait_killed_at(failpoint);
            agent = Agent::start_with(&t.env, &t.program, config);
        }
        let rec = agent.wait_state("Cleaned");
        assert_eq!(text(&rec, "/tel2/session_id"), id, "{failpoint}");
        assert_eq!(
            t.tm.calls_of("Depart", &id).len(),
            1,
            "{failpoint}: {:?}",
            t.tm.calls()
        );
        assert!(!t.tm.sessions().contains(&id), "{failpoint}");
        assert!(!t.session_file().exists(), "{failpoint}");
        agent.stop();
    }
}

#[test]
fn a_refused_port_forward_or_no_traffic_manager_needs_a_person_with_the_command() {
    let Some(t) = Tel2::new() else { return };
    t.env.cluster.deny("get", "pods/portforward");
    let agent = t.agent("");
    let (mut connector, id) = t.connect(None, &[]);
    recorded(&agent, &id);
    kill9(&mut connector);
    let rec = agent.wait_state("NeedsAttention");
    let why = last_reason(&rec);
    assert!(
        why.contains(&format!(
            "cannot end session {id}: forwarding to port 8081 of pod"
        )),
        "{why}"
    );
    assert!(
        why.contains(&format!(
            "`telepresence connect --context {} --namespace default` then `telepresence quit`",
            t.context
        )),
        "{why}"
    );
    assert!(t.tm.sessions().contains(&id), "left alone");
    assert!(
        t.session_file().exists(),
        "its cache is kept for the person"
    );
    // The refusal lifted, a person asks for the repair.
    t.env.cluster.clear_faults();
    let key = text(&rec, "/key");
    let out = crate::agent::run_cli(&agent.envs, &["repair", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = agent.wait_state("Cleaned");
    assert_eq!(text(&rec, "/tel2/session_id"), id);
    assert!(!t.tm.sessions().contains(&id));
    assert!(!t.session_file().exists());
    agent.stop();

    // A manager namespace (as `telepresence status` names it) with no traffic-manager in it.
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(None, &[("TEL2_STANDIN_MANAGER_NAMESPACE", "elsewhere")]);
    recorded(&agent, &id);
    kill9(&mut connector);
    let why = last_reason(&agent.wait_state("NeedsAttention"));
    assert!(
        why.contains(
            "no traffic-manager to reach in namespace elsewhere: no service/traffic-manager"
        ),
        "{why}"
    );
    agent.stop();
}

#[test]
fn while_the_cluster_cannot_be_reached_the_session_waits_then_is_departed() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(Some("echo"), &[]);
    recorded(&agent, &id);
    t.env.cluster.set_reachable(false);
    kill9(&mut connector);
    agent.wait_log("cannot reach the traffic-manager yet");
    assert!(t.tm.calls_of("Depart", &id).is_empty());
    t.env.cluster.set_reachable(true);
    let rec = agent.wait_state("Cleaned");
    assert_eq!(text(&rec, "/tel2/session_id"), id);
    assert_eq!(t.tm.calls_of("Depart", &id).len(), 1);
    agent.stop();
}

#[test]
fn a_2_15_connector_is_bound_by_the_api_server_its_sessions_json_names() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let url = t.env.cluster.url();
    let (mut connector, id) = t.connect(
        Some("echo"),
        &[
            ("TEL2_STANDIN_SHAPE", "2.15"),
            ("TEL2_STANDIN_HOST", url.as_str()),
        ],
    );
    recorded(&agent, &id);
    assert!(
        !t.cache().join("daemons").exists(),
        "2.15 keeps no daemon files"
    );
    kill9(&mut connector);
    let rec = agent.wait_state("Cleaned");
    assert_eq!(text(&rec, "/cluster/context"), t.context);
    assert_eq!(t.tm.calls_of("Depart", &id).len(), 1);
    assert!(!t.cache().join("sessions.json").exists());
    agent.stop();
}

#[test]
fn a_session_cache_that_names_another_session_after_the_death_is_never_departed() {
    let Some(t) = Tel2::new() else { return };
    let agent = Agent::start_with(&t.env, &t.program, "telepresence2_grace_secs = 3\n");
    let (mut connector, id) = t.connect(None, &[]);
    recorded(&agent, &id);
    kill9(&mut connector);
    // Within the grace, the cache comes to name another session (a later connector's).
    let file = t.session_file();
    let text_now = std::fs::read_to_string(&file).expect("the cache");
    std::fs::write(&file, text_now.replace(&id, "5e55-other")).expect("rewritten");
    let rec = agent.wait_state("Ended");
    assert!(
        last_reason(&rec).contains("names session 5e55-other"),
        "{rec:#}"
    );
    assert!(t.tm.calls_of("Depart", &id).is_empty());
    assert!(
        t.tm.sessions().contains(&id),
        "left for its TTL, not guessed"
    );
    agent.stop();
}

#[test]
fn a_connector_out_of_the_configured_scope_is_not_followed() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent(&format!("ignore_contexts = [{:?}]\n", t.context));
    let (mut connector, id) = t.connect(None, &[]);
    agent.wait_log("is outside the configured scope");
    kill9(&mut connector);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        session_of(&agent.sessions(), &id).is_none(),
        "{:#?}",
        agent.sessions()
    );
    assert!(t.tm.calls_of("Depart", &id).is_empty());
    agent.stop();
}

/// The children of `pid` (its own thread's list).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn has_intercept(t: &Tel2, name: &str) -> bool {
    t.tm.intercepts()
        .iter()
        .any(|i| i.id.ends_with(&format!(":{name}")))
}

#[test]
fn an_intercept_whose_cli_died_is_left_while_the_connector_lives() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(None, &[]);
    let mut cli =
        t.spawn(&mut t.cli(&["intercept", "echo", "--port", "8080", "--", "sleep", "60"]));
    wait_for("the intercept is made", || has_intercept(&t, "echo"));
    wait_for("the intercept's CLI is recorded", || {
        agent
            .sessions()
            .iter()
            .any(|r| text(r, "/tel2/intercept") == "echo" && text(r, "/tel2/session_id") == id)
    });
    let command = children(cli.id());
    kill9(&mut cli);
    for pid in command {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let rec = agent.wait_state("Cleaned");
    assert_eq!(text(&rec, "/tel2/intercept"), "echo", "{rec:#}");
    assert_eq!(last_reason(&rec), "left intercept echo");
    assert!(!has_intercept(&t, "echo"), "{:?}", t.tm.intercepts());
    // The connector and its session live on.
    assert!(t.tm.sessions().contains(&id));
    assert!(t.tm.calls_of("Depart", &id).is_empty());
    assert!(crate::standin::alive(connector.id()));
    kill9(&mut connector);
    agent.stop();
}

#[test]
fn an_intercept_whose_command_ended_or_whose_connector_died_is_not_touched() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let (mut connector, id) = t.connect(None, &[]);
    // Its command ends: the CLI leaves the intercept itself.
    let status = t
        .cli(&["intercept", "echo", "--port", "8080", "--", "sleep", "1"])
        .status()
        .expect("the intercept CLI runs");
    assert!(status.success());
    let rec = agent.wait_state("Ended");
    assert_eq!(
        last_reason(&rec),
        "the intercept is gone: its CLI left it",
        "{rec:#}"
    );

    // The CLI and the connector both killed: the connector's record ends the session.
    let mut cli = t.spawn(&mut t.cli(&["intercept", "web", "--port", "8080", "--", "sleep", "60"]));
    wait_for("the intercept is made", || has_intercept(&t, "web"));
    wait_for("the intercept's CLI is recorded", || {
        agent
            .sessions()
            .iter()
            .any(|r| text(r, "/tel2/intercept") == "web" && text(r, "/tel2/session_id") == id)
    });
    let command = children(cli.id());
    kill9(&mut connector);
    kill9(&mut cli);
    for pid in command {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    wait_for("both records final", || {
        let s = agent.sessions();
        let of = |f: &dyn Fn(&Value) -> bool| s.iter().find(|r| f(r)).map(|r| text(r, "/state"));
        of(&|r| text(r, "/tel2/intercept") == "web").as_deref() == Some("Ended")
            && of(&|r| text(r, "/tel2/intercept").is_empty() && text(r, "/tel2/session_id") == id)
                .as_deref()
                == Some("Cleaned")
    });
    assert!(!t.tm.sessions().contains(&id));
    assert!(
        t.tm.calls_of("RemoveIntercept", &id).len() <= 1,
        "{:?}",
        t.tm.calls()
    );
    agent.stop();
}

/// A traffic-manager outside the configured namespace is found by asking the user's
/// `telepresence status --output json`.
#[test]
fn the_manager_namespace_is_the_one_telepresence_status_names() {
    let Some(t) = Tel2::new() else { return };
    let tm = TrafficManager::start(Options::default()).expect("a second manager");
    crate::util::install_traffic_manager(&t.env.cluster, "tel-mgr", &tm).expect("installed");
    let agent = t.agent("");
    // A connector of tel-mgr's manager (the agent's config says ambassador).
    let mut cmd = t.cli(&["connector-foreground"]);
    cmd.env("TEL2_STANDIN_MANAGER", tm.addr().to_string())
        .env("TEL2_STANDIN_MANAGER_NAMESPACE", "tel-mgr")
        .stdout(Stdio::piped());
    let mut connector = t.spawn(&mut cmd);
    let mut line = String::new();
    BufReader::new(connector.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("connected");
    let id = line.trim().trim_start_matches("connected ").to_string();
    wait_for("the manager namespace learned", || {
        session_of(&agent.sessions(), &id)
            .is_some_and(|r| text(r, "/tel2/manager_namespace") == "tel-mgr")
    });
    kill9(&mut connector);
    wait_for("departed from tel-mgr's manager", || {
        !tm.sessions().contains(&id)
    });
    assert_eq!(tm.calls_of("Depart", &id).len(), 1);
    agent.stop();
}

/// `telepresence intercept NAME -- CMD` with no connection yet connects on its own: the
/// connector it starts (its child) is followed too, and when the CLI dies the intercept is
/// left while that connector lives.
#[test]
fn a_connector_started_by_an_intercept_cli_is_followed_too() {
    let Some(t) = Tel2::new() else { return };
    let agent = t.agent("");
    let mut cli =
        t.spawn(&mut t.cli(&["intercept", "echo", "--port", "8080", "--", "sleep", "60"]));
    wait_for("the intercept is made", || has_intercept(&t, "echo"));
    wait_for("both the CLI and its connector are recorded", || {
        let s = agent.sessions();
        let cli_recorded = s.iter().any(|r| {
            text(r, "/tel2/intercept") == "echo" && !text(r, "/tel2/session_id").is_empty()
        });
        let connector_recorded = s.iter().any(|r| {
            text(r, "/tel2/intercept").is_empty() && !text(r, "/tel2/session_id").is_empty()
        });
        cli_recorded && connector_recorded
    });
    let children_of_cli = children(cli.id());
    // Kill the CLI only (its `sleep` too); the connector, its child, lives on.
    kill9(&mut cli);
    let connector = children_of_cli
        .iter()
        .copied()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("connector-foreground"))
        })
        .expect("the CLI started a connector");
    for pid in children_of_cli.iter().filter(|p| **p != connector) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let rec = agent.wait_state("Cleaned");
    assert_eq!(last_reason(&rec), "left intercept echo");
    assert!(crate::standin::alive(connector));
    let _ = Command::new("kill")
        .args(["-KILL", &connector.to_string()])
        .status();
    agent.stop();
}
