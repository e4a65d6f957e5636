use super::*;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    }
}

fn systemd() -> Setup {
    Setup::resolve(
        &env(&[
            ("HOME", "/home/ada"),
            ("TELEPOLICE_SERVICE_MANAGER", "systemd"),
        ]),
        1000,
    )
    .expect("resolves")
}

fn launchd() -> Setup {
    Setup::resolve(
        &env(&[
            ("HOME", "/Users/ada"),
            ("TELEPOLICE_SERVICE_MANAGER", "launchd"),
        ]),
        501,
    )
    .expect("resolves")
}

fn observed(file: Option<&str>, enabled: bool, running: bool) -> Observed {
    Observed {
        file: file.map(String::from),
        missing_dirs: Vec::new(),
        enabled,
        running,
        held_lock: running.then(|| PathBuf::from("/run/user/1000/telepolice-agent.lock")),
    }
}

fn runs(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match s {
            Step::MakeDir(p) => format!("mkdir {}", p.display()),
            Step::Write { path, .. } => format!("write {}", path.display()),
            Step::Remove(p) => format!("rm {}", p.display()),
            Step::Run(args) => args.join(" "),
        })
        .collect()
}

#[test]
fn where_the_definitions_go() {
    let s = systemd();
    assert_eq!(
        s.file,
        Path::new("/home/ada/.config/systemd/user/telepolice-agent.service")
    );
    assert_eq!(s.program, "systemctl");
    let s = Setup::resolve(
        &env(&[
            ("HOME", "/home/ada"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("TELEPOLICE_SERVICE_MANAGER", "systemd"),
            ("TELEPOLICE_SYSTEMCTL", "/tmp/fake-systemctl"),
        ]),
        1000,
    )
    .expect("resolves");
    assert_eq!(
        s.file,
        Path::new("/xdg/systemd/user/telepolice-agent.service")
    );
    assert_eq!(s.program, "/tmp/fake-systemctl");
    // A relative XDG_CONFIG_HOME is ignored.
    let s = Setup::resolve(
        &env(&[
            ("HOME", "/home/ada"),
            ("XDG_CONFIG_HOME", "rel"),
            ("TELEPOLICE_SERVICE_MANAGER", "systemd"),
        ]),
        1000,
    )
    .expect("resolves");
    assert!(s.file.starts_with("/home/ada/.config"));
    let l = launchd();
    assert_eq!(
        l.file,
        Path::new("/Users/ada/Library/LaunchAgents/dev.telepolice.agent.plist")
    );
    assert_eq!(
        l.dirs[1],
        Path::new("/Users/ada/Library/Logs/telepolice-agent")
    );
    assert_eq!(l.program, "launchctl");
    assert!(matches!(
        Setup::resolve(&env(&[("TELEPOLICE_SERVICE_MANAGER", "systemd")]), 1),
        Err(ServiceError::NoHome)
    ));
    assert!(matches!(
        Setup::resolve(
            &env(&[("HOME", "/h"), ("TELEPOLICE_SERVICE_MANAGER", "upstart")]),
            1
        ),
        Err(ServiceError::UnknownManager { .. })
    ));
}

#[test]
fn the_unit_names_a_binary_in_home_with_percent_h() {
    let unit = systemd()
        .render(Path::new("/home/ada/.cargo/bin/telepolice-agent"))
        .expect("renders");
    assert_eq!(unit, files::canonical_unit().expect("renders"));
}

#[test]
fn systemd_install_plans() {
    let s = systemd();
    let file = "/home/ada/.config/systemd/user/telepolice-agent.service";
    let unit = "NEW";
    let cases: Vec<(&str, Observed, Vec<String>, &str)> = vec![
        (
            "fresh",
            Observed {
                missing_dirs: vec![PathBuf::from("/home/ada/.config/systemd/user")],
                ..observed(None, false, false)
            },
            vec![
                "mkdir /home/ada/.config/systemd/user".to_string(),
                format!("write {file}"),
                "--user daemon-reload".to_string(),
                "--user enable --now telepolice-agent.service".to_string(),
            ],
            "installed",
        ),
        (
            "same content, running",
            observed(Some(unit), true, true),
            vec![],
            "already installed and running",
        ),
        (
            "same content, stopped by hand",
            observed(Some(unit), true, false),
            vec!["--user enable --now telepolice-agent.service".to_string()],
            "already installed",
        ),
        (
            "changed content",
            observed(Some("OLD"), true, true),
            vec![
                format!("write {file}"),
                "--user daemon-reload".to_string(),
                "--user enable telepolice-agent.service".to_string(),
                "--user restart telepolice-agent.service".to_string(),
            ],
            "updated",
        ),
    ];
    for (name, now, want, outcome) in cases {
        let plan = plan_install(&s, &now, unit).expect(name);
        assert_eq!(runs(&plan), want, "{name}");
        assert!(
            plan.outcome.starts_with(outcome),
            "{name}: {}",
            plan.outcome
        );
    }
}

#[test]
fn launchd_install_plans() {
    let l = launchd();
    let file = "/Users/ada/Library/LaunchAgents/dev.telepolice.agent.plist";
    let cases: Vec<(&str, Observed, Vec<String>)> = vec![
        (
            "fresh",
            Observed {
                missing_dirs: l.dirs.clone(),
                ..observed(None, false, false)
            },
            vec![
                "mkdir /Users/ada/Library/LaunchAgents".to_string(),
                "mkdir /Users/ada/Library/Logs/telepolice-agent".to_string(),
                format!("write {file}"),
                "enable gui/501/dev.telepolice.agent".to_string(),
                format!("bootstrap gui/501 {file}"),
            ],
        ),
        ("same, loaded", observed(Some("NEW"), true, true), vec![]),
        (
            "same, not loaded",
            observed(Some("NEW"), false, false),
            vec![
                "enable gui/501/dev.telepolice.agent".to_string(),
                format!("bootstrap gui/501 {file}"),
            ],
        ),
        (
            "changed, loaded",
            observed(Some("OLD"), true, true),
            vec![
                "bootout gui/501/dev.telepolice.agent".to_string(),
                format!("write {file}"),
                "enable gui/501/dev.telepolice.agent".to_string(),
                format!("bootstrap gui/501 {file}"),
            ],
        ),
    ];
    for (name, now, want) in cases {
        let plan = plan_install(&l, &now, "NEW").expect(name);
        assert_eq!(runs(&plan), want, "{name}");
    }
}

#[test]
fn an_agent_started_by_hand_stops_the_install_before_any_step() {
    for s in [systemd(), launchd()] {
        let now = Observed {
            held_lock: Some(PathBuf::from("/run/lock")),
            ..observed(None, false, false)
        };
        assert!(matches!(
            plan_install(&s, &now, "NEW"),
            Err(ServiceError::AnotherAgent { .. })
        ));
        // The service's own agent holds the lock while it runs: that is fine.
        let now = observed(Some("OLD"), true, true);
        assert!(plan_install(&s, &now, "NEW").is_ok());
    }
}

#[test]
fn uninstall_plans() {
    let s = systemd();
    let file = "/home/ada/.config/systemd/user/telepolice-agent.service";
    let cases: Vec<(&str, Observed, Vec<String>, &str)> = vec![
        (
            "installed and running",
            observed(Some("X"), true, true),
            vec![
                "--user disable --now telepolice-agent.service".to_string(),
                format!("rm {file}"),
                "--user daemon-reload".to_string(),
            ],
            "uninstalled",
        ),
        (
            "file left, disabled",
            observed(Some("X"), false, false),
            vec![format!("rm {file}"), "--user daemon-reload".to_string()],
            "uninstalled",
        ),
        (
            "nothing",
            observed(None, false, false),
            vec![],
            "not installed",
        ),
        (
            "a unit from a package",
            observed(None, true, true),
            vec!["--user disable --now telepolice-agent.service".to_string()],
            "stopped and disabled",
        ),
    ];
    for (name, now, want, outcome) in cases {
        let plan = plan_uninstall(&s, &now);
        assert_eq!(runs(&plan), want, "{name}");
        assert!(
            plan.outcome.starts_with(outcome),
            "{name}: {}",
            plan.outcome
        );
    }
    let l = launchd();
    let plan = plan_uninstall(&l, &observed(Some("X"), true, true));
    assert_eq!(
        runs(&plan),
        [
            "bootout gui/501/dev.telepolice.agent".to_string(),
            "rm /Users/ada/Library/LaunchAgents/dev.telepolice.agent.plist".to_string()
        ]
    );
    assert!(
        plan_uninstall(&l, &observed(None, false, false))
            .steps
            .is_empty()
    );
}

#[test]
fn a_dry_run_prints_every_step_and_does_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = systemd();
    s.file = dir.path().join("unit");
    // A program that does not exist: a dry run never runs it.
    s.program = dir.path().join("no-such-systemctl").display().to_string();
    let plan = plan_install(&s, &observed(None, false, false), "NEW").expect("plans");
    let mut out = Vec::new();
    execute(&s, &plan, true, &mut out).expect("a dry run succeeds");
    let out = String::from_utf8(out).expect("text");
    assert!(!s.file.exists());
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("would write "), "{out}");
    assert!(
        lines[1].starts_with("would run `") && lines[1].ends_with("--user daemon-reload`"),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"dry run: nothing was changed"));
}

#[test]
fn steps_are_printed_as_they_are_taken() {
    assert_eq!(capitalised_doing("write /a b"), "writing /a b");
    assert_eq!(
        capitalised_doing("run `systemctl --user daemon-reload`"),
        "running `systemctl --user daemon-reload`"
    );
    assert_eq!(
        capitalised_doing("create the directory /x"),
        "creating the directory /x"
    );
}
