//! The agent as it is installed, under a real systemd: the machine's own systemd (252 on
//! Debian 12), or that of a Debian root made with debootstrap (257 from Debian 13, 254 from
//! bookworm-backports; see `debian_root`), runs as PID 1 in namespaces of its own (the
//! recipe of `real-init-facts.md`; another root is made the namespace's own with
//! `pivot_root`), with a user manager for a test user who exists only inside. As
//! that user: `telepolice-agent install`, a Telepresence session from a login-like shell
//! with its own `KUBECONFIG`, `TMPDIR` and working directory and a program that is not on
//! the service's PATH, `kill -9`, the cluster repaired; the service still active with its
//! watchdog quiet after 70 s; `systemctl --user reload`; `uninstall`.
//!
//! Needs root, util-linux (`unshare`, `nsenter`, `setpriv`), systemd, a writable cgroup2
//! hierarchy, and for the other roots debootstrap and Debian's mirror; in CI a missing one
//! fails the test, elsewhere it is skipped with a line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::standin::{SCRIPT, replicas, setup};
use crate::util::examples_dir;

/// The test user's uid and gid (they exist only in the namespace's /etc/passwd).
const UID: u32 = 4242;

/// PID 1 of the namespaces: mounts what a booted system has, then execs systemd.
const INIT: &str = r#"#!/bin/sh
set -eu
W="$1"
R="${2:-}"
mount --make-rprivate /
if [ -n "$R" ]; then
  # Another Debian's root: the work dir at the same path inside, the kernel's file
  # systems, then that root made the namespace's own (the old one goes with its tmp).
  mount --bind "$R" "$R"
  mkdir -p "$R$W"
  mount --bind "$W" "$R$W"
  mount -t proc proc "$R/proc"
  mount --rbind /sys "$R/sys"
  mount --rbind /dev "$R/dev"
  cd "$R"
  pivot_root . tmp
  cd /
  umount -l /tmp
fi
# The work dir may be under /tmp (a checkout there): held aside, then bound back.
mount --bind "$W" /mnt
for d in /run /tmp /var/tmp /var/lib/systemd /var/log/journal; do
  mkdir -p "$d"; mount -t tmpfs tmpfs "$d"
done
chmod 1777 /tmp /var/tmp
mkdir -p "$W"
mount --bind /mnt "$W"
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for f in passwd group shadow gshadow; do mount --bind "$W/etc/$f" "/etc/$f"; done
mkdir -m 0700 -p /run/systemd/unit-root
mkdir -p /run/systemd/system/user@.service.d /run/systemd/system/user-runtime-dir@.service.d
printf '[Unit]\nDescription=real-init test\n' > /run/systemd/system/real-init.target
printf '[Unit]\nDefaultDependencies=no\n[Service]\nPAMName=\nEnvironment=XDG_RUNTIME_DIR=/run/user/%%i\n' \
  > /run/systemd/system/user@.service.d/real-init.conf
printf '[Service]\nExecStart=\nExecStart=/bin/sh -c "mkdir -p /run/user/%%i && mount -t tmpfs -o mode=0700,uid=%%i,gid=%%i tmpfs /run/user/%%i"\nExecStop=\nExecStop=/bin/umount /run/user/%%i\n' \
  > /run/systemd/system/user-runtime-dir@.service.d/real-init.conf
exec env -i container=other /lib/systemd/systemd --unit=real-init.target
"#;

/// A Telepresence session from a login-like shell: its own KUBECONFIG, TMPDIR and working
/// directory, the program in ~/bin (not on the service's PATH).
const SESSION: &str = r#"#!/bin/bash -l
export PATH="$HOME/bin:$PATH" KUBECONFIG="$HOME/.kube-alt/config" KUBECACHEDIR="$HOME/kcache"
export TMPDIR="$HOME/mytmp" TELEPRESENCE_STANDIN_HELPER="$HOME/bin/telepresence_helper"
export TELEPRESENCE_STANDIN_KUBECTL=kubectl
cd "$HOME/work"
telepresence --swap-deployment app > "$HOME/work/session.out" 2>&1 < /dev/null &
echo $! > "$HOME/work/session.pid"
wait
"#;

