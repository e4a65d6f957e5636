//! `install` and `uninstall` against stand-ins for `systemctl` and `launchctl` that log their
//! arguments, in a temp home.

use super::*;

/// A temp home with stand-ins for `systemctl` and `launchctl`. Each logs its arguments to
/// `<dir>/fake/log` and keeps the service's state in files there (`enabled`, `active`,
/// `loaded`), so repeated installs see what earlier ones did.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = Self { dir };
        std::fs::create_dir_all(f.path("home")).expect("home");
        std::fs::create_dir_all(f.path("fake")).expect("fake dir");
        let state = f.path("fake");
        let unit = f.unit_file();
        f.script(
            "systemctl",
            &format!(
                r#"#!/bin/sh
# A stand-in for systemctl --user.
dir='{state}'
echo "$*" >> "$dir/log"
if [ -e "$dir/no-manager" ]; then
    echo "Failed to connect to bus: No medium found" >&2
    exit 1
fi
case "$*" in
"--user show --property=Version") echo Version=252 ;;
"--user is-enabled {UNIT}") [ -e "$dir/enabled" ] && {{ echo enabled; exit 0; }}; echo disabled; exit 1 ;;
"--user is-active {UNIT}") [ -e "$dir/active" ] && {{ echo active; exit 0; }}; echo inactive; exit 3 ;;
"--user daemon-reload") ;;
"--user enable --now {UNIT}") [ -f '{unit}' ] || exit 5; touch "$dir/enabled" "$dir/active" ;;
"--user enable {UNIT}") [ -f '{unit}' ] || exit 5; touch "$dir/enabled" ;;
"--user restart {UNIT}") touch "$dir/active" ;;
"--user disable --now {UNIT}") rm -f "$dir/enabled" "$dir/active" ;;
*) echo "fake systemctl: unexpected arguments: $*" >&2; exit 64 ;;
esac
"#,
                state = state.display(),
                unit = unit.display(),
            ),
        );
        let uid = f.uid();
        f.script(
            "launchctl",
            &format!(
                r#"#!/bin/sh
# A stand-in for launchctl.
dir='{state}'
echo "$*" >> "$dir/log"
case "$*" in
"print gui/{uid}") [ -e "$dir/no-gui" ] && {{ echo "Could not find domain for port identifier" >&2; exit 113; }}; echo "gui/{uid} = {{" ;;
"print gui/{uid}/dev.telepolice.agent") [ -e "$dir/loaded" ] && {{ echo "state = running"; exit 0; }}; echo "Could not find service" >&2; exit 113 ;;
"enable gui/{uid}/dev.telepolice.agent") ;;
"bootstrap gui/{uid} "*) [ -f "$3" ] || exit 5; [ -e "$dir/loaded" ] && exit 37; touch "$dir/loaded" ;;
"bootout gui/{uid}/dev.telepolice.agent") rm -f "$dir/loaded" ;;
*) echo "fake launchctl: unexpected arguments: $*" >&2; exit 64 ;;
esac
"#,
                state = state.display(),
            ),
        );
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn uid(&self) -> u32 {
        std::fs::metadata(self.dir.path()).expect("temp dir").uid()
    }

    fn script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        std::fs::write(&p, body).expect("script written");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("mode");
    }

    fn unit_file(&self) -> PathBuf {
        self.path("xdg-config/systemd/user").join(UNIT)
    }

    fn plist_file(&self) -> PathBuf {
        self.path("home/Library/LaunchAgents").join(PLIST)
    }

    /// The stand-in's log so far, and cleared.
    fn take_log(&self) -> Vec<String> {
        let p = self.path("fake/log");
        let log = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        log.lines().map(String::from).collect()
    }

    /// Runs the agent with this home, the stand-ins and `manager`.
    fn agent(&self, manager: &str, args: &[&str]) -> Output {
        Command::new(AGENT)
            .args(args)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NOTIFY_SOCKET")
            .env("TELEPOLICE_SERVICE_MANAGER", manager)
            .env("TELEPOLICE_SYSTEMCTL", self.path("systemctl"))
            .env("TELEPOLICE_LAUNCHCTL", self.path("launchctl"))
            .env("TELEPOLICE_CONFIG", self.path("config.toml"))
            .env("TELEPOLICE_STATE_DIR", self.path("state"))
            .env("TELEPOLICE_RUNTIME_DIR", self.path("run"))
            .env("TELEPOLICE_LOG_DIR", self.path("logs"))
            .stdin(Stdio::null())
            .output()
            .expect("the agent runs")
    }

    /// Like [`Fixture::agent`], expecting success; returns what it printed.
    fn agent_ok(&self, manager: &str, args: &[&str]) -> String {
        let out = self.agent(manager, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    }
}

