//! The agent as a user service: the committed unit and plist are what the binary generates
//! (and systemd's and Python's parsers accept what it generates); `install` and
//! `uninstall` against stand-ins for `systemctl` and `launchctl` that log their arguments,
//! in a temp home; and the real daemon telling a test-owned notify socket that it is ready,
//! alive, and stopping.
//!
//! - here: the generated unit and plist, and what systemd's and Python's parsers say;
//! - `install`: `install` and `uninstall` against stand-in service managers;
//! - `notify`: the daemon's readiness, watchdog and stopping notifications.

mod install;
mod notify;

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
