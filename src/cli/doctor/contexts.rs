//! The cluster checks: which contexts and namespaces are checked (pure), then for each
//! context at once whether its API server answers (`GET /version`) and whether its user
//! holds every permission in [`NEEDED_PERMISSIONS`] (SelfSubjectAccessReviews).

use std::time::{Duration, Instant};

use super::local::Kubeconfigs;
use super::{Check, DoctorError, Environment, Options};
use crate::config::Config;
use crate::effects::cluster::{self, AccessAnswer, ClusterError, NEEDED_PERMISSIONS, Permission};

/// Which contexts are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Selection {
    /// The contexts to check, in kubeconfig order (or the one asked for).
    pub check: Vec<String>,
    /// Contexts the config's scope leaves out, each with the key that does.
    pub out_of_scope: Vec<(String, &'static str)>,
}

/// The config key that puts `context` out of the agent's scope, if one does.
fn excluded_by(cfg: Option<&Config>, context: &str) -> Option<&'static str> {
    let cfg = cfg?;
    if !cfg.contexts.is_empty() && !cfg.contexts.iter().any(|c| c == context) {
        Some("contexts")
    } else if cfg.ignore_contexts.iter().any(|c| c == context) {
        Some("ignore_contexts")
    } else {
        None
    }
}

/// The contexts to check: the one asked for (even out of scope: it is checked and the
/// scope is reported), else every context of the kubeconfig that the config's
/// `contexts` / `ignore_contexts` leave in scope.
pub(super) fn select(all: &[String], cfg: Option<&Config>, only: Option<&str>) -> Selection {
    if let Some(only) = only {
        return Selection {
            check: vec![only.to_string()],
            out_of_scope: excluded_by(cfg, only)
                .map(|k| (only.to_string(), k))
                .into_iter()
                .collect(),
        };
    }
    let mut s = Selection {
        check: Vec::new(),
        out_of_scope: Vec::new(),
    };
    for c in all {
        match excluded_by(cfg, c) {
            Some(key) => s.out_of_scope.push((c.clone(), key)),
            None => s.check.push(c.clone()),
        }
    }
    s
}

/// The namespaces whose permissions are checked in a context whose namespace is
/// `context_ns`: the one asked for, else the config's `namespaces` (less the ignored ones),
/// else the context's own unless the config ignores it.
pub(super) fn namespaces(
    asked: Option<&str>,
    cfg: Option<&Config>,
    context_ns: &str,
) -> Vec<String> {
    if let Some(ns) = asked {
        return vec![ns.to_string()];
    }
    let ignored = |ns: &str| cfg.is_some_and(|c| c.ignore_namespaces.iter().any(|i| i == ns));
    match cfg.filter(|c| !c.namespaces.is_empty()) {
        Some(c) => c
            .namespaces
            .iter()
            .filter(|ns| !ignored(ns))
            .cloned()
            .collect(),
        None if ignored(context_ns) => Vec::new(),
        None => vec![context_ns.to_string()],
    }
}

/// An error with every cause it wraps, each once (`a: b: c`), on one line.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

/// The line for a context whose server did not answer `GET /version` as it should.
fn unreachable(context: &str, server: &str, e: &ClusterError) -> Check {
    let name = format!("context {context}");
    let tail = "permissions not checked";
    match e {
        ClusterError::Api {
            source: kube::Error::Api(s),
            ..
        } if s.code == 401 => Check::fail(
            name,
            format!(
                "{server} refused the credentials (401 {}): log in again or refresh the kubeconfig; {tail}",
                s.message
            ),
        ),
        ClusterError::Api {
            source: kube::Error::Api(s),
            ..
        } => Check::fail(
            name,
            format!(
                "{server} answered {} {}: {}; {tail}",
                s.code, s.reason, s.message
            ),
        ),
        ClusterError::Api {
            source: source @ kube::Error::Auth(_),
            ..
        } => Check::fail(
            name,
            format!(
                "getting credentials for {server}: {}; {tail}",
                with_causes(source)
            ),
        ),
        ClusterError::Api { source, .. } => Check::fail(
            name,
            format!("unreachable: {server}: {}; {tail}", with_causes(source)),
        ),
        other => Check::fail(name, format!("{}; {tail}", with_causes(other))),
    }
}