const QUERIES: [&str; 3] = [
    "--user show --property=Version",
    "--user is-enabled telepolice-agent.service",
    "--user is-active telepolice-agent.service",
];

fn with_queries(then: &[&str]) -> Vec<String> {
    QUERIES.iter().chain(then).map(|s| s.to_string()).collect()
}

#[test]
fn install_writes_the_unit_and_starts_it_once() {
    let f = Fixture::new();
    let printed = f.agent_ok("systemd", &["install"]);
    let unit = std::fs::read_to_string(f.unit_file()).expect("the unit is written");
    assert!(
        unit.contains(&format!("\nExecStart={AGENT} run\n")),
        "the unit starts this binary:\n{unit}"
    );
    assert!(unit.contains("\nType=notify\n"));
    assert_eq!(
        f.take_log(),
        with_queries(&[
            "--user daemon-reload",
            "--user enable --now telepolice-agent.service"
        ])
    );
    for step in [
        format!("writing {}", f.unit_file().display()),
        format!(
            "running `{} --user daemon-reload`",
            f.path("systemctl").display()
        ),
        "--user enable --now telepolice-agent.service`".to_string(),
        "journalctl --user -u telepolice-agent".to_string(),
    ] {
        assert!(printed.contains(&step), "missing {step:?} in:\n{printed}");
    }

    // Again: nothing to do, nothing touched.
    let inode = std::fs::metadata(f.unit_file()).expect("unit").ino();
    let printed = f.agent_ok("systemd", &["install"]);
    assert!(
        printed.contains("already installed and running"),
        "{printed}"
    );
    assert_eq!(f.take_log(), with_queries(&[]));
    assert_eq!(
        std::fs::metadata(f.unit_file()).expect("unit").ino(),
        inode,
        "an unchanged unit is not rewritten"
    );

    // A unit that differs from what this binary generates is replaced and the agent
    // restarted.
    std::fs::write(
        f.unit_file(),
        "[Service]\nExecStart=/old/telepolice-agent run\n",
    )
    .expect("an old unit");
    let printed = f.agent_ok("systemd", &["install"]);
    assert!(printed.contains("updated"), "{printed}");
    assert_eq!(std::fs::read_to_string(f.unit_file()).expect("unit"), unit);
    assert_eq!(
        f.take_log(),
        with_queries(&[
            "--user daemon-reload",
            "--user enable telepolice-agent.service",
            "--user restart telepolice-agent.service",
        ])
    );

    // Uninstall stops, disables and removes; a second one has nothing to do.
    let printed = f.agent_ok("systemd", &["uninstall"]);
    assert!(printed.contains("uninstalled"), "{printed}");
    assert!(!f.unit_file().exists());
    assert_eq!(
        f.take_log(),
        with_queries(&[
            "--user disable --now telepolice-agent.service",
            "--user daemon-reload"
        ])
    );
    let printed = f.agent_ok("systemd", &["uninstall"]);
    assert!(printed.contains("not installed"), "{printed}");
    assert_eq!(f.take_log(), with_queries(&[]));
}

#[test]
fn a_dry_run_prints_the_steps_and_only_asks() {
    let f = Fixture::new();
    let printed = f.agent_ok("systemd", &["install", "--dry-run"]);
    assert!(!f.unit_file().exists(), "nothing is written");
    assert!(!f.path("xdg-config").exists(), "no directory is made");
    assert_eq!(
        f.take_log(),
        with_queries(&[]),
        "only read-only queries run"
    );
    for line in [
        format!(
            "would create the directory {}",
            f.path("xdg-config/systemd/user").display()
        ),
        format!("would write {}", f.unit_file().display()),
        "--user enable --now telepolice-agent.service`".to_string(),
        "dry run: nothing was changed".to_string(),
    ] {
        assert!(printed.contains(&line), "missing {line:?} in:\n{printed}");
    }
    f.agent_ok("systemd", &["install"]);
    f.take_log();
    let printed = f.agent_ok("systemd", &["uninstall", "--dry-run"]);
    assert!(f.unit_file().exists(), "a dry uninstall removes nothing");
    assert_eq!(f.take_log(), with_queries(&[]));
    assert!(
        printed.contains(&format!("would remove {}", f.unit_file().display())),
        "{printed}"
    );
}

#[test]
fn without_a_user_manager_install_says_so_and_writes_nothing() {
    let f = Fixture::new();
    std::fs::write(f.path("fake/no-manager"), "").expect("marker");
    let out = f.agent("systemd", &["install"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("no systemd user manager"), "{said}");
    assert!(
        said.contains("No medium found"),
        "systemctl's own words: {said}"
    );
    assert!(!f.unit_file().exists());

    let out = Command::new(AGENT)
        .arg("install")
        .env("HOME", f.path("home"))
        .env("XDG_CONFIG_HOME", f.path("xdg-config"))
        .env("TELEPOLICE_SERVICE_MANAGER", "systemd")
        .env("TELEPOLICE_SYSTEMCTL", f.path("no-such-systemctl"))
        .env("TELEPOLICE_RUNTIME_DIR", f.path("run"))
        .env("TELEPOLICE_STATE_DIR", f.path("state"))
        .output()
        .expect("the agent runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not found"), "{}", text(&out));
    assert!(!f.unit_file().exists());
}

