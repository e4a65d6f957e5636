//! Which cluster a session uses: its kubeconfig files (its own `KUBECONFIG`, relative to its
//! own working directory), its context and namespace, and the API server the context points
//! at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kube::config::{Context, Kubeconfig};

use super::ClusterError;
use crate::session::ClusterBinding;

/// The kubeconfig files a process reads: its `KUBECONFIG` (colon-separated, empty entries
/// ignored), else `$HOME/.kube/config`.
pub fn kubeconfig_paths(env: &HashMap<String, String>, cwd: Option<&Path>) -> Vec<PathBuf> {
    match env.get("KUBECONFIG").filter(|v| !v.is_empty()) {
        // Relative entries are relative to the session's working directory, not ours.
        Some(v) => std::env::split_paths(v)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| match cwd {
                Some(c) if p.is_relative() => c.join(p),
                _ => p,
            })
            .collect(),
        None => env
            .get("HOME")
            .map(|h| vec![Path::new(h).join(".kube").join("config")])
            .unwrap_or_default(),
    }
}

/// The kubeconfig files `paths` merged as kubectl merges them (the first file to set a
/// value wins); missing files are skipped.
///
/// # Errors
/// [`ClusterError::NoKubeconfig`] when none of them exists, [`ClusterError::BadKubeconfig`]
/// naming the file that does not parse or merge.
pub fn load_merged(paths: &[PathBuf]) -> Result<Kubeconfig, ClusterError> {
    let mut merged: Option<Kubeconfig> = None;
    let mut why = String::from("none exists");
    for p in paths {
        if !p.exists() {
            continue;
        }
        let kc = Kubeconfig::read_from(p).map_err(|source| ClusterError::BadKubeconfig {
            path: p.clone(),
            source,
        })?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(|e| {
                why = e.to_string();
                ClusterError::BadKubeconfig {
                    path: p.clone(),
                    source: e,
                }
            })?,
        });
    }
    merged.ok_or(ClusterError::NoKubeconfig {
        paths: paths.to_vec(),
        why,
    })
}

