//! The agent as a user service: the committed unit and plist are what the binary generates
//! (and systemd's and Python's parsers accept what it generates); `install` and
//! `uninstall` against stand-ins for `systemctl` and `launchctl` that log their arguments,
//! in a temp home; and the real daemon telling a test-owned notify socket that it is ready,
//! alive, and stopping.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::python3_available;

const AGENT: &str = env!("CARGO_BIN_EXE_telepolice-agent");
const UNIT: &str = "telepolice-agent.service";
const PLIST: &str = "dev.telepolice.agent.plist";

/// The repository's root (the committed copies live under it).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The lines of `want` and `got` that differ, numbered, for a readable failure.
fn line_diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut d = String::new();
    let mut shown = 0;
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i), g.get(i));
        if a != b {
            shown += 1;
            if shown > 10 {
                d.push_str("...\n");
                break;
            }
            d.push_str(&format!(
                "line {}:\n  committed: {}\n  generated: {}\n",
                i + 1,
                a.unwrap_or(&"<none>"),
                b.unwrap_or(&"<none>")
            ));
        }
    }
    d
}

#[test]
fn the_committed_service_files_are_what_the_binary_generates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(AGENT)
        .args(["service-files", "--canonical", "--out"])
        .arg(dir.path())
        .output()
        .expect("the agent runs");
    assert!(out.status.success(), "{}", text(&out));
    for name in [format!("systemd/{UNIT}"), format!("launchd/{PLIST}")] {
        let generated = std::fs::read_to_string(dir.path().join(&name)).expect("generated");
        let committed = std::fs::read_to_string(repo().join(&name)).unwrap_or_default();
        assert!(
            committed == generated,
            "{name} differs from what the binary generates; regenerate the committed copies with\n\n    cargo run -- service-files --canonical --out .\n\nand commit them. Differences:\n{}",
            line_diff(&committed, &generated)
        );
    }
}

#[test]
fn service_files_prints_both_for_this_binary_and_home() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(AGENT)
        .arg("service-files")
        .env("HOME", dir.path())
        .output()
        .expect("the agent runs");
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with(&format!("==> systemd/{UNIT} <==\n")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("==> launchd/{PLIST} <==\n")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("\nExecStart={AGENT} run\n")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "<string>{}/Library/Logs/telepolice-agent/launchd.stderr.log</string>",
            dir.path().display()
        )),
        "{printed}"
    );
    // A path systemd would refuse is bad usage, said plainly.
    let out = Command::new(AGENT)
        .args(["service-files", "--binary", "/opt/a\"b/telepolice-agent"])
        .output()
        .expect("the agent runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("quote or a backslash"),
        "{}",
        text(&out)
    );
}

/// `systemd-analyze`, or `None` (printed as a skip; in CI a failure) when it is not installed. `.ci/run`
/// installs it and verifies the committed unit itself.
fn systemd_analyze() -> Option<&'static str> {
    crate::util::tool_available("systemd-analyze", "checking the generated unit", "systemd")
        .then_some("systemd-analyze")
}

/// Runs `systemd-analyze --user verify` on `unit` with `home` as the home directory;
/// returns what it said (nothing means the unit is fine).
fn verify(unit: &Path, home: &Path) -> String {
    let run = home.join("run");
    std::fs::create_dir_all(&run).expect("runtime dir");
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(unit)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .expect("systemd-analyze runs");
    let said = text(&out);
    if out.status.success() {
        said
    } else {
        format!("{said}\n({})", out.status)
    }
}

/// An executable stand-in at `path` (systemd-analyze checks that ExecStart's program
/// exists and is executable).
fn stub_binary(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
    std::fs::write(path, "#!/bin/sh\nexit 0\n").expect("stub");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("mode");
}

#[test]
fn systemd_accepts_the_generated_units() {
    if systemd_analyze().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().join("home dir");
    // The committed unit, its binary where `cargo install` puts it.
    stub_binary(&home.join(".cargo/bin/telepolice-agent"));
    let said = verify(&repo().join("systemd").join(UNIT), &home);
    assert!(said.is_empty(), "systemd-analyze verify:\n{said}");
    // Binaries with a space, a percent sign and a dollar sign in their path, in and out of
    // the home directory.
    for binary in [
        home.join("my tools/telepolice-agent"),
        dir.path().join("opt/100% $sure/telepolice-agent"),
    ] {
        stub_binary(&binary);
        let out_dir = dir.path().join("out");
        let out = Command::new(AGENT)
            .arg("service-files")
            .arg("--binary")
            .arg(&binary)
            .arg("--out")
            .arg(&out_dir)
            .env("HOME", &home)
            .output()
            .expect("the agent runs");
        assert!(out.status.success(), "{}", text(&out));
        let unit = out_dir.join("systemd").join(UNIT);
        let said = verify(&unit, &home);
        assert!(
            said.is_empty(),
            "systemd-analyze verify of the unit for {}:\n{said}\n{}",
            binary.display(),
            std::fs::read_to_string(&unit).unwrap_or_default()
        );
    }
}

