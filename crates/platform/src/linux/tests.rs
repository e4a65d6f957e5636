use std::process::{Child, Command, Stdio};

use super::super::NewProcesses;
use super::*;

#[test]
fn a_process_is_readable_unless_it_holds_what_the_reader_lacks() {
    const WAKE_ALARM: u64 = 1 << 35;
    const FULL: u64 = (1 << 41) - 1;
    // (theirs, mine, owned by the user) -> readable
    let cases = [
        (0, 0, true, true),                   // a user's shell, read by the agent
        (WAKE_ALARM, 0, true, false),         // the user's systemd 257
        (0, 0, false, false),                 // not dumpable: its files are root's
        (WAKE_ALARM, FULL, true, true),       // read by root
        (0, FULL, false, true),               // root may trace anything
        (WAKE_ALARM, WAKE_ALARM, true, true), // the reader holds the same
    ];
    for (theirs, mine, owned, want) in cases {
        assert_eq!(
            may_read(theirs, mine, owned),
            want,
            "{theirs:x} {mine:x} {owned}"
        );
    }
    let me = std::process::id();
    assert!(readable_by_owner(me, current_uid()), "itself");
    assert!(
        !readable_by_owner(u32::MAX - 1, current_uid()),
        "no such process"
    );
}

/// A `sleep 30` child that is killed and reaped when dropped, so a failing test leaves
/// nothing behind.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Self {
        Self::start_with(&mut Command::new("sleep"))
    }

    fn start_with(command: &mut Command) -> Self {
        let child = command
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sleep starts");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn id(&self) -> ProcessId {
        self.info().id
    }

    /// The child's details once its `execve` has finished.
    fn info(&self) -> ProcessInfo {
        settled(|| process_info(self.pid()))
    }
}