/// Resolves which cluster a session talks to: its context (the flag, else the current
/// context), namespace (the flag, else the context's, else `default`) and API server URL.
pub fn resolve_binding(
    env: &HashMap<String, String>,
    cwd: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<ClusterBinding, ClusterError> {
    let paths = kubeconfig_paths(env, cwd);
    let kc = load_merged(&paths)?;
    let context = match context {
        Some(c) => c.to_string(),
        None => kc
            .current_context
            .clone()
            .ok_or_else(|| ClusterError::NoCurrentContext {
                paths: paths.clone(),
            })?,
    };
    let (ctx, server) =
        context_and_server(&kc, &context).ok_or_else(|| ClusterError::NoContext {
            context: context.clone(),
            paths: paths.clone(),
        })?;
    let namespace = namespace
        .map(str::to_string)
        .or(ctx.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let exec_env = ["PATH", "HOME"]
        .iter()
        .filter_map(|k| env.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    Ok(ClusterBinding {
        kubeconfig: paths,
        context,
        namespace,
        server,
        exec_env,
    })
}

/// The API server `context` points at in `kc`.
pub(super) fn resolve_server(kc: &Kubeconfig, context: &str) -> Result<String, ClusterError> {
    context_and_server(kc, context)
        .map(|(_, server)| server)
        .ok_or_else(|| ClusterError::NoContext {
            context: context.to_string(),
            paths: Vec::new(),
        })
}

/// The context named `context` in `kc`, and the API server its cluster names (empty when
/// the cluster or its server is missing).
/// The binding of the kubeconfig context that points at `server` (the current context
/// first, then the others in order), for a session known only by its API server's URL
/// (Telepresence 2.6.7-2.15's `sessions.json`). `None` when no context does.
pub fn binding_for_server(
    env: &HashMap<String, String>,
    cwd: Option<&Path>,
    server: &str,
) -> Option<ClusterBinding> {
    let kc = load_merged(&kubeconfig_paths(env, cwd)).ok()?;
    let same = |s: &str| s.trim_end_matches('/') == server.trim_end_matches('/');
    let mut names = kc
        .current_context
        .iter()
        .chain(kc.contexts.iter().map(|c| &c.name));
    let context = names
        .find(|n| context_and_server(&kc, n).is_some_and(|(_, s)| same(&s)))?
        .clone();
    resolve_binding(env, cwd, Some(&context), None).ok()
}

fn context_and_server(kc: &Kubeconfig, context: &str) -> Option<(Context, String)> {
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.clone())?;
    let server = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    Some((ctx, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ONE: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: c1, user: u, namespace: team}
- name: other
  context: {cluster: c2, user: u}
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443"}
- name: c2
  cluster: {server: "https://127.0.0.2:6443"}
users:
- name: u
  user: {token: t}
"#;

    const TWO: &str = r#"
apiVersion: v1
kind: Config
current-context: other
contexts:
- name: dev
  context: {cluster: c2, user: u}
clusters: []
users: []
"#;

    #[test]
    fn the_kubeconfig_files_are_the_sessions_own() {
        let cwd = Path::new("/work/project");
        assert_eq!(
            kubeconfig_paths(
                &env(&[("KUBECONFIG", "a.yaml::/etc/b.yaml"), ("HOME", "/h")]),
                Some(cwd)
            ),
            [cwd.join("a.yaml"), PathBuf::from("/etc/b.yaml")],
            "relative to its working directory, empty entries skipped"
        );
        assert_eq!(
            kubeconfig_paths(&env(&[("KUBECONFIG", ""), ("HOME", "/h")]), Some(cwd)),
            [PathBuf::from("/h/.kube/config")],
            "an empty KUBECONFIG is no KUBECONFIG"
        );
        assert!(kubeconfig_paths(&env(&[]), None).is_empty());
    }

    #[test]
    fn a_binding_takes_the_flags_then_the_kubeconfig_and_the_first_file_wins() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("one"), ONE).expect("written");
        std::fs::write(dir.path().join("two"), TWO).expect("written");
        let e = env(&[
            ("KUBECONFIG", "one:two:missing"),
            ("PATH", "/p"),
            ("HOME", "/h"),
        ]);
        let b = resolve_binding(&e, Some(dir.path()), None, None).expect("binds");
        assert_eq!(
            (b.context.as_str(), b.namespace.as_str(), b.server.as_str()),
            ("dev", "team", "https://127.0.0.1:6443"),
            "the first file's current context and its context's namespace"
        );
        assert_eq!(b.kubeconfig.len(), 3);
        assert_eq!(
            b.exec_env,
            [("PATH".into(), "/p".into()), ("HOME".into(), "/h".into())]
        );
        let b = resolve_binding(&e, Some(dir.path()), Some("other"), Some("ns")).expect("binds");
        assert_eq!(
            (b.context.as_str(), b.namespace.as_str(), b.server.as_str()),
            ("other", "ns", "https://127.0.0.2:6443"),
            "the flags win"
        );
        let kc = load_merged(&b.kubeconfig).expect("merges");
        assert_eq!(
            resolve_server(&kc, "other").expect("known"),
            "https://127.0.0.2:6443"
        );
    }

    #[test]
    fn what_cannot_bind_says_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("one"), ONE).expect("written");
        std::fs::write(dir.path().join("bad"), "{not yaml: [").expect("written");
        std::fs::write(
            dir.path().join("nocurrent"),
            TWO.replace("current-context: other\n", ""),
        )
        .expect("written");
        let at = |kubeconfig: &str| env(&[("KUBECONFIG", kubeconfig)]);
        let cwd = Some(dir.path());
        let err = |e: &HashMap<String, String>, ctx| {
            resolve_binding(e, cwd, ctx, None).expect_err("refused")
        };
        assert!(matches!(
            err(&at("missing"), None),
            ClusterError::NoKubeconfig { .. }
        ));
        assert!(matches!(
            err(&at("bad"), None),
            ClusterError::BadKubeconfig { .. }
        ));
        assert!(matches!(
            err(&at("one"), Some("gone")),
            ClusterError::NoContext { .. }
        ));
        assert!(matches!(
            err(&at("nocurrent"), None),
            ClusterError::NoCurrentContext { .. }
        ));
        let said = err(&at("one"), Some("gone")).to_string();
        assert!(said.contains("kube context \"gone\" is not in"), "{said}");
    }

    #[test]
    fn a_session_known_by_its_api_server_is_bound_to_the_context_that_points_there() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("config");
        std::fs::write(&file, ONE).expect("written");
        let e = env(&[("KUBECONFIG", file.to_str().expect("utf-8"))]);
        let b = binding_for_server(&e, None, "https://127.0.0.2:6443/").expect("a context");
        assert_eq!(
            (b.context.as_str(), b.namespace.as_str()),
            ("other", "default")
        );
        let b = binding_for_server(&e, None, "https://127.0.0.1:6443").expect("a context");
        assert_eq!((b.context.as_str(), b.namespace.as_str()), ("dev", "team"));
        assert!(binding_for_server(&e, None, "https://10.0.0.1:6443").is_none());
    }
}
