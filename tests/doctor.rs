//! `telepolice-agent doctor` against the emulator, a running agent and the stand-in: one
//! line per check, exit 0 when all is well (warnings allowed), 1 when a check fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testcluster::{Options, TestCluster};

use crate::agent::{Agent, agent_envs, write_config};
use crate::util::{Env, python3_available};

/// What one `doctor` run printed, and how it ended.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    /// The line of `check` (its name after the status word); fails the test when there is
    /// none or more than one.
    fn line(&self, check: &str) -> &str {
        let found: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| {
                l.get(6..)
                    .is_some_and(|rest| rest.starts_with(&format!("{check}: ")))
            })
            .collect();
        assert_eq!(found.len(), 1, "one {check:?} line:\n{}", self.stdout);
        found[0]
    }

    /// The lines that start with `status` (`ok`, `warn`, `FAIL`).
    fn lines_of(&self, status: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(status))
            .collect()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// A test's world: an emulator, the agent's dirs and config (watching a copy of the
/// stand-in), a home with an enabled systemd user unit, and optionally a running agent.
struct World {
    env: Env,
    program: PathBuf,
    agent: Option<Agent>,
}

impl World {
    fn new(extra_config: &str, start_agent: bool) -> Self {
        let env = Env::without_kubectl_check(Options::default(), PathBuf::new());
        let program = Agent::program(&env);
        let agent = if start_agent {
            Some(Agent::start_with(&env, &program, extra_config))
        } else {
            write_config(&env, &program, extra_config);
            None
        };
        let world = Self {
            env,
            program,
            agent,
        };
        world.install_unit();
        world
    }

    fn home(&self) -> PathBuf {
        self.env.path("home")
    }

    /// What `telepolice-agent install` leaves: the user unit, enabled.
    fn install_unit(&self) {
        let user = self.home().join(".config/systemd/user");
        let wants = user.join("default.target.wants");
        std::fs::create_dir_all(&wants).expect("unit dirs");
        let unit = user.join("telepolice-agent.service");
        std::fs::write(&unit, "[Service]\nExecStart=telepolice-agent run\n").expect("unit");
        std::os::unix::fs::symlink(&unit, wants.join("telepolice-agent.service")).expect("link");
    }

    /// Runs `doctor` with this world's dirs, home and kubeconfig (`kubeconfig` overrides
    /// it; an empty value unsets KUBECONFIG).
    fn doctor_with(&self, args: &[&str], kubeconfig: Option<&str>) -> Outcome {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
        cmd.arg("doctor").args(args);
        for (k, v) in agent_envs(&self.env) {
            cmd.env(k, v);
        }
        cmd.env("HOME", self.home()).env_remove("XDG_CONFIG_HOME");
        match kubeconfig {
            None => {
                cmd.env("KUBECONFIG", &self.env.kubeconfig);
            }
            Some("") => {
                cmd.env_remove("KUBECONFIG");
            }
            Some(k) => {
                cmd.env("KUBECONFIG", k);
            }
        }
        let start = Instant::now();
        let out = cmd.output().expect("doctor runs");
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: start.elapsed(),
        }
    }

    fn doctor(&self, args: &[&str]) -> Outcome {
        self.doctor_with(args, None)
    }
}

fn config_path(w: &World) -> PathBuf {
    w.env.path("agent-config.toml")
}

