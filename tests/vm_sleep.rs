//! A real sleep: the Debian 13 root (`debian_root`) booted as a VM under qemu (software
//! emulation: KVM does not boot a Linux guest on these machines), with systemd 257, logind,
//! polkit and the agent installed as the user's service. Inside, `vm_guest.sh` runs the
//! story and says what happens on the serial console; this side reads it, answers by
//! taking the NIC's link down and up (QMP `set_link`), and checks the cluster.
//!
//! The cluster is the emulator in this test process, which the guest reaches through
//! qemu's user network (the guest's 10.0.2.2 is this machine's loopback): like a real
//! cluster, it keeps running while the laptop sleeps, and it is cut off when the link goes
//! down. Nothing leaves the machine.
//!
//! What is checked:
//! - `on_sleep = "keep"`: a live session lives through a real suspend to RAM (S3, woken by
//!   the RTC alarm); killed right after the resume, it is repaired.
//! - `on_sleep = "end-sessions"`: the session is ended (and Telepresence puts the original
//!   back) before the kernel starts the suspend: the original's replicas are back, as the
//!   cluster saw it, before the console says `PM: suspend entry`.
//! - The network: the link down, the session killed, the repair waiting; the link up and
//!   the original restored (the time is printed).
//!
//! The VM image (kernel, initramfs with the virtio drivers, a 2 GB ext4 disk with the test
//! user and a unit that runs the guest half at boot) is made once from the root and kept
//! beside it; each run boots it with `snapshot=on` (nothing written back) and a small disk
//! of its own holding this build's agent, the stand-in, kubectl, the kubeconfig and the
//! guest script. Needs root, debootstrap, qemu-system-x86 and e2fsprogs; in CI a missing
//! one fails the test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::standin::{SCRIPT, replicas, setup};
use crate::util::{examples_dir, kubectl_binary};

/// The guest half.
const GUEST: &str = include_str!("vm_guest.sh");

/// The test user inside the image (as in `vm_guest.sh`).
const UID: u32 = 4242;

/// The VM image's name beside its root; bumped when the recipe below changes.
const IMAGE: &str = "trixie-v1-vm1";

/// Runs the guest half at boot, its output on the console.
const UNIT: &str = "[Unit]
Description=the telepolice-agent VM test
After=systemd-logind.service user@4242.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mount /dev/vdb /mnt/run && exec /mnt/run/vmtest.sh'
StandardOutput=journal+console
StandardError=journal+console
[Install]
WantedBy=multi-user.target
";

/// logind waits at most this long for the agent's delay inhibitor. 5 s is its default, and
/// plenty on a laptop; under software emulation every program runs about ten times slower,
/// and Telepresence's own cleanup (three kubectl runs) takes longer than that.
const LOGIND_CONF: &str = "[Login]\nInhibitDelayMaxSec=30\n";

/// The booted image's parts.
struct Image {
    kernel: PathBuf,
    initrd: PathBuf,
    disk: PathBuf,
}