/// One permission's answer: granted or not, or why it could not be asked.
pub(super) type Answer = Result<AccessAnswer, String>;

/// The line for a context's permissions in `namespace`, from the answers to each of
/// [`NEEDED_PERMISSIONS`] (in that order).
pub(super) fn permissions_line(
    context: &str,
    namespace: &str,
    answers: &[(&Permission, Answer)],
) -> Check {
    let name = format!("permissions {context}");
    let denied: Vec<String> = answers
        .iter()
        .filter(|(_, a)| a.as_ref().is_ok_and(|a| !a.allowed))
        .map(|(p, _)| format!("{} {} (to {})", p.verb, p.qualified_resource(), p.why))
        .collect();
    let failed: Vec<&String> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().err())
        .collect();
    let unasked = match failed.first() {
        Some(first) => format!(
            "{} of {} could not be asked: {first}",
            failed.len(),
            answers.len()
        ),
        None => String::new(),
    };
    if !denied.is_empty() {
        let mut m = format!(
            "in namespace {namespace} the agent may not {}: it cannot repair sessions there; ask a cluster admin (check with `kubectl --context {context} auth can-i --list -n {namespace}`)",
            denied.join(", ")
        );
        if !unasked.is_empty() {
            m.push_str(&format!("; {unasked}"));
        }
        Check::fail(name, m)
    } else if !failed.is_empty() {
        Check::warn(name, format!("in namespace {namespace}, {unasked}"))
    } else {
        let resources: Vec<String> = {
            let mut r: Vec<String> = Vec::new();
            for (p, _) in answers {
                let q = p.qualified_resource();
                if !r.contains(&q) {
                    r.push(q);
                }
            }
            r
        };
        Check::ok(
            name,
            format!(
                "all {} permissions the agent needs in namespace {namespace} ({})",
                answers.len(),
                resources.join(", ")
            ),
        )
    }
}

/// Says why a review could not be asked, in a line's words.
pub(super) fn review_error(e: &ClusterError) -> String {
    match e {
        ClusterError::Api {
            source: kube::Error::Api(s),
            ..
        } if s.code == 403 => format!(
            "the cluster refused the SelfSubjectAccessReview itself (403: {})",
            s.message
        ),
        other => with_causes(other),
    }
}

