use super::*;
use std::time::Duration;

/// Finds a child of `parent` with the same command line (its fork), waiting up to
/// 10 s for it.
fn fork_of(parent: u32) -> Option<u32> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let argv = platform::process_info(parent)
            .map(|i| i.argv)
            .unwrap_or_default();
        let kids: Vec<u32> = platform::list_pids()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                platform::process_info(*p)
                    .is_ok_and(|i| i.ppid == parent && i.argv == argv && argv.len() > 1)
            })
            .collect();
        if let Some(k) = kids.first() {
            return Some(*k);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_forked_child_with_its_parents_command_line_is_not_a_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let program = dir.path().join("telepresence");
    // A Python "Telepresence" that forks and does not exec: the child keeps the
    // parent's command line, as a real one's children do until they exec kubectl.
    std::fs::write(
        &program,
        "#!/usr/bin/env python3\nimport os, time\nos.fork()\ntime.sleep(30)\n",
    )
    .expect("script written");
    let Ok(mut child) = std::process::Command::new("python3")
        .arg(&program)
        .args(["--swap-deployment", "app"])
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is required in CI"
        );
        return;
    };
    let parent = child.id();
    let forked = fork_of(parent);
    let d = Discovery::new(std::slice::from_ref(&program));
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen = d.examine(parent);
    while seen.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        seen = d.examine(parent);
    }
    let forked_seen = forked.map(|f| d.examine(f).is_some());
    // Clean up before asserting: only the processes this test started, by pid.
    if let Some(f) = forked {
        let _ = std::process::Command::new("kill")
            .arg(f.to_string())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.is_some(), "the session itself is found");
    assert_eq!(
        forked_seen,
        Some(false),
        "its forked child is not a session"
    );
}

#[test]
fn other_programs_are_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let watched = dir.path().join("telepresence");
    std::fs::write(&watched, "#!/usr/bin/env python3\n").expect("written");
    let d = Discovery::new(std::slice::from_ref(&watched));
    // This test process is not Telepresence.
    assert!(d.examine(std::process::id()).is_none());
}

#[test]
fn configured_names_add_to_the_default() {
    let names = program_names(&[
        PathBuf::from("/opt/tp/tel-legacy"),
        PathBuf::from("/usr/local/bin/telepresence"),
    ]);
    assert_eq!(names, ["telepresence", "tel-legacy"]);
    assert_eq!(program_names(&[]), ["telepresence"]);
}

/// Writes an executable file.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
    std::fs::write(path, text).expect("written");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("executable");
}

/// A Python "Telepresence" that only waits.
const SLEEPER: &str = "#!/usr/bin/env python3\nimport time\ntime.sleep(30)\n";

/// Starts `program` with a swap's arguments; `None` where it cannot run (no python3
/// outside CI).
fn start(program: &mut std::process::Command) -> Option<std::process::Child> {
    match program.args(["--swap-deployment", "app"]).spawn() {
        Ok(c) => Some(c),
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "{e}");
            None
        }
    }
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

fn children_of(parent: u32) -> Vec<u32> {
    platform::list_pids()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| platform::process_info(*p).is_ok_and(|i| i.ppid == parent))
        .collect()
}

#[test]
fn a_session_is_found_wherever_its_program_is_even_with_a_watched_2x() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The agent's PATH has a 2.x; the user runs a 0.x from a venv.
    let modern = dir.path().join("bin/telepresence");
    script(&modern, "\x7fELF\x02\x01\x01");
    let legacy = dir.path().join("venv/bin/telepresence");
    script(&legacy, SLEEPER);
    let d = Discovery::new(std::slice::from_ref(&modern));
    let Some(mut child) = start(std::process::Command::new("python3").arg(&legacy)) else {
        return;
    };
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen = d.examine(child.id());
    while seen.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        seen = d.examine(child.id());
    }
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.expect("the 0.x session is found");
    assert_eq!(seen.program.as_deref(), Some(legacy.as_path()));
    assert_eq!(
        seen.info.argv.get(seen.program_index).map(PathBuf::from),
        Some(legacy)
    );
}

#[test]
fn a_shell_wrapper_leads_to_its_python_process_and_is_no_session_itself() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real = dir.path().join("lib/telepresence");
    script(&real, SLEEPER);
    // One runs Python as a child, one execs it (the same pid).
    let forks = dir.path().join("forks/telepresence");
    script(
        &forks,
        &format!("#!/bin/sh\npython3 '{}' \"$@\"\n", real.display()),
    );
    let execs = dir.path().join("execs/telepresence");
    script(
        &execs,
        &format!("#!/bin/sh\nexec python3 '{}' \"$@\"\n", real.display()),
    );
    let mut d = Discovery::new(&[forks.clone(), execs.clone()]);
    let Some(mut forking) = start(&mut std::process::Command::new(&forks)) else {
        return;
    };
    let Some(mut execing) = start(&mut std::process::Command::new(&execs)) else {
        let _ = forking.kill();
        return;
    };
    let (forking_pid, execing_pid) = (forking.id(), execing.id());
    let mut found: Vec<Found> = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    let done = |found: &[Found]| {
        found.iter().any(|f| f.info.ppid == forking_pid)
            && found.iter().any(|f| f.info.id.pid == execing_pid)
    };
    while !done(&found) && Instant::now() < end {
        found.extend(d.poll());
        std::thread::sleep(Duration::from_millis(20));
    }
    let wrapper_seen = d.examine(forking_pid).is_some();
    // Clean up before asserting: only the processes this test started, by pid.
    for pid in children_of(forking_pid) {
        kill(pid);
    }
    for c in [&mut forking, &mut execing] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(!wrapper_seen, "the wrapper is not a session");
    assert!(
        found.iter().all(|f| f.info.id.pid != forking_pid),
        "{found:#?}"
    );
    let child = found
        .iter()
        .find(|f| f.info.ppid == forking_pid)
        .expect("the wrapper's Python child is found");
    let execd = found
        .iter()
        .find(|f| f.info.id.pid == execing_pid)
        .expect("the Python the wrapper exec'd is found");
    for f in [child, execd] {
        assert_eq!(f.program.as_deref(), Some(real.as_path()), "{f:#?}");
        assert_eq!(
            f.info.argv.get(f.program_index + 1).map(String::as_str),
            Some("--swap-deployment"),
            "{f:#?}"
        );
    }
}