/// Whether the tools are here; in CI a missing one fails, elsewhere it skips.
fn available() -> bool {
    crate::util::root_with(
        "the VM test",
        &[
            "/usr/bin/qemu-system-x86_64",
            "/usr/sbin/mkfs.ext4",
            "/usr/sbin/chroot",
        ],
        (true, ""),
        "apt-get install qemu-system-x86 e2fsprogs",
    )
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The file in `dir` whose name starts with `prefix`.
fn starting_with(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// The image made from `root` (see the module's doc), made now if it is not there yet.
fn image(root: &Path) -> Image {
    let dir = root.parent().expect("the roots dir").join(IMAGE);
    let lock = std::fs::File::create(dir.with_extension("lock")).expect("lock file");
    lock.lock().expect("the image lock");
    let image = Image {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        disk: dir.join("disk.img"),
    };
    if image.disk.exists() {
        return image;
    }
    let started = Instant::now();
    let building = dir.with_extension("building");
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).expect("a building dir");
    let s = building.join("staging");
    run_ok(Command::new("cp").arg("-a").arg(root).arg(&s));
    let chroot = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&s).args(args);
        c
    };
    // The Debian kernel has the virtio disk and ext4 as modules: into the initramfs.
    let mut modules = std::fs::read_to_string(s.join("etc/initramfs-tools/modules"))
        .expect("initramfs modules list");
    modules.push_str("virtio_pci\nvirtio_blk\next4\n");
    std::fs::write(s.join("etc/initramfs-tools/modules"), modules).expect("written");
    run_ok(&mut chroot(&["update-initramfs", "-u", "-k", "all"]));
    let uid = UID.to_string();
    run_ok(&mut chroot(&[
        "useradd",
        "-m",
        "-u",
        &uid,
        "-U",
        "-s",
        "/bin/bash",
        "tpuser",
    ]));
    // Lingering: logind starts the user's manager at boot, as after a login.
    std::fs::create_dir_all(s.join("var/lib/systemd/linger")).expect("linger dir");
    std::fs::write(s.join("var/lib/systemd/linger/tpuser"), "").expect("linger");
    std::fs::write(s.join("etc/hostname"), "vm\n").expect("hostname");
    let units = s.join("etc/systemd/system");
    // The console is the test's channel, not a login prompt.
    std::os::unix::fs::symlink("/dev/null", units.join("serial-getty@ttyS0.service"))
        .expect("getty masked");
    std::fs::write(units.join("vmtest.service"), UNIT).expect("unit");
    std::fs::create_dir_all(units.join("multi-user.target.wants")).expect("wants");
    std::os::unix::fs::symlink(
        "/etc/systemd/system/vmtest.service",
        units.join("multi-user.target.wants/vmtest.service"),
    )
    .expect("enabled");
    std::fs::create_dir_all(s.join("etc/systemd/logind.conf.d")).expect("logind.conf.d");
    std::fs::write(s.join("etc/systemd/logind.conf.d/vmtest.conf"), LOGIND_CONF)
        .expect("logind conf");
    std::fs::create_dir_all(s.join("mnt/run")).expect("mount point");
    std::fs::copy(
        starting_with(&s.join("boot"), "vmlinuz-"),
        building.join("vmlinuz"),
    )
    .expect("kernel");
    std::fs::copy(
        starting_with(&s.join("boot"), "initrd.img-"),
        building.join("initrd.img"),
    )
    .expect("initrd");
    let disk = building.join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(2 << 30))
        .expect("a sparse 2 GB disk");
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-d"])
            .arg(&s)
            .arg(&disk),
    );
    run_ok(Command::new("rm").arg("-rf").arg(&s));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&building, &dir).expect("the image moved into place");
    eprintln!(
        "made the VM image {} in {:.0} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    image
}

/// The small disk of this run: the agent under test, the stand-in, kubectl, the guest
/// script, the kubeconfig (the emulator as the guest reaches it) and two configs.
fn run_disk(dir: &Path, kubeconfig: &str) -> PathBuf {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, files.join(name))
            .unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    };
    copy(
        Path::new(env!("CARGO_BIN_EXE_telepolice-agent")),
        "telepolice-agent",
    );
    copy(Path::new(SCRIPT), "telepresence");
    copy(
        &examples_dir().join("telepresence_helper"),
        "telepresence_helper",
    );
    copy(
        &kubectl_binary().expect("kubectl (setup checked it)"),
        "kubectl",
    );
    std::fs::write(files.join("vmtest.sh"), GUEST).expect("guest script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        files.join("vmtest.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(files.join("kubeconfig"), kubeconfig).expect("kubeconfig");
    std::fs::write(files.join("keep.toml"), "on_sleep = \"keep\"\n").expect("config");
    std::fs::write(
        files.join("end-sessions.toml"),
        "on_sleep = \"end-sessions\"\n",
    )
    .expect("config");
    let size: u64 = std::fs::read_dir(&files)
        .expect("files")
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let disk = dir.join("run.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(size + (64 << 20)))
        .expect("the run disk");
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-d"])
            .arg(&files)
            .arg(&disk),
    );
    disk
}

