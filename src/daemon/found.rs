//! A Telepresence process just found: what the agent can read of it (its environment, its
//! working directory, its cluster), whether it is in scope, and its first record.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::Ctx;
use crate::effects::cluster;
use crate::lifecycle;
use crate::platform::{self, ProcessId};
use crate::session::{ClusterBinding, SCHEMA, SessionRecord, State};
use crate::signals::discovery::Found;
use crate::telepresence;

/// A process's environment, and what went wrong reading it. Where the OS layer cannot read
/// it (macOS), the agent's own `KUBECONFIG`, `HOME`, `PATH` and `TMPDIR` stand in (a
/// launchd agent of the same user shares them with the user's shells in the common case).
pub(super) fn environ_map(pid: u32) -> (HashMap<String, String>, Option<String>) {
    // Found in its first instant, a process may still be inside execve for a moment: its
    // new environment is there within microseconds (20 ms at most here, said otherwise).
    let mut read = platform::process_environ(pid);
    for _ in 0..10 {
        if !matches!(
            read,
            Err(crate::platform::PlatformError::ExecInProgress { .. })
        ) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        read = platform::process_environ(pid);
    }
    match read {
        Ok(v) => (v.into_iter().collect(), None),
        Err(e @ crate::platform::PlatformError::Unsupported { .. }) => (
            ["KUBECONFIG", "HOME", "PATH", "TMPDIR"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
            Some(format!(
                "{e}: the agent's own KUBECONFIG, HOME and PATH stand in for the session's"
            )),
        ),
        Err(e) => (
            HashMap::new(),
            Some(format!(
                "cannot read its environment ({}): its KUBECONFIG, HOME and PATH are unknown, so the default kubeconfig is assumed; run the agent where it can read the user's /proc entries (see `telepolice-agent doctor`)",
                crate::daemon::unfollowed::with_cause(&e)
            )),
        ),
    }
}

/// Says (once) that the process `id` is not followed: its cluster is out of the configured
/// scope.
pub(super) fn pass_over_out_of_scope(
    ctx: &Ctx,
    id: ProcessId,
    argv: &[String],
    cluster: &ClusterBinding,
) {
    let why = format!(
        "context {} namespace {} is outside the configured scope (contexts, ignore_contexts, namespaces in {})",
        cluster.context,
        cluster.namespace,
        ctx.cfg().paths.config_file.display()
    );
    if ctx.unfollowed.note(id, argv, &why, false) {
        info!(pid = id.pid, "not following Telepresence process: {why}");
    }
}

/// What the agent cannot see of a session it follows (its environment, its working
/// directory), for the log, the record and `status`.
fn blindness(info: &crate::platform::ProcessInfo, env_problem: Option<String>) -> Vec<String> {
    let mut out: Vec<String> = env_problem.into_iter().collect();
    if info.cwd.is_none() {
        let why = platform::process_cwd(info.id.pid).err().map_or_else(
            || "gone".to_string(),
            |e| crate::daemon::unfollowed::with_cause(&e),
        );
        out.push(format!(
            "cannot read its working directory ({why}): its ./telepresence.log and a relative --logfile or KUBECONFIG cannot be found"
        ));
    }
    out
}

/// What the found process's command line asks Telepresence 0.x for, or `None` (said once
/// when it is a command line 0.x would refuse) when it makes no session.
fn invocation(ctx: &Ctx, f: &Found) -> Option<telepresence::Invocation> {
    let info = &f.info;
    let args = info.argv.get(f.program_index + 1..).unwrap_or(&[]);
    match telepresence::parse_legacy_args(args) {
        Ok(i) => Some(i),
        Err(e @ telepresence::ArgsError::PrintsAndExits { .. }) => {
            debug!(pid = info.id.pid, "not following Telepresence process: {e}");
            None
        }
        Err(e) => {
            let why = format!("Telepresence 0.x would refuse this command line: {e}");
            if ctx.unfollowed.note(info.id, &info.argv, &why, false) {
                warn!(
                    pid = info.id.pid,
                    "not following Telepresence process: {why}"
                );
            }
            None
        }
    }
}

/// The session's cluster, as far as its kubeconfig says now, and why it is not known yet
/// (the flags' context and namespace are kept, to be bound later).
fn bind(
    env: &HashMap<String, String>,
    cwd: Option<&std::path::Path>,
    invocation: &telepresence::Invocation,
) -> (ClusterBinding, Option<String>) {
    match cluster::resolve_binding(
        env,
        cwd,
        invocation.context.as_deref(),
        invocation.namespace.as_deref(),
    ) {
        Ok(b) => (b, None),
        Err(e) => (
            ClusterBinding {
                kubeconfig: cluster::kubeconfig_paths(env, cwd),
                context: invocation.context.clone().unwrap_or_default(),
                namespace: invocation.namespace.clone().unwrap_or_default(),
                server: String::new(),
                exec_env: Vec::new(),
            },
            Some(e.to_string()),
        ),
    }
}

/// The record of a process just found, in state `Seen`: who it is, and `cluster`; nothing
/// of what it asked for or did yet.
pub(super) fn record_of(
    info: &crate::platform::ProcessInfo,
    cluster: ClusterBinding,
) -> SessionRecord {
    SessionRecord {
        schema: SCHEMA,
        key: SessionRecord::key_for(info.id),
        process: info.id,
        argv: info.argv.clone(),
        cwd: info.cwd.clone(),
        parent: platform::process_info(info.ppid).ok().map(|p| p.id),
        tty: info.tty_nr,
        sid: info.session,
        uid: info.uid,
        invocation: telepresence::Invocation::default(),
        cluster,
        telepresence_id: None,
        tmp_root: None,
        original: None,
        proxies: Vec::new(),
        state: State::Seen,
        history: Vec::new(),
        actions: Vec::new(),
        tel2: None,
    }
}

/// Builds the first record of a newly found session (state `Seen`), or `None` when it is
/// out of the configured scope.
pub(super) fn new_record(ctx: &Ctx, f: &Found) -> Option<SessionRecord> {
    if f.flavor == telepresence::Flavor::Modern {
        // A 2.x connector's cluster is known only once it connects: scope is checked then.
        return super::tel2::new_record(ctx, f);
    }
    let info = &f.info;
    let invocation = invocation(ctx, f)?;
    let (env, env_problem) = environ_map(info.id.pid);
    let blind = blindness(info, env_problem);
    let (cluster, problem) = bind(&env, info.cwd.as_deref(), &invocation);
    if problem.is_none() && !ctx.cfg().in_scope(&cluster.context, &cluster.namespace) {
        pass_over_out_of_scope(ctx, info.id, &info.argv, &cluster);
        return None;
    }
    ctx.unfollowed.forget(info.id);
    if !blind.is_empty() {
        let why = blind.join("; ");
        if ctx.unfollowed.note(info.id, &info.argv, &why, true) {
            warn!(
                pid = info.id.pid,
                "following Telepresence process half-blind: {why}"
            );
        }
    }
    let mut rec = record_of(info, cluster);
    rec.invocation = invocation;
    // Where its tel-* dir is: /tmp, whatever its TMPDIR says (0.x hard-codes it).
    rec.tmp_root = Some(ctx.cfg().paths.tmp_dir.clone());
    // Not final while the cluster is unknown: the kubeconfig may appear or be fixed while
    // the session runs.
    let found = lifecycle::Event::Found {
        pid: info.id.pid,
        blind,
        cluster_problem: problem,
    };
    let step = lifecycle::step(&rec, found);
    lifecycle::apply(&mut rec, &step);
    info!(session = %rec.key, target = %rec.target(), context = %rec.cluster.context, namespace = %rec.cluster.namespace, "new Telepresence session");
    Some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_be_read_of_a_session_is_said() {
        let me = platform::process_info(std::process::id()).expect("this process");
        assert!(blindness(&me, None).is_empty(), "its own cwd is readable");
        let blind = crate::platform::ProcessInfo {
            cwd: None,
            ..me.clone()
        };
        let said = blindness(&blind, Some("cannot read its environment (EACCES)".into()));
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("environment"), "{said:?}");
        assert!(
            said[1].starts_with("cannot read its working directory ("),
            "{said:?}"
        );
        // Its own environment reads; a process that is gone has none.
        assert!(environ_map(std::process::id()).1.is_none());
        let (env, problem) = environ_map(u32::MAX - 1);
        assert!(env.is_empty());
        assert!(problem.is_some_and(|p| p.contains("cannot read its environment")));
    }
}
