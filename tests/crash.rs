//! The agent's own crashes, and a cluster lost in the middle of a repair: at each failpoint
//! of recording and cleanup (`src/failpoint.rs`) the agent dies of SIGKILL, an agent
//! restarted on the same journal finishes the repair, and the emulator's audit log shows
//! every write carried out exactly once.
//!
//! The emulator keeps deleted pods `Terminating` for 30 s, as a real cluster does for a
//! pod's default grace period: a restarted agent sees the proxy pod it deleted before it
//! died still there, and must not delete it again.

use std::path::Path;
use std::time::Duration;

use crate::agent::{Agent, actions, last_reason, wait_for};
use crate::standin::{Session, alive, replicas, setup_with};
use crate::util::Env;

/// The helper processes a session of either scenario runs (logs, port-forward, ssh,
/// sshfs).
const HELPERS: usize = 4;

/// The sessions the tests run, all of the stand-in's 0.109.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `--swap-deployment app`: a bare proxy pod; the repair scales `app` back to 2, then
    /// deletes the pod.
    Swap,
    /// `--new-deployment tp-shell --expose 8080`: a proxy pod and a service; the repair
    /// deletes the pod, then the service.
    NewWithService,
}

impl Scenario {
    fn args(self) -> &'static [&'static str] {
        match self {
            Scenario::Swap => &["--swap-deployment", "app"],
            Scenario::NewWithService => &["--new-deployment", "tp-shell", "--expose", "8080"],
        }
    }

    /// How many proxy objects the agent records.
    fn proxies(self) -> usize {
        match self {
            Scenario::Swap => 1,
            Scenario::NewWithService => 2,
        }
    }

    /// The writes a repair carries out, in order, as `verb resource name`.
    fn repair_writes(self, id: &str) -> Vec<String> {
        match self {
            Scenario::Swap => vec![
                "patch deployments app".to_string(),
                format!("delete pods app-{id}"),
            ],
            Scenario::NewWithService => vec![
                "delete pods tp-shell".to_string(),
                "delete services tp-shell".to_string(),
            ],
        }
    }

    /// The proxy objects, as (resource, name).
    fn proxy_objects(self, id: &str) -> Vec<(&'static str, String)> {
        match self {
            Scenario::Swap => vec![("pods", format!("app-{id}"))],
            Scenario::NewWithService => vec![
                ("pods", "tp-shell".to_string()),
                ("services", "tp-shell".to_string()),
            ],
        }
    }
}

/// An emulator with `app` at 2 replicas whose deleted pods stay `Terminating` for 30 s.
fn cluster() -> Option<Env> {
    setup_with(testcluster::Options {
        pod_termination_delay: Duration::from_secs(30),
        ..Default::default()
    })
}

/// The agent's (kube-rs's: no User-Agent) writes, as `verb resource name`, split into those
/// the emulator carried out and those it refused, with the status of each refusal.
fn agent_writes_by_outcome(env: &Env) -> (Vec<String>, Vec<(String, u16)>) {
    let mut done = Vec::new();
    let mut refused = Vec::new();
    for e in env.cluster.audit() {
        let write = matches!(
            e.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        );
        if !write || !e.user_agent.is_empty() {
            continue;
        }
        let what = format!("{} {} {}", e.verb, e.resource, e.name.unwrap_or_default());
        // Team mode's heartbeat and facts are not repair writes (tested on their own).
        if crate::agent::harness::is_team_write(&what) {
            continue;
        }
        if (200..300).contains(&e.status) {
            done.push(what);
        } else {
            refused.push((what, e.status));
        }
    }
    (done, refused)
}

/// Waits until the agent follows the session fully: `Active`, every proxy recorded.
fn wait_followed(agent: &Agent, scenario: Scenario) {
    wait_for("the session is active with every proxy recorded", || {
        agent.sessions().iter().any(|r| {
            r["state"] == "Active"
                && r["proxies"].as_array().map_or(0, Vec::len) == scenario.proxies()
        })
    });
}

/// The end every test checks: the record is `Cleaned`, the original back at 2, every proxy
/// gone or on its way out, the helpers stopped, and each repair write carried out exactly
/// once; a refused attempt is only ever one that changes nothing (404, 409, 422).
fn assert_repaired_once(
    env: &Env,
    agent: &Agent,
    scenario: Scenario,
    id: &str,
    helpers: &[(u32, Vec<String>)],
) {
    let rec = agent.wait_state("Cleaned");
    // The record's actions and the agent's log without its debug lines.
    let history = || {
        let log = agent.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
        format!("{:#?}\n{}", actions(&rec), lines.join("\n"))
    };
    assert_eq!(
        replicas(env, "app"),
        2,
        "the original is at its replicas: {}",
        history()
    );
    for (resource, name) in scenario.proxy_objects(id) {
        let left = env.cluster.get(resource, "default", &name);
        assert!(
            left.as_ref()
                .is_none_or(|o| o.pointer("/metadata/deletionTimestamp").is_some()),
            "{resource}/{name} is gone or being deleted: {left:#?}\n{}",
            history()
        );
    }
    let (done, refused) = agent_writes_by_outcome(env);
    assert_eq!(
        done,
        scenario.repair_writes(id),
        "each repair write is carried out once: {}",
        history()
    );
    assert!(
        refused
            .iter()
            .all(|(_, status)| matches!(status, 404 | 409 | 422)),
        "refused writes change nothing: {refused:?}"
    );
    for (pid, argv) in helpers {
        wait_for(&format!("helper {pid} {argv:?} stops"), || !alive(*pid));
    }
}

