//! What the real Telepresence 0.109 showed and the stand-in did not, until it did: the
//! tel-* dir is always in /tmp, sessions started together from one directory share (and
//! truncate) one log, `--version` is no session, and a shell may die before the agent has
//! proven which session id is its Telepresence's.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::agent::{Agent, actions, agent_writes, wait_for};
use crate::standin::{Session, replicas, setup};
use crate::util::{Env, live_pods, text};

/// Every record of `agent` for the process `pid`.
fn record_of(agent: &Agent, pid: u32) -> Option<Value> {
    agent
        .sessions()
        .into_iter()
        .find(|r| r["process"]["pid"].as_u64() == Some(u64::from(pid)))
}

/// Waits until the record of `pid` is in `state`.
fn wait_record(agent: &Agent, pid: u32, state: &str) -> Value {
    let mut found = None;
    wait_for(&format!("session of pid {pid} is {state}"), || {
        found = record_of(agent, pid).filter(|r| r["state"] == state);
        found.is_some()
    });
    found.unwrap_or_default()
}

/// Pods labelled `telepresence`, not yet deleted (a deleted pod lingers a moment).
fn labelled_pods(env: &Env) -> Vec<String> {
    env.cluster
        .list("pods", Some("default"))
        .iter()
        .filter(|p| p.pointer("/metadata/labels/telepresence").is_some())
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| text(p, "/metadata/name"))
        .collect()
}

#[test]
fn a_session_whose_tmpdir_is_elsewhere_is_repaired_from_tmp() {
    // Session::start gives the session a TMPDIR of its own, as libpam-tmpdir or a Mac
    // does; 0.x ignores it and makes its dir in /tmp.
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let mut s = Session::start_program(&env, &program, "0.109", &["--swap-deployment", "app"]);
    let id = s.wait_id(&env);
    let dir = s.tel_dir().expect("reported");
    assert!(
        dir.to_string_lossy().starts_with("/tmp/tel-"),
        "{}",
        dir.display()
    );
    s.wait_ready(&env, 4);
    let rec = wait_record(&agent, s.pid(), "Active");
    assert_eq!(rec["telepresence_id"], id.as_str());
    s.signal("KILL");
    s.wait_exit(&env);
    let rec = wait_record(&agent, s.pid(), "Cleaned");
    assert_eq!(replicas(&env, "app"), 2);
    assert!(labelled_pods(&env).is_empty(), "{:?}", labelled_pods(&env));
    assert!(!dir.exists(), "its tel-* dir in /tmp is removed");
    assert!(
        actions(&rec)
            .iter()
            .any(|a| a.contains(&dir.display().to_string())),
        "{:#?}",
        actions(&rec)
    );
    // Where a person looks: `status` lists the repair, and the log line names it.
    let status = agent.status_table();
    assert!(
        status.contains("Repaired in the last 24 hours:")
            && status.contains("swap deployment/app in testcluster/default")
            && status.contains(": scale deployment/app to 2"),
        "{status}"
    );
    agent.wait_log("session repaired: scale deployment/app to 2");
    assert!(
        agent
            .log()
            .contains("target=swap deployment/app context=testcluster namespace=default"),
        "{}",
        agent.log()
    );
}

/// A stress test's count: `var` when set (by hand, for a long run), else `default`.
fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[test]
fn twins_started_together_from_one_directory_are_each_repaired() {
    // `checkout-service-backend` and `checkout-service-frontend`: the same first 17
    // characters, so both proxies are `checkout-service--<id>`; both sessions truncate and
    // write one ./telepresence.log. Each must get its own id, and its own repair.
    let Some(env) = setup() else { return };
    env.deployment("default", "checkout-service-backend", 2);
    env.deployment("default", "checkout-service-frontend", 3);
    env.wait("five checkout pods", |c| {
        live_pods(c, "default", "checkout-service-backend").len() == 2
            && live_pods(c, "default", "checkout-service-frontend").len() == 3
    });
    let (agent, program) = Agent::start(&env, "");
    // `TELEPOLICE_TEST_TWIN_PAIRS=50` by hand.
    for pair in 0..count("TELEPOLICE_TEST_TWIN_PAIRS", 2) {
        let mut backend = Session::start_program(
            &env,
            &program,
            "0.109",
            &["--swap-deployment", "checkout-service-backend"],
        );
        let mut frontend = Session::start_program(
            &env,
            &program,
            "0.109",
            &["--swap-deployment", "checkout-service-frontend"],
        );
        let ids = [backend.wait_id(&env), frontend.wait_id(&env)];
        backend.wait_ready(&env, 4);
        frontend.wait_ready(&env, 4);
        for (s, id) in [(&backend, &ids[0]), (&frontend, &ids[1])] {
            let rec = wait_record(&agent, s.pid(), "Active");
            assert_eq!(rec["telepresence_id"], id.as_str(), "pair {pair}: {rec:#}");
        }
        backend.signal("KILL");
        frontend.signal("KILL");
        backend.wait_exit(&env);
        frontend.wait_exit(&env);
        for s in [&backend, &frontend] {
            let rec = wait_record(&agent, s.pid(), "Cleaned");
            assert!(
                !actions(&rec).iter().any(|a| a.contains("failed")),
                "pair {pair}: {:#?}",
                actions(&rec)
            );
        }
        assert_eq!(replicas(&env, "checkout-service-backend"), 2, "pair {pair}");
        assert_eq!(
            replicas(&env, "checkout-service-frontend"),
            3,
            "pair {pair}"
        );
        assert!(
            labelled_pods(&env).is_empty(),
            "pair {pair}: {:?}",
            labelled_pods(&env)
        );
        assert!(
            backend.tel_dir().is_some_and(|d| !d.exists()),
            "pair {pair}"
        );
        assert!(
            frontend.tel_dir().is_some_and(|d| !d.exists()),
            "pair {pair}"
        );
    }
    agent.stop();
}

