//! Telepresence 2: sessions left behind, and the way to the traffic-manager.
//!
//! - A session cache (`sessions/<id>.json`, or `sessions.json` before 2.16) that names a
//!   session no running connector keeps: the traffic-manager keeps such a session, and its
//!   intercepts, until its TTL (24 h by default). The agent ends the sessions of connectors
//!   it followed; one left before it ran is a person's to end, and `doctor` says how.
//! - Per context: whether the traffic-manager answers through a port-forward, and whether
//!   the user holds what that takes ([`MANAGER_PERMISSIONS`]).
//!
//! Nothing here starts Telepresence or writes anything.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::contexts::{Answer, review_error};
use super::{Check, Environment};
use crate::effects::cluster;
use crate::effects::manager::{MANAGER_PERMISSIONS, Manager, ManagerError};
use crate::telepresence2::{
    self, DAEMON_INFO_STALE_AFTER, SavedSession, Scope, parse_saved_session,
};

/// The check's name.
const CHECK: &str = "telepresence 2";

/// One line per saved session in the user's Telepresence 2 cache; nothing when there is no
/// such cache (2.x never ran as this user).
pub(super) fn sessions(env: &Environment, now: SystemTime) -> Vec<Check> {
    let Some(dir) = telepresence2::cache_dir(
        env.var("XDG_CACHE_HOME"),
        env.var("HOME").map(Path::new),
        cfg!(target_os = "macos"),
    ) else {
        return leftovers();
    };
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?.to_string();
            Some((id, e.path()))
        })
        .collect();
    files.sort();
    let legacy = dir.join("sessions.json");
    if legacy.is_file() {
        files.push((String::new(), legacy));
    }
    let mut checks: Vec<Check> = files
        .into_iter()
        .map(|(id, path)| one(&dir, &id, &path, now))
        .collect();
    checks.extend(leftovers());
    checks
}

/// One warning per thing a killed Telepresence 2 left on the laptop (its sockets, a root
/// daemon without a connector, DNS files), with the command that clears it.
fn leftovers() -> Vec<Check> {
    crate::effects::local2::leftovers(
        &crate::effects::local2::Paths::telepresence(),
        crate::platform::current_uid(),
    )
    .into_iter()
    .map(|l| Check::warn(CHECK, format!("{}; run `{}`", l.what, l.command)))
    .collect()
}

/// The line for one session cache file; `id` is the daemon id it is named after (empty for
/// the single `sessions.json` of 2.6.7-2.15).
fn one(dir: &Path, id: &str, path: &Path, now: SystemTime) -> Check {
    let saved = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| parse_saved_session(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return Check::warn(CHECK, format!("{}: {e}", path.display())),
    };
    let what = describe(&saved);
    let info = (!id.is_empty()).then(|| dir.join("daemons").join(format!("{id}.json")));
    let age = info
        .as_ref()
        .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO));
    match age {
        Some(a) if a <= DAEMON_INFO_STALE_AFTER => {
            Check::ok(CHECK, format!("{what}: its connector is running"))
        }
        _ => {
            let why = match (&info, age) {
                (Some(p), Some(a)) => {
                    format!("{} was last touched {} s ago", p.display(), a.as_secs())
                }
                (Some(p), None) => format!("{} does not exist", p.display()),
                (None, _) => "2.6.7-2.15 keep no daemon file to tell".to_string(),
            };
            Check::warn(
                CHECK,
                format!(
                    "{what} was never ended, and no connector keeps it ({why}): the traffic-manager keeps it, and its intercepts, until its TTL (24 h by default); the agent ends only sessions it saw a connector hold (see `telepolice-agent status`), so to end this one, run {} then `telepresence quit`",
                    connect_command(&saved.scope)
                ),
            )
        }
    }
}

/// The traffic-manager in `namespace` of `context`: whether it answers through a
/// port-forward (as the agent reaches it to end a dead connector's session), and whether
/// the user holds [`MANAGER_PERMISSIONS`] there. One line when no traffic-manager is
/// installed there (most contexts), two otherwise.
pub(super) async fn manager(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    timeout: Duration,
) -> Vec<Check> {
    let name = format!("traffic-manager {context}");
    let reach = async {
        let m = Manager::connect(client, namespace).await?;
        let v = m.version().await?;
        Ok::<_, ManagerError>((m.pod.clone(), v.version))
    };
    let first = match tokio::time::timeout(timeout, reach).await {
        Ok(Ok((pod, version))) => Check::ok(
            name,
            format!(
                "Telepresence 2's traffic-manager {version} in namespace {namespace} answers through a port-forward to pod {pod}: the agent can end dead connectors' sessions"
            ),
        ),
        Ok(Err(ManagerError::NoManager {
            transient: false,
            why,
            ..
        })) => {
            return vec![Check::ok(
                name,
                format!(
                    "none in namespace {namespace} ({why}): Telepresence 2 is not installed there (`telepresence2_manager_namespace` names where it is)"
                ),
            )];
        }
        Ok(Err(e)) => Check::warn(
            name,
            format!("{e}: the agent cannot end dead connectors' sessions in this cluster"),
        ),
        Err(_) => Check::warn(
            name,
            format!(
                "no answer from the traffic-manager in namespace {namespace} within {} s",
                timeout.as_secs_f64()
            ),
        ),
    };
    let asks = MANAGER_PERMISSIONS.iter().map(|p| async move {
        let answer: Answer = cluster::review_access(client, namespace, p)
            .await
            .map_err(|e| review_error(&e));
        (p, answer)
    });
    let answers = match tokio::time::timeout(timeout, futures::future::join_all(asks)).await {
        Ok(a) => a,
        Err(_) => return vec![first],
    };
    let denied: Vec<String> = answers
        .iter()
        .filter(|(_, a)| a.as_ref().is_ok_and(|a| !a.allowed))
        .map(|(p, _)| format!("{} {} (to {})", p.verb, p.qualified_resource(), p.why))
        .collect();
    let second = if denied.is_empty() {
        Check::ok(
            format!("traffic-manager access {context}"),
            format!(
                "all {} permissions the traffic-manager's port-forward takes in namespace {namespace}",
                MANAGER_PERMISSIONS.len()
            ),
        )
    } else {
        Check::warn(
            format!("traffic-manager access {context}"),
            format!(
                "in namespace {namespace} the agent may not {}: it cannot end dead connectors' sessions; Telepresence's own traffic-manager-connect Role grants only `create` on pods/portforward, and the agent's port-forward (WebSocket) also needs `get`: ask a cluster admin to add it",
                denied.join(", ")
            ),
        )
    };
    vec![first, second]
}

