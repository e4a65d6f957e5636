//! How the agent runs day to day: configuration reloads, notifications, logs, a dying
//! shell, dry runs, `status`, credential plugins, late agents, a corrupt journal.

use super::*;

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
    // Team mode writes nothing in a dry run either (no heartbeat, no facts).
    assert_eq!(all_agent_writes(&env), Vec::<String>::new());
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