/// Arms `failpoint` in the first agent; it dies there (while recording the session, or
/// repairing it once the session is killed with SIGKILL); a second agent on the same dirs
/// finishes the repair, and each write is carried out exactly once.
fn a_restart_finishes_the_repair(failpoint: &str, scenario: Scenario) {
    // The agent is built with the same profile as this test: without debug assertions it
    // has no failpoints.
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: failpoints exist only in builds with debug assertions");
        return;
    }
    let Some(env) = cluster() else { return };
    let program = Agent::program(&env);
    let mut agent =
        Agent::start_with_env(&env, &program, "", &[("TELEPOLICE_FAILPOINT", failpoint)]);
    let mut s = Session::start_program(&env, &program, "0.109", scenario.args());
    let id = s.wait_id(&env);
    if failpoint.starts_with("record.") {
        // Dies while recording the live session; the next agent resumes following it.
        agent.wait_killed_at(failpoint);
        agent = restart(&env, &program);
    }
    let helpers = s.wait_ready(&env, HELPERS);
    wait_followed(&agent, scenario);
    s.signal("KILL");
    s.wait_exit(&env);
    if failpoint.starts_with("cleanup.") {
        agent.wait_killed_at(failpoint);
        agent = restart(&env, &program);
    }
    assert_repaired_once(&env, &agent, scenario, &id, &helpers);
}

/// A second agent on the same dirs, without a failpoint.
fn restart(env: &Env, program: &Path) -> Agent {
    let agent = Agent::start_with(env, program, "");
    agent.wait_log("resuming session from the journal");
    agent
}

#[test]
fn killed_after_the_new_session_is_saved() {
    a_restart_finishes_the_repair("record.seen", Scenario::Swap);
}

#[test]
fn killed_after_the_original_is_recorded() {
    a_restart_finishes_the_repair("record.original", Scenario::Swap);
}

#[test]
fn killed_after_the_session_id_is_recorded() {
    a_restart_finishes_the_repair("record.session-id", Scenario::Swap);
}

#[test]
fn killed_after_the_proxy_is_recorded() {
    a_restart_finishes_the_repair("record.proxy", Scenario::Swap);
}

#[test]
fn killed_after_the_second_proxy_is_recorded() {
    a_restart_finishes_the_repair("record.proxy:2", Scenario::NewWithService);
}

#[test]
fn killed_after_the_session_is_orphaned() {
    a_restart_finishes_the_repair("cleanup.orphaned", Scenario::Swap);
}

#[test]
fn killed_after_the_repair_is_planned() {
    a_restart_finishes_the_repair("cleanup.planned", Scenario::Swap);
}

#[test]
fn killed_after_the_restore_before_it_is_journaled() {
    a_restart_finishes_the_repair("cleanup.restored", Scenario::Swap);
}

#[test]
fn killed_after_the_restore_is_journaled() {
    a_restart_finishes_the_repair("cleanup.action-saved", Scenario::Swap);
}

#[test]
fn killed_after_the_delete_before_it_is_journaled() {
    a_restart_finishes_the_repair("cleanup.deleted", Scenario::Swap);
}

#[test]
fn killed_after_the_delete_is_journaled() {
    a_restart_finishes_the_repair("cleanup.action-saved:2", Scenario::Swap);
}

#[test]
fn killed_after_the_first_of_two_deletes_before_it_is_journaled() {
    a_restart_finishes_the_repair("cleanup.deleted", Scenario::NewWithService);
}

#[test]
fn killed_after_the_second_of_two_deletes_before_it_is_journaled() {
    a_restart_finishes_the_repair("cleanup.deleted:2", Scenario::NewWithService);
}

#[test]
fn killed_after_the_helpers_are_stopped() {
    a_restart_finishes_the_repair("cleanup.helpers-stopped", Scenario::Swap);
}

/// The cluster carries out the request for `verb` on `resource` of the repair and goes off
/// the network before answering; once it is back, the same agent finishes the repair.
fn the_cluster_lost_mid_repair_is_repaired_once_it_is_back(verb: &str, resource: &str) {
    let Some(env) = cluster() else { return };
    let (agent, program) = Agent::start(&env, "");
    let mut s = Session::start_program(&env, &program, "0.109", Scenario::Swap.args());
    let id = s.wait_id(&env);
    let helpers = s.wait_ready(&env, HELPERS);
    wait_followed(&agent, Scenario::Swap);
    env.cluster.unreachable_after(verb, resource);
    s.signal("KILL");
    s.wait_exit(&env);
    wait_for("the cluster goes away in the middle of the repair", || {
        !env.cluster.is_reachable()
    });
    wait_for("the agent reports the unreachable cluster", || {
        agent
            .sessions()
            .iter()
            .any(|r| r["state"] == "Orphaned" && last_reason(r).contains("unreachable"))
    });
    assert!(env.cluster.set_reachable(true));
    assert_repaired_once(&env, &agent, Scenario::Swap, &id, &helpers);
}

#[test]
fn the_cluster_lost_right_after_the_restore_is_repaired_once_it_is_back() {
    the_cluster_lost_mid_repair_is_repaired_once_it_is_back("patch", "deployments");
}

#[test]
fn the_cluster_lost_right_after_the_last_delete_is_repaired_once_it_is_back() {
    the_cluster_lost_mid_repair_is_repaired_once_it_is_back("delete", "pods");
}