#[test]
fn a_dry_run_without_a_user_manager_prints_every_step_then_why_it_would_fail() {
    let f = Fixture::new();
    std::fs::write(f.path("fake/no-manager"), "").expect("marker");
    let out = f.agent("systemd", &["install", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let steps = [
        format!(
            "would create the directory {}",
            f.path("xdg-config/systemd/user").display()
        ),
        format!("would write {}", f.unit_file().display()),
        "--user daemon-reload`".to_string(),
        "--user enable --now telepolice-agent.service`".to_string(),
        "dry run: nothing was changed".to_string(),
    ];
    let mut at = 0;
    for step in &steps {
        let found = printed[at..]
            .find(step.as_str())
            .unwrap_or_else(|| panic!("missing {step:?} (in order) in:\n{printed}"));
        at += found + step.len();
    }
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the install would fail here: no systemd user manager")
            && said.contains("No medium found"),
        "{said}"
    );
    assert!(!f.unit_file().exists(), "nothing is written");
    assert!(!f.path("xdg-config").exists(), "no directory is made");

    // An agent started by hand: the steps, then that.
    std::fs::remove_file(f.path("fake/no-manager")).expect("marker");
    std::fs::create_dir_all(f.path("run")).expect("runtime dir");
    let lock = std::fs::File::create(f.path("run/telepolice-agent.lock")).expect("lock file");
    lock.try_lock().expect("the test holds the lock");
    let out = f.agent("systemd", &["install", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--user enable --now"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the install would fail here: another telepolice-agent runs"),
        "{}",
        text(&out)
    );
    assert!(!f.unit_file().exists());
}

#[test]
fn an_agent_started_by_hand_blocks_the_install() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("run")).expect("runtime dir");
    let lock = std::fs::File::create(f.path("run/telepolice-agent.lock")).expect("lock file");
    lock.try_lock()
        .expect("the test holds the lock, as a running agent would");
    let out = f.agent("systemd", &["install"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("another telepolice-agent runs"),
        "{}",
        text(&out)
    );
    assert!(!f.unit_file().exists());
    assert_eq!(f.take_log(), with_queries(&[]));
}

#[test]
fn launchd_install_writes_the_plist_and_bootstraps_it() {
    let f = Fixture::new();
    let uid = f.uid();
    let plist = f.plist_file();
    let printed = f.agent_ok("launchd", &["install"]);
    let content = std::fs::read_to_string(&plist).expect("the plist is written");
    assert!(
        content.contains(&format!("<string>{AGENT}</string>")),
        "{content}"
    );
    assert!(
        f.path("home/Library/Logs/telepolice-agent").is_dir(),
        "launchd does not make the log dir itself"
    );
    let target = format!("gui/{uid}/dev.telepolice.agent");
    assert_eq!(
        f.take_log(),
        [
            format!("print gui/{uid}"),
            format!("print {target}"),
            format!("enable {target}"),
            format!("bootstrap gui/{uid} {}", plist.display()),
        ]
    );
    assert!(printed.contains("installed"), "{printed}");

    let printed = f.agent_ok("launchd", &["install"]);
    assert!(
        printed.contains("already installed and running"),
        "{printed}"
    );
    assert_eq!(
        f.take_log(),
        [format!("print gui/{uid}"), format!("print {target}")]
    );

    std::fs::write(&plist, "<plist/>").expect("an old plist");
    f.agent_ok("launchd", &["install"]);
    assert_eq!(std::fs::read_to_string(&plist).expect("plist"), content);
    assert_eq!(
        f.take_log(),
        [
            format!("print gui/{uid}"),
            format!("print {target}"),
            format!("bootout {target}"),
            format!("enable {target}"),
            format!("bootstrap gui/{uid} {}", plist.display()),
        ]
    );

    f.agent_ok("launchd", &["uninstall"]);
    assert!(!plist.exists());
    assert_eq!(
        f.take_log(),
        [
            format!("print gui/{uid}"),
            format!("print {target}"),
            format!("bootout {target}"),
        ]
    );

    std::fs::write(f.path("fake/no-gui"), "").expect("marker");
    let out = f.agent("launchd", &["install"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("no gui/{uid} domain")),
        "{}",
        text(&out)
    );
    assert!(!plist.exists());
}