#[test]
fn all_is_well_with_a_running_agent_and_a_permissive_cluster() {
    if !python3_available() {
        return;
    }
    let w = World::new("", true);
    let out = w.doctor(&[]);
    assert_eq!(out.code, Some(0), "{out}");
    let url = w.env.cluster.url();
    let expect_prefix = [
        (
            "config",
            format!("ok    config: {} loads", config_path(&w).display()),
        ),
        (
            "kubeconfig",
            format!(
                "ok    kubeconfig: {} (1 context, current testcluster)",
                w.env.kubeconfig.display()
            ),
        ),
        (
            "context testcluster",
            format!("ok    context testcluster: reachable: {url} answers (Kubernetes v1.31.0, "),
        ),
        (
            "permissions testcluster",
            "ok    permissions testcluster: all 13 permissions the agent needs in namespace default (deployments.apps, pods, services)".to_string(),
        ),
        (
            "team mode testcluster",
            "ok    team mode testcluster: in namespace default the agent can keep heartbeats and write recovery facts for an in-cluster sweeper".to_string(),
        ),
        (
            "traffic-manager testcluster",
            "ok    traffic-manager testcluster: none in namespace ambassador (no service/traffic-manager)".to_string(),
        ),
        (
            "telepresence",
            format!(
                "ok    telepresence: {} 0.109 (0.x: the agent follows its sessions)",
                w.program.display()
            ),
        ),
        ("daemon", "ok    daemon: running (pid ".to_string()),
        (
            "sight",
            "ok    sight: the daemon reads the environment and working directory of the user's processes (checked on pid ".to_string(),
        ),
        (
            "service",
            format!(
                "ok    service: {} (systemd user unit, enabled)",
                w.home()
                    .join(".config/systemd/user/telepolice-agent.service")
                    .display()
            ),
        ),
        ("journal", "ok    journal: ".to_string()),
    ];
    for (check, prefix) in &expect_prefix {
        let line = out.line(check);
        assert!(
            line.starts_with(prefix.as_str()),
            "{line}\nwanted: {prefix}\n{out}"
        );
    }
    assert!(
        out.line("context testcluster")
            .ends_with("ms), namespace default"),
        "{out}"
    );
    assert!(
        out.line("daemon")
            .contains(&format!("version {}, started ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert_eq!(out.stdout.lines().count(), expect_prefix.len() + 2, "{out}");
    assert!(
        out.stdout
            .ends_with("\n\n11 checks: 11 ok, 0 warnings, 0 failed; all good\n"),
        "{out}"
    );

    // The doctor changed nothing: it asked for the version, one review per permission,
    // and for the traffic-manager's Service (there is none).
    let asked: Vec<(String, String, u16)> = w
        .env
        .cluster
        .audit()
        .into_iter()
        .map(|e| {
            (
                e.verb,
                if e.resource.is_empty() {
                    e.path
                } else {
                    e.resource
                },
                e.status,
            )
        })
        .collect();
    let reviews = asked
        .iter()
        .filter(|(v, r, s)| v == "create" && r == "selfsubjectaccessreviews" && *s == 201)
        .count();
    // 13 for the repairs, 5 for team mode.
    assert_eq!(reviews, 13 + 5, "{asked:?}");
    assert!(
        asked.iter().all(|(v, r, _)| r == "/version"
            || (v == "create" && r == "selfsubjectaccessreviews")
            || (v == "get" && r == "services")),
        "{asked:?}"
    );

    let json = w.doctor(&["--json"]);
    assert_eq!(json.code, Some(0), "{json}");
    let v: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["summary"]["ok"], 11);
    assert_eq!(v["checks"][3]["check"], "permissions testcluster");
    assert_eq!(v["checks"][3]["status"], "ok");

    if let Some(a) = w.agent {
        a.stop();
    }
}

#[test]
fn a_denied_verb_fails_naming_the_verb_the_resource_and_the_context() {
    let w = World::new("", true);
    w.env.cluster.deny("patch", "deployments");
    w.env.cluster.deny("delete", "services");
    let out = w.doctor(&[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        out.lines_of("FAIL"),
        [out.line("permissions testcluster")],
        "only the permissions fail:\n{out}"
    );
    let line = out.line("permissions testcluster");
    assert!(
        line.starts_with(
            "FAIL  permissions testcluster: in namespace default the agent may not patch deployments.apps (to scale the original back), delete services (to delete the proxy Service): "
        ),
        "{out}"
    );
    assert!(
        line.contains("kubectl --context testcluster auth can-i --list -n default"),
        "{out}"
    );
    assert!(out.line("context testcluster").starts_with("ok"), "{out}");

    // `--namespace` asks about another namespace; the denial holds there too.
    let out = w.doctor(&["--namespace", "kube-system"]);
    assert!(
        out.line("permissions testcluster")
            .contains("in namespace kube-system the agent may not patch deployments.apps"),
        "{out}"
    );

    // A cluster that refuses the review itself cannot be judged: a warning, exit 0.
    w.env.cluster.clear_faults();
    w.env
        .cluster
        .fail(403, "create", "selfsubjectaccessreviews");
    let out = w.doctor(&[]);
    assert_eq!(out.code, Some(0), "{out}");
    let line = out.line("permissions testcluster");
    assert!(
        line.starts_with("warn  permissions testcluster: in namespace default, 13 of 13 could not be asked: the cluster refused the SelfSubjectAccessReview itself (403: selfsubjectaccessreviews.authorization.k8s.io is forbidden"),
        "{out}"
    );
    if let Some(a) = w.agent {
        a.stop();
    }
}

#[test]
fn team_mode_refused_is_a_warning_naming_what_is_missing_and_team_false_stops_asking() {
    let w = World::new("", false);
    w.env.cluster.deny("create", "leases");
    w.env.cluster.deny("patch", "pods");
    let out = w.doctor(&[]);
    let line = out.line("team mode testcluster");
    assert!(
        line.starts_with(
            "warn  team mode testcluster: in namespace default the agent may not create leases.coordination.k8s.io, patch pods: no heartbeat or facts there"
        ),
        "{out}"
    );
    assert!(line.contains("set `team = false`"), "{out}");
    assert!(
        out.line("permissions testcluster").starts_with("ok"),
        "the repair's own permissions are all there: {out}"
    );
    std::fs::write(
        config_path(&w),
        format!(
            "{}\nteam = false\n",
            std::fs::read_to_string(config_path(&w)).unwrap_or_default()
        ),
    )
    .expect("config");
    let out = w.doctor(&[]);
    assert!(
        !out.stdout.contains("team mode testcluster"),
        "not asked when off: {out}"
    );
}

/// A second emulator whose kubeconfig names its context `name`, and that kubeconfig's path.
fn another_cluster(w: &World, name: &str) -> (TestCluster, PathBuf) {
    let c = TestCluster::start(Options {
        context: name.to_string(),
        ..Default::default()
    })
    .expect("the emulator starts");
    let path = w.env.path(&format!("kubeconfig-{name}"));
    c.write_kubeconfig(&path).expect("kubeconfig written");
    (c, path)
}

fn joined(paths: &[&Path]) -> String {
    std::env::join_paths(paths)
        .expect("joinable")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn unreachable_clusters_fail_without_holding_up_the_others() {
    let w = World::new("", true);
    let (down, down_kc) = another_cluster(&w, "down");
    let (slow, slow_kc) = another_cluster(&w, "slow");
    assert!(down.set_reachable(false));
    slow.set_latency(Duration::from_secs(60));
    let kc = joined(&[&w.env.kubeconfig, &down_kc, &slow_kc]);
    let out = w.doctor_with(&["--timeout", "3"], Some(&kc));
    assert_eq!(out.code, Some(1), "{out}");
    // Both dead clusters cost one timeout together, not one each (and not 60 s).
    assert!(out.took < Duration::from_secs(30), "{out}");
    let down_line = out.line("context down");
    assert!(
        down_line.starts_with(&format!(
            "FAIL  context down: unreachable: {}: ",
            down.url()
        )),
        "{out}"
    );
    assert!(down_line.contains("refused"), "{out}");
    assert!(down_line.ends_with("; permissions not checked"), "{out}");
    assert_eq!(
        out.line("context slow"),
        format!(
            "FAIL  context slow: unreachable: {} did not answer within 3 s; permissions not checked",
            slow.url()
        ),
        "{out}"
    );
    assert!(out.line("context testcluster").starts_with("ok"), "{out}");
    assert!(
        out.line("permissions testcluster").starts_with("ok"),
        "{out}"
    );
    assert!(!out.stdout.contains("permissions down"), "{out}");
    assert_eq!(out.lines_of("FAIL").len(), 2, "{out}");

    // `--context` checks that one only.
    let out = w.doctor_with(&["--context", "testcluster"], Some(&kc));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stdout.contains("context down"), "{out}");
    let out = w.doctor_with(&["--context", "nope"], Some(&kc));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.line("context nope")
            .starts_with("FAIL  context nope: kube context \"nope\" is not in"),
        "{out}"
    );

    // The config's scope leaves contexts out, and says so.
    write_config(&w.env, &w.program, "ignore_contexts = [\"down\", \"slow\"]");
    let out = w.doctor_with(&[], Some(&kc));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.line("scope"),
        "ok    scope: not checked, outside the agent's scope: down (ignore_contexts), slow (ignore_contexts)",
        "{out}"
    );
    let out = w.doctor_with(&["--context", "down"], Some(&kc));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.line("scope").starts_with(
            "warn  scope: context down is outside the agent's scope (the config's `ignore_contexts`)"
        ),
        "{out}"
    );
    if let Some(a) = w.agent {
        a.stop();
    }
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let w = World::new("", false);
    let missing = w.env.path("no-such-kubeconfig");
    let out = w.doctor_with(&[], Some(&missing.display().to_string()));
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        out.line("kubeconfig"),
        format!(
            "FAIL  kubeconfig: none of the files KUBECONFIG names exists ({}): Telepresence has no cluster to talk to",
            missing.display()
        ),
        "{out}"
    );
    assert!(!out.stdout.contains("context "), "{out}");

    // Without KUBECONFIG, ~/.kube/config is the one (this test's home has none).
    let out = w.doctor_with(&[], Some(""));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.line("kubeconfig").starts_with(&format!(
            "FAIL  kubeconfig: {} does not exist and KUBECONFIG is not set",
            w.home().join(".kube/config").display()
        )),
        "{out}"
    );

    // One of two files missing is a warning; the other is used.
    let both = joined(&[&missing, &w.env.kubeconfig]);
    let out = w.doctor_with(&[], Some(&both));
    let warned = out.lines_of("warn");
    assert!(
        warned.contains(
            &format!(
                "warn  kubeconfig: {} (named in KUBECONFIG) does not exist",
                missing.display()
            )
            .as_str()
        ),
        "{out}"
    );
    assert!(
        out.line("permissions testcluster").starts_with("ok"),
        "{out}"
    );
}

