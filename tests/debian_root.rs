//! Debian roots made with debootstrap, for the tests that run another systemd than the
//! machine's (`real_init`) and boot a VM (`vm_sleep`): Debian 13 (systemd 257) and Debian 12
//! with systemd from bookworm-backports (254). Made once and kept under the target dir
//! (`target/tmp/roots/`); tests running at once wait for one another's build.
//!
//! Needs root and `debootstrap` (`scripts/test` installs it) and Debian's package mirror.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::in_ci;

/// One root: the suite, what it holds, and what is added from backports.
struct Spec {
    /// The cached root's directory name; bumped when the rest changes.
    name: &'static str,
    suite: &'static str,
    packages: &'static str,
    /// Installed from `<suite>-backports` after debootstrap, in a chroot.
    backports: &'static [&'static str],
}

/// Debian 13: systemd 257 and what a booted VM with logind needs, Python for the
/// Telepresence stand-in, and procps for `kill`.
const TRIXIE: Spec = Spec {
    name: "trixie-v1",
    suite: "trixie",
    packages: "systemd,systemd-sysv,dbus,udev,linux-image-amd64,initramfs-tools,kmod,iproute2,procps,python3,mount,polkitd,libpam-systemd",
    backports: &[],
};

/// Debian 12 with systemd 254 from bookworm-backports.
const BOOKWORM_BACKPORTS: Spec = Spec {
    name: "bookworm-backports-v1",
    suite: "bookworm",
    packages: "dbus,procps,python3,mount",
    backports: &["systemd"],
};

/// The mirror (Debian's own, as in the machine's apt sources).
const MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian 13 root (see [`make`]).
pub fn trixie() -> Option<PathBuf> {
    make(&TRIXIE)
}

/// The Debian 12 root with systemd 254 (see [`make`]).
pub fn bookworm_backports() -> Option<PathBuf> {
    make(&BOOKWORM_BACKPORTS)
}

/// The root of `spec`, made now if it is not there yet; `None` (outside CI, with the reason
/// printed) when it cannot be made here. In CI that fails the test.
fn make(spec: &Spec) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("roots");
    std::fs::create_dir_all(&dir).expect("the roots dir");
    let name = spec.name;
    let root = dir.join(name);
    // One build at a time; a second test waits and finds it made.
    let lock = std::fs::File::create(dir.join(format!("{name}.lock"))).expect("lock file");
    lock.lock().expect("the roots lock");
    if root.join("usr/lib/systemd/systemd").exists() {
        return Some(root);
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        return unavailable(
            "debootstrap is not installed (apt-get install debootstrap; scripts/test does)".into(),
        );
    }
    let building = dir.join(format!("{name}.building"));
    let _ = std::fs::remove_dir_all(&building);
    let started = std::time::Instant::now();
    let mut debootstrap = Command::new("/usr/sbin/debootstrap");
    debootstrap
        .args(["--variant=minbase", &format!("--include={}", spec.packages)])
        .arg(spec.suite)
        .arg(&building)
        .arg(MIRROR);
    if let Err(why) = run(&mut debootstrap) {
        return unavailable(format!("debootstrap {}: {why}", spec.suite));
    }
    if !spec.backports.is_empty() {
        let list = building.join("etc/apt/sources.list.d/backports.list");
        std::fs::write(
            &list,
            format!("deb {MIRROR} {}-backports main\n", spec.suite),
        )
        .expect("backports source");
        let chroot = |args: &[&str]| {
            let mut c = Command::new("chroot");
            c.arg(&building)
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        let target = format!("{}-backports", spec.suite);
        let steps = [
            chroot(&["apt-get", "update", "-qq"]),
            chroot(
                &[
                    &["apt-get", "install", "-y", "-qq", "-t", &target][..],
                    spec.backports,
                ]
                .concat(),
            ),
        ];
        for mut step in steps {
            if let Err(why) = run(&mut step) {
                return unavailable(format!("{target} in a chroot: {why}"));
            }
        }
        // The package lists are not needed once installed.
        let _ = chroot(&["apt-get", "clean"]).status();
    }
    std::fs::rename(&building, &root).expect("the root moved into place");
    eprintln!(
        "made the Debian root {} in {:.0} s",
        root.display(),
        started.elapsed().as_secs_f64()
    );
    Some(root)
}

/// Runs `cmd`; its last lines when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{cmd:?} did not run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(format!(
        "{} failed ({}): {}",
        cmd.get_program().to_string_lossy(),
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

fn unavailable(why: String) -> Option<PathBuf> {
    assert!(!in_ci(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}