/// The session and what it is for, as a person reads it.
fn describe(s: &SavedSession) -> String {
    match &s.scope {
        Scope::Daemon { context, namespace } => format!(
            "session {} (context {context}, namespace {namespace})",
            s.session.session_id
        ),
        Scope::Host(host) => format!("session {} (API server {host})", s.session.session_id),
    }
}

/// What resumes the session, so that `quit` can end it.
fn connect_command(scope: &Scope) -> String {
    match scope {
        Scope::Daemon { context, namespace } => {
            format!("`telepresence connect --context {context} --namespace {namespace}`")
        }
        Scope::Host(_) => {
            "`telepresence connect` (with a context that points at that API server)".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::Status;

    fn env(home: &Path) -> Environment {
        Environment {
            vars: [("HOME".to_string(), home.display().to_string())].into(),
            cwd: None,
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
        std::fs::write(path, text).expect("written");
    }

    const ALIVE: &str =
        r#"{"kubeContext":"kind-dev","namespace":"default","session":{"session_id":"aaaa-1111"}}"#;
    const DEAD: &str =
        r#"{"kubeContext":"prod","namespace":"team","session":{"session_id":"bbbb-2222"}}"#;
    const OLD: &str = r#"{"Host":"https://10.0.0.1:6443","session":{"session_id":"cccc-3333"}}"#;

    #[test]
    fn each_saved_session_says_whether_a_connector_keeps_it() {
        let home = tempfile::tempdir().expect("temp dir");
        let cache = home.path().join(".cache/telepresence");
        write(&cache.join("sessions/kind-dev-default.json"), ALIVE);
        write(&cache.join("daemons/kind-dev-default.json"), "{}");
        write(&cache.join("sessions/prod-team.json"), DEAD);
        let stale = cache.join("daemons/prod-team.json");
        write(&stale, "{}");
        let old = std::fs::File::options()
            .write(true)
            .open(&stale)
            .expect("opened");
        old.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .expect("touched back");
        write(&cache.join("sessions/broken.json"), "{not json");
        write(&cache.join("sessions.json"), OLD);
        let checks = sessions(&env(home.path()), SystemTime::now());
        let lines: Vec<(Status, &str)> = checks
            .iter()
            .map(|c| (c.status, c.message.as_str()))
            .collect();
        assert_eq!(checks.len(), 4, "{lines:#?}");
        assert!(checks.iter().all(|c| c.check == CHECK));
        let find = |id: &str| {
            lines
                .iter()
                .find(|(_, m)| m.contains(id))
                .unwrap_or_else(|| panic!("{id}: {lines:#?}"))
        };
        let (s, m) = find("aaaa-1111");
        assert_eq!(*s, Status::Ok, "{m}");
        assert!(m.ends_with("its connector is running"), "{m}");
        let (s, m) = find("bbbb-2222");
        assert_eq!(*s, Status::Warn, "{m}");
        assert!(m.contains("last touched 3600 s ago"), "{m}");
        assert!(
            m.contains(
                "run `telepresence connect --context prod --namespace team` then `telepresence quit`"
            ),
            "{m}"
        );
        let (s, m) = find("cccc-3333");
        assert_eq!(*s, Status::Warn, "{m}");
        assert!(m.contains("API server https://10.0.0.1:6443"), "{m}");
        let (s, m) = find("broken.json");
        assert_eq!(*s, Status::Warn, "{m}");
        assert!(m.contains("not a Telepresence 2 session cache"), "{m}");
    }

    #[test]
    fn without_a_cache_there_is_nothing_to_say() {
        let home = tempfile::tempdir().expect("temp dir");
        assert!(sessions(&env(home.path()), SystemTime::now()).is_empty());
        let no_home = Environment {
            vars: Default::default(),
            cwd: None,
        };
        assert!(sessions(&no_home, SystemTime::now()).is_empty());
    }

    #[test]
    fn a_session_whose_daemon_file_is_gone_is_not_kept() {
        let home = tempfile::tempdir().expect("temp dir");
        let cache = home.path().join(".cache/telepresence");
        write(&cache.join("sessions/prod-team.json"), DEAD);
        let checks = sessions(&env(home.path()), SystemTime::now());
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Warn);
        assert!(
            checks[0]
                .message
                .contains("daemons/prod-team.json does not exist"),
            "{}",
            checks[0].message
        );
    }
}