/// Asks every needed permission in `namespace` at once, bounded by `timeout`.
async fn ask_permissions(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    timeout: Duration,
) -> Check {
    let asks = NEEDED_PERMISSIONS.iter().map(|p| async move {
        let answer = cluster::review_access(client, namespace, p)
            .await
            .map_err(|e| review_error(&e));
        (p, answer)
    });
    match tokio::time::timeout(timeout, futures::future::join_all(asks)).await {
        Ok(answers) => permissions_line(context, namespace, &answers),
        Err(_) => Check::warn(
            format!("permissions {context}"),
            format!(
                "in namespace {namespace}, no answer to the access reviews within {} s",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// Team mode's permissions in `namespace`: a warning, not a failure (without them the agent
/// repairs alone, as before).
async fn ask_team_permissions(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    timeout: Duration,
) -> Check {
    use crate::effects::cluster::access::TEAM_PERMISSIONS;
    let name = format!("team mode {context}");
    let asks = TEAM_PERMISSIONS
        .iter()
        .map(|p| async move { (p, cluster::review_access(client, namespace, p).await) });
    let Ok(answers) = tokio::time::timeout(timeout, futures::future::join_all(asks)).await else {
        return Check::warn(
            name,
            format!("in namespace {namespace}, no answer to the access reviews"),
        );
    };
    let mut denied = Vec::new();
    for (p, a) in &answers {
        match a {
            Ok(a) if a.allowed => {}
            Ok(_) => denied.push(format!("{} {}", p.verb, p.qualified_resource())),
            Err(e) => {
                return Check::warn(
                    name,
                    format!("in namespace {namespace}: {}", review_error(e)),
                );
            }
        }
    }
    if denied.is_empty() {
        Check::ok(
            name,
            format!(
                "in namespace {namespace} the agent can keep heartbeats and write recovery facts for an in-cluster sweeper"
            ),
        )
    } else {
        Check::warn(
            name,
            format!(
                "in namespace {namespace} the agent may not {}: no heartbeat or facts there, so an in-cluster sweeper cannot repair a session whose laptop never returns (the agent still repairs its own); ask a cluster admin, or set `team = false` to stop trying",
                denied.join(", ")
            ),
        )
    }
}

/// Checks one context: its server answers, then its permissions in each namespace.
async fn check_one(
    context: &str,
    cfg: Option<&Config>,
    env: &Environment,
    opts: &Options,
) -> Vec<Check> {
    let name = format!("context {context}");
    let binding = match cluster::resolve_binding(
        &env.vars,
        env.cwd.as_deref(),
        Some(context),
        opts.namespace.as_deref(),
    ) {
        Ok(b) => b,
        Err(e) => return vec![Check::fail(name, e.to_string())],
    };
    let server = if binding.server.is_empty() {
        "(no server URL)".to_string()
    } else {
        binding.server.clone()
    };
    let started = Instant::now();
    let reach = async {
        let client = cluster::client_for(&binding).await?;
        let version = cluster::server_version(&client).await?;
        Ok::<_, ClusterError>((client, version))
    };
    let (client, version) = match tokio::time::timeout(opts.timeout, reach).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(e)) => return vec![unreachable(context, &server, &e)],
        Err(_) => {
            let e = DoctorError::NoAnswer {
                server: server.clone(),
                secs: opts.timeout.as_secs_f64(),
            };
            return vec![Check::fail(
                name,
                format!("unreachable: {e}; permissions not checked"),
            )];
        }
    };
    let mut out = vec![Check::ok(
        name,
        format!(
            "reachable: {server} answers (Kubernetes {version}, {} ms), namespace {}",
            started.elapsed().as_millis(),
            binding.namespace
        ),
    )];
    let namespaces = namespaces(opts.namespace.as_deref(), cfg, &binding.namespace);
    if namespaces.is_empty() {
        out.push(Check::ok(
            format!("permissions {context}"),
            format!(
                "not checked: the config ignores namespace {} and names no other",
                binding.namespace
            ),
        ));
    }
    let checks = namespaces
        .iter()
        .map(|ns| ask_permissions(&client, context, ns, opts.timeout));
    let follows_2x = cfg.is_none_or(|c| c.telepresence2);
    let manager_ns = cfg.map_or(crate::effects::manager::DEFAULT_NAMESPACE, |c| {
        c.telepresence2_manager_namespace.as_str()
    });
    let manager = async {
        if follows_2x {
            super::telepresence2::manager(&client, context, manager_ns, opts.timeout).await
        } else {
            Vec::new()
        }
    };
    let team = cfg.is_none_or(|c| c.team);
    let team_checks = namespaces
        .iter()
        .filter(|_| team)
        .map(|ns| ask_team_permissions(&client, context, ns, opts.timeout));
    let (permissions, team_lines, manager) = futures::join!(
        futures::future::join_all(checks),
        futures::future::join_all(team_checks),
        manager
    );
    out.extend(permissions);
    out.extend(team_lines);
    out.extend(manager);
    out
}

/// Checks every selected context at once; the lines come back in kubeconfig order.
pub(super) async fn check(
    cfg: Option<&Config>,
    kube: &Kubeconfigs,
    env: &Environment,
    opts: &Options,
) -> Vec<Check> {
    if kube.contexts.is_empty() && opts.context.is_none() {
        // The kubeconfig check already said why there is nothing to check.
        return Vec::new();
    }
    let sel = select(&kube.contexts, cfg, opts.context.as_deref());
    let mut out = Vec::new();
    match (&opts.context, sel.out_of_scope.first()) {
        (Some(c), Some((_, key))) => out.push(Check::warn(
            "scope",
            format!(
                "context {c} is outside the agent's scope (the config's `{key}`): its sessions are not repaired"
            ),
        )),
        (None, _) if sel.check.is_empty() => out.push(Check::warn(
            "scope",
            "the config's `contexts` / `ignore_contexts` leave no context of the kubeconfig in scope: the agent repairs nothing",
        )),
        (None, Some(_)) => {
            let left: Vec<String> = sel
                .out_of_scope
                .iter()
                .map(|(c, key)| format!("{c} ({key})"))
                .collect();
            out.push(Check::ok(
                "scope",
                format!("not checked, outside the agent's scope: {}", left.join(", ")),
            ));
        }
        _ => {}
    }
    let each = sel.check.iter().map(|c| check_one(c, cfg, env, opts));
    for lines in futures::future::join_all(each).await {
        out.extend(lines);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::Status;
    use crate::config::{Paths, RawConfig};

    fn cfg(toml: &str) -> Config {
        let paths = Paths::resolve(&|k| match k {
            "TELEPOLICE_CONFIG" => Some("/c.toml".into()),
            "TELEPOLICE_STATE_DIR" => Some("/s".into()),
            _ => None,
        })
        .expect("paths");
        let raw: RawConfig =
            crate::config::parse(toml, std::path::Path::new("/c.toml")).expect("parses");
        Config::resolve(raw, paths).expect("valid")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn contexts_follow_the_config_scope_unless_one_is_asked_for() {
        let all = names(&["dev", "prod", "kind"]);
        let none = select(&all, None, None);
        assert_eq!(none.check, all);
        assert!(none.out_of_scope.is_empty());

        let c = cfg("ignore_contexts = [\"prod\"]");
        let s = select(&all, Some(&c), None);
        assert_eq!(s.check, names(&["dev", "kind"]));
        assert_eq!(s.out_of_scope, [("prod".to_string(), "ignore_contexts")]);

        let c = cfg("contexts = [\"dev\"]");
        let s = select(&all, Some(&c), None);
        assert_eq!(s.check, names(&["dev"]));
        assert_eq!(s.out_of_scope.len(), 2);

        let s = select(&all, Some(&c), Some("prod"));
        assert_eq!(s.check, names(&["prod"]));
        assert_eq!(s.out_of_scope, [("prod".to_string(), "contexts")]);
        let s = select(&all, Some(&c), Some("missing"));
        assert_eq!(s.check, names(&["missing"]), "reported as not found later");
    }

    #[test]
    fn namespaces_come_from_the_flag_the_config_or_the_context() {
        assert_eq!(namespaces(Some("x"), None, "team"), names(&["x"]));
        assert_eq!(namespaces(None, None, "team"), names(&["team"]));
        let c = cfg("namespaces = [\"a\", \"b\"]\nignore_namespaces = [\"b\"]");
        assert_eq!(namespaces(None, Some(&c), "team"), names(&["a"]));
        let c = cfg("ignore_namespaces = [\"team\"]");
        assert!(namespaces(None, Some(&c), "team").is_empty());
    }

    fn answers(denied: &[&str], failed: &[&str]) -> Vec<(&'static Permission, Answer)> {
        NEEDED_PERMISSIONS
            .iter()
            .map(|p| {
                let key = format!("{} {}", p.verb, p.resource);
                let a = if failed.contains(&key.as_str()) {
                    Err("connection reset".to_string())
                } else {
                    Ok(AccessAnswer {
                        allowed: !denied.contains(&key.as_str()),
                        reason: String::new(),
                    })
                };
                (p, a)
            })
            .collect()
    }

    #[test]
    fn all_granted_is_one_ok_line() {
        let c = permissions_line("dev", "team", &answers(&[], &[]));
        assert_eq!(c.status, Status::Ok);
        assert_eq!(
            c.line(),
            "ok    permissions dev: all 13 permissions the agent needs in namespace team (deployments.apps, pods, services)"
        );
    }

    #[test]
    fn a_denial_names_the_verb_the_resource_and_what_it_is_for() {
        let c = permissions_line(
            "dev",
            "team",
            &answers(&["patch deployments", "delete pods"], &["get services"]),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.message.starts_with(
                "in namespace team the agent may not patch deployments.apps (to scale the original back), delete pods (to delete the proxy pod): "
            ),
            "{}",
            c.message
        );
        assert!(
            c.message
                .contains("1 of 13 could not be asked: connection reset"),
            "{}",
            c.message
        );
    }

    #[test]
    fn reviews_that_could_not_be_asked_are_a_warning() {
        let c = permissions_line("dev", "team", &answers(&[], &["get pods"]));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("could not be asked"), "{}", c.message);
    }

    #[test]
    fn causes_are_joined_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "client error (Connect)",
            Some(Box::new(E(
                "tcp connect error",
                Some(Box::new(E("tcp connect error", None))),
            ))),
        );
        assert_eq!(with_causes(&e), "client error (Connect): tcp connect error");
    }
}