/// Retries `read` while the process is inside `execve`, as callers must.
fn settled<T>(mut read: impl FnMut() -> Result<T>) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match read() {
            Err(PlatformError::ExecInProgress { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other.expect("the process is readable"),
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A guard against hanging forever if the exit is never noticed; not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn stat_with_spaces_and_parentheses_in_comm_is_parsed() {
    let line = b"4242 (a) b (c) S 1 4242 4240 34817 4242 4194304 99 0 0 0 1 2 0 0 20 0 1 0 \
                 987654 8192 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
    let stat = parse_stat(line).expect("parses");
    assert_eq!(
        stat,
        Stat {
            comm: "a) b (c".to_owned(),
            state: b'S',
            ppid: 1,
            session: 4240,
            tty_nr: 34817,
            flags: 4_194_304,
            start_ticks: 987_654,
        }
    );
    assert!(!stat.has_exited());
    assert!(stat.may_be_in_exec());
}

#[test]
fn kernel_threads_and_exiting_processes_are_not_mid_exec() {
    let kthread = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0\n";
    let exiting = b"9 (sh) R 1 9 9 0 -1 4194308 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0\n";
    for line in [&kthread[..], exiting] {
        let stat = parse_stat(line).expect("parses");
        assert!(!stat.may_be_in_exec(), "{stat:?}");
    }
}

#[test]
fn stat_of_a_zombie_says_it_has_exited() {
    let line = b"7 (x) Z 1 7 7 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0 0\n";
    let stat = parse_stat(line).expect("parses");
    assert!(stat.has_exited());
    assert_eq!(stat.start_ticks, 55);
}

#[test]
fn truncated_or_garbled_stat_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"12 (abc S 1 2 3",
        b"12 abc) S 1 2 3",
        b"12 (abc) S 1 2 3",
        b"12 (abc) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        b"12 (abc) S x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    ] {
        assert!(
            parse_stat(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn status_uid_is_the_real_uid() {
    let status = b"Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
    assert_eq!(parse_status_uid(status), Ok(1000));
    assert!(parse_status_uid(b"Name:\tbash\n").is_err());
}

#[test]
fn nul_separated_lists_split_into_entries() {
    let split = |bytes: &'static [u8]| split_nul(bytes).collect::<Vec<_>>();
    assert_eq!(split(b"sleep\x0030\x00"), [&b"sleep"[..], b"30"]);
    assert_eq!(split(b"a\x00\x00b\x00"), [&b"a"[..], b"", b"b"]);
    assert_eq!(split(b"no terminator"), [&b"no terminator"[..]]);
    assert!(split(b"").is_empty());
}

#[test]
fn our_own_process_is_described() {
    let me = process_info(std::process::id()).expect("we can read ourselves");
    assert_eq!(me.uid, current_uid());
    assert!(is_alive(me.id));
    assert!(!me.argv.is_empty());
    assert_eq!(me.exe, std::env::current_exe().ok());
    assert_eq!(me.cwd, std::env::current_dir().ok());
    assert!(
        list_pids()
            .expect("lists /proc")
            .contains(&std::process::id())
    );
}

#[test]
fn a_child_is_described() {
    let child = Sleeper::start();
    let info = child.info();
    assert_eq!(info.id.pid, child.pid());
    assert_eq!(info.argv, ["sleep", "30"]);
    assert_eq!(info.comm, "sleep");
    assert_eq!(info.ppid, std::process::id());
    assert_eq!(info.uid, current_uid());
    let me = process_info(std::process::id()).expect("we can read ourselves");
    assert_eq!(info.session, me.session);
    assert_eq!(info.tty_nr, me.tty_nr);
    assert!(is_alive(info.id));
}

#[test]
fn a_child_started_about_now() {
    let before = SystemTime::now();
    let child = Sleeper::start();
    let after = SystemTime::now();
    let started = process_start_time(child.id()).expect("uptime is readable");
    // Generous bounds: this checks the arithmetic (ticks, boot offset), not the clock.
    let slack = Duration::from_secs(30);
    assert!(
        started + slack > before,
        "{started:?} is long before {before:?}"
    );
    assert!(
        started < after + slack,
        "{started:?} is long after {after:?}"
    );
}

#[test]
fn a_childs_environment_is_read() {
    let child = Sleeper::start_with(Command::new("sleep").env("TELEPOLICE_PLATFORM_TEST", "a=b c"));
    let environ = settled(|| process_environ(child.pid()));
    assert_eq!(child.info().argv, ["sleep", "30"]);
    assert!(
        environ.contains(&("TELEPOLICE_PLATFORM_TEST".to_owned(), "a=b c".to_owned())),
        "{environ:?}"
    );
}

#[test]
fn a_missing_process_is_not_found() {
    let mut child = Sleeper::start();
    let id = child.id();
    child.0.kill().expect("kill our child");
    child.0.wait().expect("reap our child");
    // The pid could in theory be reused at once; then it is someone else, not us.
    if let Err(error) = process_info(id.pid) {
        assert!(
            matches!(error, PlatformError::NotFound { pid } if pid == id.pid),
            "{error}"
        );
    }
    assert!(!is_alive(id));
    assert!(!signal(id, Signal::Kill).expect("signalling the gone is no error"));
    assert!(matches!(
        process_environ(u32::MAX),
        Err(PlatformError::NotFound { .. })
    ));
}

#[tokio::test]
async fn terminating_a_child_ends_the_wait_for_its_exit() {
    let mut child = Sleeper::start();
    let id = child.id();
    let waiter = tokio::spawn(wait_for_exit(id));
    assert!(signal(id, Signal::Term).expect("signal our child"));
    tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("the exit is noticed")
        .expect("the waiting task did not panic")
        .expect("waiting succeeds");
    // Exited but not yet reaped: a zombie counts as gone.
    assert!(!is_alive(id));
    assert!(!signal(id, Signal::Kill).expect("a zombie is not signalled"));
    let status = child.0.wait().expect("reap our child");
    assert!(!status.success());
}

#[tokio::test]
async fn waiting_for_an_already_gone_process_returns_at_once() {
    let mut child = Sleeper::start();
    let id = child.id();
    child.0.kill().expect("kill our child");
    child.0.wait().expect("reap our child");
    tokio::time::timeout(PATIENCE, wait_for_exit(id))
        .await
        .expect("returns at once")
        .expect("no error");
}

#[tokio::test]
async fn a_wrong_start_time_is_someone_else() {
    let child = Sleeper::start();
    let real = child.id();
    let impostor = ProcessId {
        start_ticks: real.start_ticks + 1,
        ..real
    };
    assert!(!is_alive(impostor));
    assert!(!signal(impostor, Signal::Kill).expect("no error"));
    tokio::time::timeout(PATIENCE, wait_for_exit(impostor))
        .await
        .expect("not waiting for someone else")
        .expect("no error");
    assert!(is_alive(real), "the real process was not touched");
}

#[tokio::test]
async fn dropping_the_wait_leaves_the_process_alone() {
    let child = Sleeper::start();
    let id = child.id();
    let waited = tokio::time::timeout(Duration::from_millis(50), wait_for_exit(id)).await;
    assert!(waited.is_err(), "sleep 30 did not exit within 50 ms");
    assert!(is_alive(id));
}

#[test]
fn new_processes_reports_a_new_child_once() {
    let mut detector = NewProcesses::new();
    let me = std::process::id();
    assert!(detector.seen.contains(&me));
    let child = Sleeper::start();
    let new = detector.new_pids().expect("lists /proc");
    assert!(new.contains(&child.pid()), "{new:?}");
    assert!(!new.contains(&me), "{new:?}");
    let again = detector.new_pids().expect("lists /proc");
    assert!(!again.contains(&child.pid()), "{again:?}");

    let pid = child.pid();
    drop(child);
    detector.new_pids().expect("lists /proc");
    assert!(!detector.seen.contains(&pid) || list_pids().expect("lists").contains(&pid));
}

/// A process whose main thread has ended while another thread runs on shows `Z` in
/// `/proc/<pid>/stat`, yet it is alive: liveness must come from the pidfd.
#[tokio::test]
async fn a_process_whose_main_thread_ended_is_still_alive() {
    const SCRIPT: &str = "import ctypes, threading, time\n\
        threading.Thread(target=time.sleep, args=(30,)).start()\n\
        ctypes.CDLL(None).pthread_exit(None)\n";
    let Ok(child) = Command::new("python3").arg("-c").arg(SCRIPT).spawn() else {
        // Ending only the main thread needs a foreign-function call, which this crate
        // forbids itself; without python3 there is no other way to stage it.
        return;
    };
    let mut child = Sleeper(child);
    let deadline = std::time::Instant::now() + PATIENCE;
    let stat = loop {
        let stat = read_stat(child.pid()).expect("the child is readable");
        if stat.has_exited() {
            break stat;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the main thread never ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let id = ProcessId {
        pid: child.pid(),
        start_ticks: stat.start_ticks,
    };
    assert!(
        is_alive(id),
        "alive although /proc says {:?}",
        stat.state as char
    );
    assert!(signal(id, Signal::Term).expect("signal our child"));
    tokio::time::timeout(PATIENCE, wait_for_exit(id))
        .await
        .expect("the exit is noticed")
        .expect("waiting succeeds");
    assert!(!is_alive(id));
    child.0.wait().expect("reap our child");
}

#[test]
fn signals_are_named() {
    assert_eq!(Signal::Term.to_string(), "SIGTERM");
    assert_eq!(
        PlatformError::NotFound { pid: 7 }.to_string(),
        "process 7 does not exist (it may have exited)"
    );
}