#[test]
fn a_broken_config_file_names_the_file_the_line_and_the_key() {
    let w = World::new("", false);
    let cfg = config_path(&w);
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, format!("{text}grace_perod_secs = 1\n")).expect("config");
    let bad_line = text.lines().count() + 1;
    let out = w.doctor(&[]);
    assert_eq!(out.code, Some(1), "{out}");
    let line = out.line("config");
    assert!(
        line.starts_with(&format!(
            "FAIL  config: invalid config file {}: ",
            cfg.display()
        )),
        "{out}"
    );
    assert!(line.contains(&format!("line {bad_line}")), "{out}");
    assert!(line.contains("grace_perod_secs"), "{out}");
    assert!(
        line.ends_with("the daemon will not start with it (the checks below use the defaults)"),
        "{out}"
    );
    // The other checks still ran.
    assert!(
        out.line("permissions testcluster").starts_with("ok"),
        "{out}"
    );

    std::fs::write(&cfg, "dry_run = \"yes\"\n").expect("config");
    let out = w.doctor(&[]);
    assert!(out.line("config").contains("dry_run"), "{out}");
    std::fs::write(&cfg, "dry_run = true\n").expect("config");
    let out = w.doctor(&[]);
    assert!(
        out.lines_of("warn")
            .iter()
            .any(|l| l.starts_with("warn  config: dry_run = true")),
        "{out}"
    );
}

