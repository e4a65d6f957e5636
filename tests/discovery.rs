//! Finding sessions wherever Telepresence 0.x lives and however it is launched: a program
//! replaced while the agent runs (an upgrade), a copy that is neither configured nor on the
//! agent's PATH, and a shell wrapper named `telepresence` that runs Python as a child.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::agent::{Agent, actions, followed, swap_followed, wait_for};
use crate::standin::{SCRIPT, alive, helper_children, kill_pid, replicas, setup};
use crate::util::Env;

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the program exists").ino()
}

/// Waits until the session of `id` is repaired: the original back at 2 replicas and the
/// proxy pod gone.
fn wait_repaired(env: &Env, agent: &Agent, id: &str) {
    let rec = agent.wait_state("Cleaned");
    assert_eq!(
        replicas(env, "app"),
        2,
        "the original is back: {:#?}",
        actions(&rec)
    );
    env.wait("the proxy pod is gone", |c| {
        c.get("pods", "default", &format!("app-{id}")).is_none()
    });
}

#[test]
fn a_program_replaced_by_rename_is_watched_again() {
    let Some(env) = setup() else { return };
    let program = Agent::program(&env);
    // A scan once at start only: the session must be found from the exec.
    let agent = Agent::start_with(&env, &program, "scan_interval_secs = 3600");
    // An upgrade as package managers do it: a new file beside the program, renamed over it.
    let new = program.with_file_name(".telepresence.new");
    std::fs::copy(SCRIPT, &new).expect("the new version is written");
    let old = inode(&program);
    std::fs::rename(&new, &program).expect("renamed over the program");
    assert_ne!(inode(&program), old, "a new inode at the same path");
    agent.wait_log("watching the replaced Telepresence program");

    let (mut s, id, rec) = swap_followed(&env, &agent, &program);
    assert_eq!(rec["original"]["replicas"], 2, "{rec:#}");
    assert_eq!(
        rec["original"]["source"], "Observed",
        "found at its start, before the scale-down: {rec:#}"
    );
    s.signal("KILL");
    s.wait_exit(&env);
    wait_repaired(&env, &agent, &id);
}

#[test]
fn a_program_neither_configured_nor_on_path_is_followed() {
    let Some(env) = setup() else { return };
    let configured = Agent::program(&env);
    let agent = Agent::start_with(&env, &configured, "");
    // A project's own copy (a venv's bin, say): not configured, not on the agent's PATH.
    let elsewhere = env.path("project/.venv/bin/telepresence");
    std::fs::create_dir_all(elsewhere.parent().expect("a parent")).expect("venv dir");
    std::fs::copy(SCRIPT, &elsewhere).expect("the stand-in is copied");

    let (mut s, id, rec) = swap_followed(&env, &agent, &elsewhere);
    assert!(
        rec["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == elsewhere.to_str().expect("UTF-8"))),
        "{rec:#}"
    );
    // Watched from now on, so that its next session is found at its start.
    agent.wait_log(&format!(
        "watching the Telepresence program {}",
        elsewhere.display()
    ));
    s.signal("KILL");
    s.wait_exit(&env);
    wait_repaired(&env, &agent, &id);
}

/// Kills the Python child of a wrapper (and its helpers) if a failed test left it running.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        if alive(self.0) {
            for (pid, _) in helper_children(self.0) {
                kill_pid(pid);
            }
            kill_pid(self.0);
        }
    }
}

#[test]
fn a_shell_wrapper_named_telepresence_leads_to_its_python_child() {
    let Some(env) = setup() else { return };
    let real = env.path("libexec/telepresence");
    std::fs::create_dir_all(real.parent().expect("a parent")).expect("libexec dir");
    std::fs::copy(SCRIPT, &real).expect("the stand-in is copied");
    let wrapper = env.path("bin/telepresence");
    std::fs::create_dir_all(wrapper.parent().expect("a parent")).expect("bin dir");
    // Not `exec`: the wrapper stays, as the parent of the Python process.
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\npython3 '{}' \"$@\"\n", real.display()),
    )
    .expect("the wrapper is written");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("executable");
    // Only the wrapper is watched and the scan runs once, at start: the session is found
    // from the wrapper's exec.
    let agent = Agent::start_with(&env, &wrapper, "scan_interval_secs = 3600");

    // The helpers are the Python process's children, not the wrapper's: none to wait for.
    let (mut s, id, rec) = followed(
        &env,
        &agent,
        &wrapper,
        "0.109",
        &["--swap-deployment", "app"],
        0,
    );
    let pid = rec["process"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("a pid");
    let _reap = Reap(pid);
    assert_ne!(pid, s.pid(), "the wrapper is not the session: {rec:#}");
    assert!(
        rec["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == real.to_str().expect("UTF-8"))),
        "the session is the Python process running the real program: {rec:#}"
    );
    assert_eq!(rec["original"]["source"], "Observed", "{rec:#}");
    wait_for("the helpers run", || helper_children(pid).len() >= 4);
    let helpers = helper_children(pid);

    kill_pid(pid);
    s.wait_exit(&env);
    wait_repaired(&env, &agent, &id);
    for (helper, argv) in helpers {
        wait_for(&format!("helper {helper} {argv:?} stops"), || {
            !alive(helper)
        });
    }
}
