//! Sessions in two clusters, clusters that do not answer or refuse, and the ways a waiting
//! repair is woken.

use super::*;

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