/// The emulator's kubeconfig as the guest reaches it: through qemu's user network, where
/// 10.0.2.2 is this machine's loopback; the certificate is for `localhost`.
fn guest_kubeconfig(host: &str, url: &str) -> String {
    let port = url.rsplit(':').next().expect("a port");
    let server = format!("https://10.0.2.2:{port}");
    host.replace(
        &format!("server: {url}"),
        &format!("server: {server}\n    tls-server-name: localhost"),
    )
}

/// The running VM: qemu, its console lines as they come, and its QMP socket.
struct Vm {
    qemu: Child,
    lines: Receiver<(Instant, String)>,
    console: Arc<Mutex<Vec<String>>>,
    qmp: PathBuf,
}

impl Vm {
    fn boot(image: &Image, run_disk: &Path, dir: &Path) -> Self {
        let qmp = dir.join("qmp.sock");
        let mut qemu = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                // One CPU: with two, the guest's resume from S3 (which takes the second
                // CPU offline and back) ended in a double fault under TCG in 1 of 3 runs.
                "-smp",
                "1",
                "-m",
                "1536",
                "-nographic",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args([
                "-append",
                "console=ttyS0 root=/dev/vda rw net.ifnames=0 no_console_suspend",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot=on",
                image.disk.display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", run_disk.display()))
            // S3 is off in qemu's default PIIX4 power management.
            .args(["-global", "PIIX4_PM.disable_s3=0"])
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("qemu.err")).expect("qemu.err"))
            .spawn()
            .expect("qemu starts");
        let out = qemu.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let console = Arc::new(Mutex::new(Vec::new()));
        let kept = console.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                buf.clear();
                kept.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line.clone());
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self {
            qemu,
            lines,
            console,
            qmp,
        }
    }

    /// The last lines of the console, for a failure's message.
    fn tail(&self) -> String {
        let c = self
            .console
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c[c.len().saturating_sub(150)..].join("\n")
    }

    /// Reads the console until a line contains `what` (a guest's `VMTEST fail` ends the
    /// test); when it came.
    fn expect(&self, what: &str, within: Duration) -> (Instant, String) {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    if line.contains("VMTEST fail") {
                        // The guest prints what it knows, then powers off.
                        std::thread::sleep(Duration::from_secs(5));
                        panic!("the guest says: {line}\n--- console:\n{}", self.tail());
                    }
                    if line.contains(what) {
                        return (at, line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {what:?} on the console within {within:?}\n--- console:\n{}",
                        self.tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the VM ended before {what:?}\n--- console:\n{}",
                        self.tail()
                    )
                }
            }
        }
    }

    /// QMP `set_link` on the guest's NIC.
    fn set_link(&self, up: bool) {
        let stream = UnixStream::connect(&self.qmp).expect("QMP socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut w = stream;
        let mut greeting = String::new();
        reader.read_line(&mut greeting).expect("QMP greeting");
        assert!(greeting.contains("QMP"), "{greeting}");
        let mut answer = |cmd: &str| {
            writeln!(w, "{cmd}").expect("QMP write");
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("QMP read");
                assert!(!line.is_empty(), "QMP closed");
                if line.contains("\"return\"") {
                    return;
                }
                assert!(!line.contains("\"error\""), "QMP {cmd}: {line}");
            }
        };
        answer(r#"{"execute":"qmp_capabilities"}"#);
        answer(&format!(
            r#"{{"execute":"set_link","arguments":{{"name":"n0","up":{up}}}}}"#
        ));
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// When the original's replica count changed, as the cluster saw it (every 10 ms).
struct Watch {
    changes: Arc<Mutex<Vec<(Instant, i64)>>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// The first time at or after `since` the original had its 2 replicas again; fails the
    /// test (with the console) when it never did.
    fn restored(&self, since: Instant, vm: &Vm) -> Instant {
        self.first(2, since)
            .unwrap_or_else(|| panic!("the cluster never saw 2 replicas again\n{}", vm.tail()))
    }

    /// The first time at or after `since` the count was `n`.
    fn first(&self, n: i64, since: Instant) -> Option<Instant> {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(at, v)| *at >= since && *v == n)
            .map(|(at, _)| *at)
    }
}

#[test]
fn a_real_suspend_and_a_lost_link_in_a_vm() {
    if !available() {
        return;
    }
    let Some(root) = crate::debian_root::trixie() else {
        return;
    };
    let image = image(&root);
    let Some(env) = setup() else { return };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a work dir");
    let kubeconfig = guest_kubeconfig(&env.cluster.kubeconfig(), &env.cluster.url());
    assert!(kubeconfig.contains("10.0.2.2"), "{kubeconfig}");
    let disk = run_disk(dir.path(), &kubeconfig);

    std::thread::scope(|scope| {
        let watch = Watch {
            changes: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (changes, stop) = (watch.changes.clone(), watch.stop.clone());
        let env = &env;
        scope.spawn(move || {
            let mut last = i64::MIN;
            while !stop.load(Ordering::Relaxed) {
                let now = replicas(env, "app");
                if now != last {
                    changes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((Instant::now(), now));
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let _stop = StopOnDrop(watch.stop.clone());

        let booted = Instant::now();
        let vm = Vm::boot(&image, &disk, dir.path());
        let long = Duration::from_secs(600);
        let (ready, line) = vm.expect("VMTEST ready", long);
        eprintln!(
            "vm: {:.0} s from boot to the agent installed and active ({line})",
            (ready - booted).as_secs_f64()
        );

        // 1. keep: lives through the sleep; killed after the resume, repaired.
        vm.expect("VMTEST active 1", long);
        vm.expect("VMTEST suspending 1", long);
        let (asleep, _) = vm.expect("PM: suspend entry", long);
        let (awake, _) = vm.expect("PM: suspend exit", long);
        vm.expect("VMTEST resumed 1", long);
        let (killed, _) = vm.expect("VMTEST killed 1", long);
        vm.expect("VMTEST state 1 Cleaned", long);
        let restored = watch.restored(killed, &vm);
        eprintln!(
            "vm keep: asleep {:.1} s; killed after the resume, restored {} ms after the kill",
            (awake - asleep).as_secs_f64(),
            (restored - killed).as_millis()
        );

        // 2. end-sessions: the original is back before the kernel starts the suspend.
        let (active, _) = vm.expect("VMTEST active 2", long);
        vm.expect("VMTEST suspending 2", long);
        let (asleep, _) = vm.expect("PM: suspend entry", long);
        vm.expect("PM: suspend exit", long);
        vm.expect("VMTEST resumed 2", long);
        let (_, state) = vm.expect("VMTEST state 2", long);
        let restored = watch.first(2, active).unwrap_or_else(|| {
            panic!(
                "the original was never restored after session 2 ({state})\n{}",
                vm.tail()
            )
        });
        assert!(
            restored < asleep,
            "the original came back {} ms after the suspend began: the session was not ended before the sleep\n{}",
            (restored - asleep).as_millis(),
            vm.tail()
        );
        eprintln!(
            "vm end-sessions: the original back {} ms before the suspend began ({state})",
            (asleep - restored).as_millis()
        );

        // 3. the link: down, the session killed, the repair waits; up, restored.
        vm.expect("VMTEST active 3", long);
        vm.expect("VMTEST link-down please", long);
        vm.set_link(false);
        vm.expect("VMTEST killed 3", long);
        vm.expect("VMTEST waiting 3", long);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            replicas(env, "app"),
            0,
            "nothing reached the cluster while the link was down"
        );
        let up = Instant::now();
        vm.set_link(true);
        vm.expect("VMTEST state 3 Cleaned", long);
        let restored = watch.restored(up, &vm);
        eprintln!(
            "vm link: link up -> original restored in {} ms",
            (restored - up).as_millis()
        );

        vm.expect("VMTEST done", long);
        // The agent's journal and the user's processes, as the guest printed them (seen with
        // --nocapture).
        for line in vm
            .tail()
            .lines()
            .filter(|l| l.contains("telepolice-agent[") || l.contains("CapPrm"))
        {
            eprintln!("vm agent: {line}");
        }
        eprintln!(
            "vm: the whole story took {:.0} s",
            booted.elapsed().as_secs_f64()
        );
    });
}

/// Stops the replica watch when the test ends, passing or not.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