#[test]
fn a_daemon_that_is_not_running_fails() {
    let w = World::new("", false);
    let out = w.doctor(&[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.lines_of("FAIL"), [out.line("daemon")], "{out}");
    assert_eq!(
        out.line("daemon"),
        format!(
            "FAIL  daemon: not running (no agent holds {}): nothing watches Telepresence sessions; start it with `telepolice-agent run`, or install the service",
            w.env.path("agent-run/telepolice-agent.lock").display()
        ),
        "{out}"
    );
    // Without the unit, the service is a warning only.
    std::fs::remove_dir_all(w.home().join(".config/systemd")).expect("unit removed");
    let out = w.doctor(&[]);
    assert!(
        out.line("service")
            .starts_with("warn  service: not installed (no telepolice-agent.service in "),
        "{out}"
    );
}

/// Telepresence 2: whether the traffic-manager answers through a port-forward, and whether
/// the user may open one (the agent's WebSocket port-forward needs `get`, which
/// Telepresence's own client Role does not grant).
#[test]
fn the_traffic_manager_is_reached_and_its_port_forward_permissions_checked() {
    let w = World::new("", false);
    let none = w.doctor(&[]);
    assert!(
        none.line("traffic-manager testcluster").starts_with(
            "ok    traffic-manager testcluster: none in namespace ambassador (no service/traffic-manager)"
        ),
        "{none}"
    );

    let tm =
        trafficmanager::TrafficManager::start(Default::default()).expect("the stand-in starts");
    crate::util::install_traffic_manager(&w.env.cluster, "ambassador", &tm).expect("installed");
    let out = w.doctor(&[]);
    assert!(
        out.line("traffic-manager testcluster").starts_with(&format!(
            "ok    traffic-manager testcluster: Telepresence 2's traffic-manager 2.20.2 in namespace ambassador answers through a port-forward to pod {}",
            crate::util::TRAFFIC_MANAGER_POD
        )),
        "{out}"
    );
    assert!(
        out.line("traffic-manager access testcluster").starts_with(
            "ok    traffic-manager access testcluster: all 4 permissions the traffic-manager's port-forward takes in namespace ambassador"
        ),
        "{out}"
    );

    w.env.cluster.deny("get", "pods/portforward");
    let denied = w.doctor(&[]);
    assert!(
        denied
            .line("traffic-manager testcluster")
            .starts_with("warn  traffic-manager testcluster: forwarding to port 8081 of pod"),
        "{denied}"
    );
    let access = denied.line("traffic-manager access testcluster");
    assert!(access.starts_with("warn "), "{denied}");
    assert!(
        access.contains("may not get pods/portforward (to open the port-forward"),
        "{access}"
    );
    assert!(!access.contains("create pods/portforward"), "{access}");
}

/// What a killed Telepresence 2 root daemon leaves (its socket) is reported with the
/// command that clears it, and left in place: it is root's.
#[test]
fn a_stale_root_daemon_socket_is_reported_never_removed() {
    let w = World::new("", false);
    let dir = w.env.path("tel2-run");
    std::fs::create_dir_all(&dir).expect("the test's socket dir");
    let socket = dir.join("telepresence-daemon.socket");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bound"));
    let out = w.doctor(&[]);
    let line = out.line("telepresence 2");
    assert!(
        line.starts_with(&format!(
            "warn  telepresence 2: stale root daemon socket {} (its daemon was killed)",
            socket.display()
        )),
        "{out}"
    );
    assert!(
        line.ends_with(&format!("run `sudo rm {}`", socket.display())),
        "{line}"
    );
    assert!(socket.exists());
}