#[test]
fn version_and_help_are_not_sessions() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    for flag in ["--version", "--help"] {
        let mut s = Session::start_program(&env, &program, "0.109", &[flag]);
        s.wait_exit(&env);
    }
    // Then a real session, so that the agent has certainly looked at all three.
    let mut s = Session::start_program(&env, &program, "0.109", &["--swap-deployment", "app"]);
    s.wait_id(&env);
    wait_record(&agent, s.pid(), "Active");
    let recorded: Vec<String> = agent
        .sessions()
        .iter()
        .map(|r| format!("{} {}", r["process"]["pid"], r["argv"]))
        .collect();
    assert_eq!(
        recorded.len(),
        1,
        "only the swap is a session: {recorded:#?}"
    );
    agent.wait_log("prints and exits: not a session");
}

#[test]
fn a_shell_that_dies_before_the_session_id_is_proven_still_counts() {
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    // Slow API calls: the session is recorded well before its proxy exists, and so before
    // its id can be proven; the shell dies in that window.
    env.cluster.set_latency(Duration::from_millis(700));
    let script = format!("'{}' --swap-deployment app; echo done", program.display());
    let mut shell =
        Session::start_with(&env, Path::new("/bin/bash"), "0.109", &["-c", &script], &[]);
    let rec = agent.wait_state("Recorded");
    assert!(rec["telepresence_id"].is_null(), "{rec:#}");
    shell.signal("HUP");
    shell.wait_exit(&env);
    env.cluster.set_latency(Duration::ZERO);
    let rec = agent.wait_state("Ended");
    assert!(
        actions(&rec)
            .iter()
            .any(|a| a.starts_with("SIGTERM to Telepresence (its shell died) -> done")),
        "{:#?}",
        actions(&rec)
    );
    wait_for("Telepresence's own cleanup restored the original", || {
        replicas(&env, "app") == 2
    });
    assert_eq!(agent_writes(&env), Vec::<String>::new());
}

/// Runs the binary with `args` and the agent's own dirs, for this test's cluster.
fn cli(env: &Env, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_telepolice-agent"));
    cmd.args(args);
    for (k, v) in crate::agent::agent_envs(env).into_iter().chain(env.envs()) {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the command runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_session_passed_over_is_said_once_and_shown_by_status_and_doctor() {
    let Some(env) = setup() else { return };
    // The test's cluster is out of scope: the session is seen and not followed.
    let (agent, program) = Agent::start(&env, "contexts = [\"elsewhere\"]");
    let mut s = Session::start_program(&env, &program, "0.109", &["--swap-deployment", "app"]);
    s.wait_id(&env);
    s.wait_ready(&env, 4);
    let said = "not following Telepresence process: context testcluster namespace default is outside the configured scope";
    agent.wait_log(said);
    let shown = format!("pid {} (not followed", s.pid());
    wait_for("status -v lists it", || {
        cli(&env, &["status", "-v"]).contains(&shown)
    });
    assert!(
        cli(&env, &["status"]).contains("1 Telepresence process(es) not followed"),
        "{}",
        cli(&env, &["status"])
    );
    let doctor = cli(&env, &["doctor", "--timeout", "5"]);
    assert!(
        doctor.contains(&format!(
            "processes: pid {} not followed: context testcluster",
            s.pid()
        )),
        "{doctor}"
    );
    // The safety-net scan (every 5 s here) looks again; the log says it once.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(agent.log().matches(said).count(), 1, "{}", agent.log());
    assert!(agent.sessions().is_empty(), "nothing recorded");
}

#[test]
fn every_closed_terminal_is_acted_on() {
    // A terminal closes at a different instant of the session's start each time: before the
    // id is proven, while the proxy starts, once it is Active.
    let Some(env) = setup() else { return };
    let (agent, program) = Agent::start(&env, "");
    let script = format!("'{}' --swap-deployment app; echo done", program.display());
    // `TELEPOLICE_TEST_SHELL_DEATHS=200` by hand, during a parallel build, for the stress.
    let n = count("TELEPOLICE_TEST_SHELL_DEATHS", 3);
    let mut missed = Vec::new();
    for i in 0..n {
        let mut shell =
            Session::start_with(&env, Path::new("/bin/bash"), "0.109", &["-c", &script], &[]);
        // The agent has seen the session (its record exists), then the terminal goes after
        // 0 to 1.5 s more.
        let mut tp = None;
        wait_for("the session is recorded", || {
            tp = agent
                .sessions()
                .into_iter()
                .find(|r| {
                    r["state"] != "Ended"
                        && r["parent"]["pid"].as_u64() == Some(u64::from(shell.pid()))
                })
                .and_then(|r| r["process"]["pid"].as_u64());
            tp.is_some()
        });
        let pid = u32::try_from(tp.unwrap_or_default()).expect("a pid");
        std::thread::sleep(Duration::from_millis((i as u64 * 397) % 1500));
        shell.signal("HUP");
        shell.wait_exit(&env);
        let mut rec = Value::Null;
        let ended = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            rec = record_of(&agent, pid).unwrap_or_default();
            rec["state"] == "Ended" || rec["state"] == "Cleaned"
        });
        let acted = actions(&rec)
            .iter()
            .any(|a| a.starts_with("SIGTERM to Telepresence (its shell died) -> done"));
        if !(ended && acted) {
            missed.push(format!("close {i}: {rec:#}"));
        }
        wait_for("the original is back", || replicas(&env, "app") == 2);
        wait_for("no proxy pod left", || labelled_pods(&env).is_empty());
    }
    assert!(
        missed.is_empty(),
        "{} of {n} closes missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}
