//! The real `telepolice-agent` binary against the emulator and the Telepresence stand-in:
//! sessions killed with SIGKILL are repaired, sessions that end normally are left alone.
//!
//! - `harness`: the agent as a test runs it, and the shared waits;
//! - `clusters`: two clusters, an unreachable one, resumes, knocks, refusals, server errors;
//! - `operations`: configuration reloads, notifications, logs, a dying shell, dry runs,
//!   `status`, credential plugins, late agents, a corrupt journal.

mod clusters;
pub(crate) mod harness;
mod operations;

pub(crate) use harness::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::standin::{Session, alive, label, replicas, setup};
use crate::util::{Env, live_pods, text};

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

pub(crate) fn run_cli(
    agent_envs: &[(&'static str, PathBuf)],
    args: &[&str],
) -> std::process::Output {
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