#[test]
fn the_generated_plists_parse_with_python_plistlib() {
    if !python3_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // XML's special characters. (A quote in the binary's path is refused: systemd would not
    // run it, and `service-files` renders the unit too.)
    let home = dir.path().join("Ada & <Bob's>");
    let binary = dir.path().join("bin & <tools>/telepolice-agent");
    let out = Command::new(AGENT)
        .arg("service-files")
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(dir.path())
        .env("HOME", &home)
        .output()
        .expect("the agent runs");
    assert!(out.status.success(), "{}", text(&out));
    const CHECK: &str = r#"
import plistlib, sys
with open(sys.argv[1], "rb") as f:
    p = plistlib.load(f)
assert p["Label"] == "dev.telepolice.agent", p
assert p["ProgramArguments"] == [sys.argv[2], "run"], p["ProgramArguments"]
assert p["RunAtLoad"] is True
assert p["KeepAlive"] == {"SuccessfulExit": False}, p["KeepAlive"]
assert p["ProcessType"] == "Background"
logs = sys.argv[3] + "/Library/Logs/telepolice-agent/"
assert p["StandardOutPath"] == logs + "launchd.stdout.log", p["StandardOutPath"]
assert p["StandardErrorPath"] == logs + "launchd.stderr.log", p["StandardErrorPath"]
print("ok")
"#;
    for (plist, binary, home) in [
        (
            dir.path().join("launchd").join(PLIST),
            binary.display().to_string(),
            home.display().to_string(),
        ),
        (
            repo().join("launchd").join(PLIST),
            "/usr/local/bin/telepolice-agent".to_string(),
            "/Users/example".to_string(),
        ),
    ] {
        let out = Command::new("python3")
            .args(["-c", CHECK])
            .arg(&plist)
            .args([&binary, &home])
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{}: {}", plist.display(), text(&out));
    }
}

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

/// A notify socket of the test's own: a path, or an abstract name.
struct NotifySocket {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` says.
    value: String,
}

impl NotifySocket {
    fn at_path(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bound");
        Self {
            socket,
            value: path.display().to_string(),
        }
    }

    #[cfg(target_os = "linux")]
    fn abstract_name() -> Self {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!(
            "telepolice-agent-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("a name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bound");
        Self {
            socket,
            value: format!("@{name}"),
        }
    }

    /// The next message, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("a timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Waits up to `timeout` for a message with the line `line`, returning it and
    /// the messages before it.
    fn wait_for(&self, line: &str, timeout: Duration) -> (String, Vec<String>) {
        let end = Instant::now() + timeout;
        let mut before = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.lines().any(|l| l == line) => return (m, before),
                Some(m) => before.push(m),
                None => break,
            }
        }
        panic!("no {line} within {timeout:?}; got {before:?}");
    }
}

/// The real daemon, with every path in `dir` and `NOTIFY_SOCKET` set.
fn start_daemon(dir: &Path, notify: &NotifySocket, watchdog_usec: Option<&str>) -> Child {
    let program = dir.join("bin/telepresence");
    std::fs::create_dir_all(program.parent().expect("a parent")).expect("bin dir");
    std::fs::write(&program, "#!/bin/sh\n").expect("a program to watch");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "telepresence_programs = [{:?}]\nscan_interval_secs = 30\n",
            program.display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(AGENT);
    cmd.arg("run")
        .env("TELEPOLICE_CONFIG", dir.join("config.toml"))
        .env("TELEPOLICE_STATE_DIR", dir.join("state"))
        .env("TELEPOLICE_RUNTIME_DIR", dir.join("run"))
        .env("TELEPOLICE_LOG_DIR", dir.join("logs"))
        .env("TELEPOLICE_TMPDIR", dir.join("tmp"))
        .env("NOTIFY_SOCKET", &notify.value)
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.err")).expect("stderr file"));
    match watchdog_usec {
        Some(u) => cmd.env("WATCHDOG_USEC", u),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    cmd.spawn().expect("the agent starts")
}

fn sigterm_and_wait(mut child: Child, notify: &NotifySocket, log: &Path) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let (stopping, _) = notify.wait_for("STOPPING=1", Duration::from_secs(10));
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waits") {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent did not stop within 10 s of SIGTERM:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "a graceful stop exits 0: {status}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn the_daemon_says_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::at_path(&dir.path().join("notify.sock"));
    let log = dir.path().join("agent.err");
    let child = start_daemon(dir.path(), &notify, Some("2000000"));
    let (ready, before) = notify.wait_for("READY=1", Duration::from_secs(30));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("watching Telepresence programs"),
        "READY=1 comes once the programs are watched; the log so far:\n{logged}"
    );
    assert!(before.is_empty(), "nothing before READY=1: {before:?}");
    assert!(
        ready.contains("STATUS=watching 1 Telepresence program(s)"),
        "{ready:?}"
    );
    // WATCHDOG_USEC=2 s: a ping every second. Three within six seconds leaves room for a
    // busy machine.
    let start = Instant::now();
    for n in 0..3 {
        let (ping, others) = notify.wait_for("WATCHDOG=1", Duration::from_secs(3));
        assert_eq!(ping, "WATCHDOG=1");
        assert!(others.is_empty(), "ping {n}: {others:?}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    sigterm_and_wait(child, &notify, &log);
}

#[cfg(target_os = "linux")]
#[test]
fn the_daemon_reaches_an_abstract_notify_socket_and_pings_only_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::abstract_name();
    let log = dir.path().join("agent.err");
    let child = start_daemon(dir.path(), &notify, None);
    notify.wait_for("READY=1", Duration::from_secs(30));
    // Without WATCHDOG_USEC, no pings.
    if let Some(m) = notify.next(Duration::from_millis(1500)) {
        panic!("unexpected message without a watchdog: {m:?}");
    }
    sigterm_and_wait(child, &notify, &log);
}