/// A systemd running as PID 1 in namespaces of its own, inside a cgroup of its own.
struct RealInit {
    /// `unshare`, the parent of PID 1.
    unshare: Option<std::process::Child>,
    /// PID 1 (systemd) as the host sees it.
    pid1: u32,
    cgroup: PathBuf,
    /// The work dir, bound back inside if it is under /tmp (a new tmpfs there); the user's
    /// home is in it.
    dir: tempfile::TempDir,
}

/// Whether the tools are here; in CI a missing one fails, elsewhere it skips.
fn available() -> bool {
    crate::util::root_with(
        "the real-init test",
        &[
            "/usr/bin/unshare",
            "/usr/bin/nsenter",
            "/usr/bin/setpriv",
            "/lib/systemd/systemd",
        ],
        (cgroup2_root().is_some(), "no writable cgroup2 hierarchy"),
        "apt-get install systemd util-linux",
    )
}

/// Where a cgroup2 hierarchy is mounted: the whole tree, or the hybrid layout's `unified`.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
}

impl RealInit {
    /// systemd from `root` (another Debian's root), or the machine's own.
    fn start(root: Option<&Path>) -> Self {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a work dir");
        let w = dir.path();
        chmod(w, 0o755);
        std::fs::create_dir_all(w.join("etc")).expect("etc");
        for f in ["passwd", "group", "shadow", "gshadow"] {
            let etc = root.unwrap_or(Path::new("/")).join("etc");
            let mut text = std::fs::read_to_string(etc.join(f)).unwrap_or_default();
            text.push_str(&match f {
                "passwd" => format!(
                    "tpuser:x:{UID}:{UID}:test:{}:/bin/bash\n",
                    w.join("home").display()
                ),
                "group" => format!("tpuser:x:{UID}:\n"),
                "shadow" => "tpuser:!:19000:0:99999:7:::\n".to_string(),
                _ => "tpuser:!::\n".to_string(),
            });
            std::fs::write(w.join("etc").join(f), text).expect("written");
        }
        std::fs::write(w.join("init.sh"), INIT).expect("init written");
        chmod(&w.join("init.sh"), 0o755);
        let cgroup = cgroup2_root().expect("checked").join(format!(
            "telepolice-real-init-{}-{}",
            std::process::id(),
            w.file_name().and_then(|n| n.to_str()).unwrap_or("w")
        ));
        std::fs::create_dir_all(&cgroup).expect("a cgroup of its own");
        // Into the cgroup first, so that the cgroup namespace's root is that cgroup.
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --pid --fork --mount-proc --mount --uts --ipc --cgroup --propagation private {}/init.sh {} {}",
            cgroup.display(),
            w.display(),
            w.display(),
            root.map(|r| r.display().to_string()).unwrap_or_default()
        );
        let unshare = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(w.join("pid1.out")).expect("out"))
            .stderr(std::fs::File::create(w.join("pid1.err")).expect("err"))
            .spawn()
            .expect("unshare starts");
        let parent = unshare.id();
        let mut me = Self {
            unshare: Some(unshare),
            pid1: 0,
            cgroup,
            dir,
        };
        me.pid1 = wait_until(
            "systemd is PID 1 of the namespace",
            Duration::from_secs(30),
            || {
                let kids =
                    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                        .ok()?;
                let pid: u32 = kids.split_whitespace().next()?.parse().ok()?;
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == "systemd").then_some(pid)
            },
        );
        wait_until("the system is running", Duration::from_secs(60), || {
            let out = me.root(&["systemctl", "is-system-running"]);
            let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
            matches!(said.as_str(), "running" | "degraded").then_some(())
        });
        me
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A command in the namespaces, as root.
    fn root(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-a", "-r", "-w"])
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    /// A command in the namespaces, as the test user with a login's environment.
    fn user_command(&self, args: &[&str]) -> Command {
        let home = self.home();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid1.to_string(), "-a", "-r", "-w", "setpriv"])
            .arg(format!("--reuid={UID}"))
            .arg(format!("--regid={UID}"))
            .args(["--init-groups", "env", "-i"])
            .arg(format!("HOME={}", home.display()))
            .args(["USER=tpuser", "LOGNAME=tpuser", "SHELL=/bin/bash"])
            .arg(format!(
                "PATH={}/bin:/usr/local/bin:/usr/bin:/bin",
                home.display()
            ))
            .arg(format!("XDG_RUNTIME_DIR=/run/user/{UID}"))
            .arg(format!(
                "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{UID}/bus"
            ))
            .args(args);
        cmd
    }

    /// [`RealInit::user_command`], run to its end.
    fn user(&self, args: &[&str]) -> Output {
        self.user_command(args).output().expect("nsenter runs")
    }

    /// [`RealInit::user_command`], started and left running.
    fn user_spawn(&self, args: &[&str]) -> std::process::Child {
        self.user_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsenter runs")
    }

    /// Like [`RealInit::user`], failing the test unless it succeeds; its stdout.
    fn user_ok(&self, args: &[&str]) -> String {
        let out = self.user(args);
        assert!(
            out.status.success(),
            "{args:?} as the test user failed ({}):\n{}\n{}\n--- the agent's journal:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The service's `ActiveState`, `MainPID` and `NRestarts`, as `systemctl show` says them.
    fn service_state(&self) -> String {
        let out = self.user(&[
            "systemctl",
            "--user",
            "show",
            "telepolice-agent",
            "-p",
            "ActiveState",
            "-p",
            "MainPID",
            "-p",
            "NRestarts",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn journal(&self) -> String {
        let out = self.user(&[
            "journalctl",
            "--user",
            "-u",
            "telepolice-agent",
            "--no-pager",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `telepolice-agent history --json`'s sessions, as the user.
    fn sessions(&self) -> Vec<Value> {
        let out = self.user(&["telepolice-agent", "history", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["sessions"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for RealInit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the agent's journal:\n{}", self.journal());
        }
        // Everything in the PID namespace goes with its PID 1.
        if self.pid1 != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid1.to_string()])
                .status();
        }
        if let Some(mut c) = self.unshare.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The cgroups systemd made, deepest first, once their processes are gone.
        let end = Instant::now() + Duration::from_secs(10);
        while self.cgroup.exists() && Instant::now() < end {
            let _ = Command::new("find")
                .arg(&self.cgroup)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn wait_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies `from` to `to` with mode 0755.
fn install_file(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    chmod(to, 0o755);
}

#[test]
fn installed_under_the_machines_systemd_it_repairs_a_killed_session() {
    if !available() {
        return;
    }
    repairs_a_killed_session(None, "systemd 252");
}

#[test]
fn installed_under_debian_13s_systemd_257_it_repairs_a_killed_session() {
    if !available() {
        return;
    }
    let Some(root) = crate::debian_root::trixie() else {
        return;
    };
    repairs_a_killed_session(Some(&root), "systemd 257");
}

#[test]
fn installed_under_debian_12_backports_systemd_254_it_repairs_a_killed_session() {
    if !available() {
        return;
    }
    let Some(root) = crate::debian_root::bookworm_backports() else {
        return;
    };
    repairs_a_killed_session(Some(&root), "systemd 254");
}

/// The whole story under the systemd of `root` (the machine's own when `None`), which must
/// say `version` of itself.
fn repairs_a_killed_session(root: Option<&Path>, version: &str) {
    let Some(env) = setup() else { return };
    let init = RealInit::start(root);
    let said = String::from_utf8_lossy(&init.root(&["systemctl", "--version"]).stdout).into_owned();
    if root.is_some() {
        assert!(said.starts_with(version), "{said}");
    } else if !said.starts_with(version) {
        eprintln!("note: the machine's systemd is not {version}: {said}");
    }
    let home = init.home();
    for d in ["bin", "work", "mytmp", ".kube-alt"] {
        std::fs::create_dir_all(home.join(d)).expect("home dirs");
    }
    install_file(
        Path::new(env!("CARGO_BIN_EXE_telepolice-agent")),
        &home.join("bin/telepolice-agent"),
    );
    install_file(Path::new(SCRIPT), &home.join("bin/telepresence"));
    // Another Debian's root has no kubectl of its own.
    let kubectl = crate::util::kubectl_binary().expect("kubectl (setup checked it)");
    install_file(&kubectl, &home.join("bin/kubectl"));
    install_file(
        &examples_dir().join("telepresence_helper"),
        &home.join("bin/telepresence_helper"),
    );
    env.cluster
        .write_kubeconfig(&home.join(".kube-alt/config"))
        .expect("kubeconfig");
    std::fs::write(home.join("session.sh"), SESSION).expect("session script");
    chmod(&home.join("session.sh"), 0o755);
    let chown = Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(&home)
        .status()
        .expect("chown runs");
    assert!(chown.success());

    let started = init.root(&["systemctl", "start", &format!("user@{UID}.service")]);
    assert!(started.status.success(), "{started:?}");
    init.user_ok(&["telepolice-agent", "install"]);
    let main_pid = wait_until("the service is active", Duration::from_secs(30), || {
        let text = init.service_state();
        (text.contains("ActiveState=active")).then_some(text)
    });
    // Under a real systemd the agent's parent is the user's manager, which the kernel keeps
    // from its own user (not dumpable): no reason to say the agent is blind.
    let status = init.user_ok(&["telepolice-agent", "status"]);
    assert!(!status.contains("cannot read"), "{status}");

    // A session, as a person starts one; the agent finds it (by its scan: the program is not
    // on the service's PATH), reads its own KUBECONFIG and records it.
    let mut shell = init.user_spawn(&[home.join("session.sh").to_str().expect("utf-8 path")]);
    let rec = wait_until("the session is Active", Duration::from_secs(90), || {
        init.sessions().into_iter().find(|r| r["state"] == "Active")
    });
    assert_eq!(rec["original"]["replicas"], 2, "{rec:#}");
    wait_until(
        "the stand-in swapped the original",
        Duration::from_secs(30),
        || (replicas(&env, "app") == 0).then_some(()),
    );
    let pid = std::fs::read_to_string(home.join("work/session.pid")).expect("session pid");
    init.user_ok(&["kill", "-KILL", pid.trim()]);
    let rec = wait_until("the session is repaired", Duration::from_secs(60), || {
        init.sessions()
            .into_iter()
            .find(|r| r["state"] == "Cleaned")
    });
    assert_eq!(replicas(&env, "app"), 2, "{rec:#}");
    let _ = shell.wait();
    let acts = rec["actions"].to_string();
    assert!(acts.contains("remove temp dir /tmp/tel-"), "{acts}");

    // The watchdog (30 s) stays quiet: the same process, never restarted, after 70 s.
    std::thread::sleep(Duration::from_secs(70));
    let now = init.service_state();
    assert!(
        now.contains(
            main_pid
                .lines()
                .find(|l| l.starts_with("MainPID="))
                .unwrap_or("?")
        ),
        "{now} vs {main_pid}"
    );
    assert!(
        now.contains("ActiveState=active") && now.contains("NRestarts=0"),
        "{now}"
    );
    assert!(
        !init.journal().contains("Watchdog timeout"),
        "{}",
        init.journal()
    );

    init.user_ok(&["systemctl", "--user", "reload", "telepolice-agent"]);
    wait_until("the reload is logged", Duration::from_secs(30), || {
        init.journal().contains("says nothing new").then_some(())
    });
    init.user_ok(&["telepolice-agent", "uninstall"]);
    assert!(
        !home
            .join(".config/systemd/user/telepolice-agent.service")
            .exists()
    );
    let gone = init.user(&["systemctl", "--user", "is-active", "telepolice-agent"]);
    assert!(!gone.status.success(), "stopped: {gone:?}");
}
