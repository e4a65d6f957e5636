//! Which Telepresence 0.x session id belongs to a process, decided only from evidence that
//! belongs to that process alone.
//!
//! 0.x writes its id to `/tmp/tel-XXXXXXXX/session_id.txt` within its first second, but
//! nothing in that dir names the process, and its `telepresence.log` is shared by every
//! session started from one directory (each truncates it). So a `tel-*` dir is only a
//! *candidate*; it becomes the session's when one of these proves it:
//! - **a child of the process names it**: the synchronous `kubectl` calls and the helpers
//!   are the process's own children (`kubectl ... wait ... pod/<name[:17]>-<id>`,
//!   `get pod -o json --selector=telepresence=<id>`, `delete deployment <name[:17]>-<id>`,
//!   `logs -f <pod>`, `port-forward <pod>`, `sshfs ... /tmp/tel-XXXX/fs`): a child's
//!   command line holds the id, the dir, or the name of a proxy labelled with the id;
//! - **a proxy that only this command line makes**: labelled `telepresence=<id>` and named
//!   as this process's own arguments say (a swap's `<deployment[:17]>-<id>` whose labels the
//!   original's selector matches, so that `checkout-service-backend` and
//!   `checkout-service-frontend` are told apart; a named `--new-deployment`; the default
//!   `telepresence-<time>-<pid>`, which carries the pid).
//!
//! # Guarantees
//! - Never a guess: no evidence means [`IdPick::Unproven`], evidence for two candidates
//!   [`IdPick::Ambiguous`]; the caller waits for more in both cases.
//! - Pure: callers pass in what they read from `/proc`, the file system and the cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Mode, swap_proxy_name};

/// A `tel-*` dir that could be the session's: written after the process started, owned by
/// its user, not claimed by another session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The id in its `session_id.txt`.
    pub id: String,
    /// The dir.
    pub dir: PathBuf,
}

/// An object in the session's namespace labelled `telepresence=<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Its name.
    pub name: String,
    /// The value of its `telepresence` label.
    pub id: String,
    /// The labels its pods carry: a Pod's own, a Deployment's pod template's.
    pub pod_labels: BTreeMap<String, String>,
}

/// What is known about the process, to weigh the candidates against.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The process's pid (the default `--new-deployment` name ends with it).
    pub pid: u32,
    /// What its command line asks for.
    pub mode: &'a Mode,
    /// The original Deployment's `matchLabels` for a swap; empty when unknown.
    pub selector: &'a BTreeMap<String, String>,
    /// The command lines of the process's children (of the same user).
    pub children: &'a [Vec<String>],
    /// Objects in the session's namespace labelled with some `telepresence` id.
    pub objects: &'a [Labelled],
}

/// The outcome of weighing the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPick {
    /// Exactly one candidate is proven the session's.
    Proven {
        /// The session id.
        id: String,
        /// What proved it, for the journal.
        because: String,
    },
    /// Several candidates have evidence: wait for more rather than pick one.
    Ambiguous(Vec<String>),
    /// No candidate has evidence yet.
    Unproven,
}

/// Flags whose value is not a pod name (so a context or container named like a proxy does
/// not count as naming it).
const NOT_A_POD: &[&str] = &["--context", "--namespace", "-n", "--container", "-c"];

/// Decides the session's id among `candidates` from `evidence`; see the module doc. A
/// child's word counts first: only when no candidate is named by a child do the proxies
/// decide (a proxy left by an earlier, crashed session of the same command line looks just
/// like this one's).
pub fn pick(candidates: &[Candidate], evidence: &Evidence<'_>) -> IdPick {
    let by_children: Vec<(&Candidate, String)> = candidates
        .iter()
        .filter_map(|c| child_names(c, evidence).map(|why| (c, why)))
        .collect();
    let proven = if by_children.is_empty() {
        candidates
            .iter()
            .filter_map(|c| own_proxy(c, evidence).map(|why| (c, why)))
            .collect()
    } else {
        by_children
    };
    match proven.as_slice() {
        [] => IdPick::Unproven,
        [(c, why)] => IdPick::Proven {
            id: c.id.clone(),
            because: why.clone(),
        },
        many => IdPick::Ambiguous(many.iter().map(|(c, _)| c.id.clone()).collect()),
    }
}

/// Whether a child of the process names the candidate: its id, its dir, or a proxy
/// labelled with its id.
fn child_names(c: &Candidate, ev: &Evidence<'_>) -> Option<String> {
    let dir = c.dir.to_string_lossy();
    let proxies: Vec<&str> = ev
        .objects
        .iter()
        .filter(|o| o.id == c.id)
        .map(|o| o.name.as_str())
        .collect();
    for argv in ev.children {
        let program = argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or_default();
        if argv.iter().any(|a| a.contains(&c.id)) {
            return Some(format!("its child {program} names the id"));
        }
        if argv.iter().any(|a| {
            a.as_str() == dir
                || a.strip_prefix(dir.as_ref())
                    .is_some_and(|r| r.starts_with('/'))
        }) {
            return Some(format!("its child {program} names {dir}"));
        }
        let named = argv.iter().enumerate().find_map(|(i, a)| {
            let after_flag = i > 0 && NOT_A_POD.contains(&argv[i - 1].as_str());
            let name = a
                .strip_prefix("pod/")
                .or_else(|| a.strip_prefix("pods/"))
                .unwrap_or(a);
            (!after_flag && proxies.contains(&name)).then_some(name)
        });
        if let Some(name) = named {
            return Some(format!(
                "its child {program} names {name}, labelled telepresence={}",
                c.id
            ));
        }
    }
    None
}

/// Whether the cluster holds a proxy with the candidate's id that only this process's own
/// command line makes.
fn own_proxy(c: &Candidate, ev: &Evidence<'_>) -> Option<String> {
    let mine = |o: &&Labelled| -> bool {
        match ev.mode {
            Mode::Swap { deployment, .. } => {
                o.name == swap_proxy_name(deployment, &c.id)
                    && ev
                        .selector
                        .iter()
                        .all(|(k, v)| o.pod_labels.get(k) == Some(v))
            }
            Mode::NewDeployment { name: Some(n) } => o.name == *n,
            Mode::NewDeployment { name: None } => {
                o.name.starts_with("telepresence-") && o.name.ends_with(&format!("-{}", ev.pid))
            }
            Mode::ExistingDeployment { .. } => false,
        }
    };
    ev.objects
        .iter()
        .filter(|o| o.id == c.id)
        .find(mine)
        .map(|o| {
            format!(
                "proxy {} is labelled telepresence={} and named as its command line says",
                o.name, c.id
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn cand(id: &str) -> Candidate {
        Candidate {
            id: id.to_string(),
            dir: PathBuf::from(format!("/tmp/tel-{}", &id[..8])),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn proxy(name: &str, id: &str, app: &str) -> Labelled {
        Labelled {
            name: name.to_string(),
            id: id.to_string(),
            pod_labels: labels(&[("app", app), ("telepresence", id)]),
        }
    }

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn swap(deployment: &str) -> Mode {
        Mode::Swap {
            deployment: deployment.to_string(),
            container: None,
        }
    }

    /// Two swaps started together from one directory, of deployments sharing their first
    /// 17 characters: `checkout-service-backend` and `checkout-service-frontend`.
    #[test]
    fn twins_are_told_apart_by_the_originals_selector() {
        let backend = swap("checkout-service-backend");
        let selector = labels(&[("app", "checkout-service-backend")]);
        let objects = [
            proxy(
                &format!("checkout-service--{A}"),
                A,
                "checkout-service-frontend",
            ),
            proxy(
                &format!("checkout-service--{B}"),
                B,
                "checkout-service-backend",
            ),
        ];
        let ev = Evidence {
            pid: 100,
            mode: &backend,
            selector: &selector,
            children: &[],
            objects: &objects,
        };
        assert_eq!(
            pick(&[cand(A), cand(B)], &ev),
            IdPick::Proven {
                id: B.to_string(),
                because: format!(
                    "proxy checkout-service--{B} is labelled telepresence={B} and named as its command line says"
                ),
            }
        );
        // Only the frontend's proxy exists yet: nothing is the backend's.
        let ev = Evidence {
            objects: &objects[..1],
            ..ev
        };
        assert_eq!(pick(&[cand(A), cand(B)], &ev), IdPick::Unproven);
        // Without a selector (the original was not found) the name alone fits both.
        let none = BTreeMap::new();
        let ev = Evidence {
            selector: &none,
            objects: &objects,
            ..ev
        };
        assert_eq!(
            pick(&[cand(A), cand(B)], &ev),
            IdPick::Ambiguous(vec![A.to_string(), B.to_string()])
        );
    }

    #[test]
    fn a_candidate_alone_is_not_evidence() {
        let mode = swap("app");
        let sel = labels(&[("app", "app")]);
        let ev = Evidence {
            pid: 7,
            mode: &mode,
            selector: &sel,
            children: &[argv(
                "kubectl --context c --namespace n get deploy app -o json",
            )],
            objects: &[],
        };
        assert_eq!(pick(&[cand(A)], &ev), IdPick::Unproven);
        assert_eq!(pick(&[], &ev), IdPick::Unproven);
    }

    #[test]
    fn children_prove_the_id() {
        let mode = swap("app");
        let sel = labels(&[("app", "app")]);
        let cases: Vec<(String, &str)> = vec![
            (
                format!(
                    "kubectl --context c --namespace n wait --for=condition=ready --timeout=60s pod/app-{B}"
                ),
                B,
            ),
            (
                format!(
                    "kubectl --context c --namespace n get pod -o json --selector=telepresence={A}"
                ),
                A,
            ),
            (
                format!(
                    "kubectl --context c --namespace n delete deployment app-{B} --ignore-not-found"
                ),
                B,
            ),
            (
                "sshfs -p 4000 -F /dev/null telepresence@127.0.0.1:/ /tmp/tel-aaaaaaaa/fs"
                    .to_string(),
                A,
            ),
        ];
        for (line, want) in cases {
            let children = [argv(&line)];
            let ev = Evidence {
                pid: 7,
                mode: &mode,
                selector: &sel,
                children: &children,
                objects: &[],
            };
            match pick(&[cand(A), cand(B)], &ev) {
                IdPick::Proven { id, .. } => assert_eq!(id, want, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        // A dir whose name only starts like the candidate's is not it.
        let children = [argv("sshfs telepresence@127.0.0.1:/ /tmp/tel-aaaaaaaab/fs")];
        let ev = Evidence {
            pid: 7,
            mode: &mode,
            selector: &sel,
            children: &children,
            objects: &[],
        };
        assert_eq!(pick(&[cand(A)], &ev), IdPick::Unproven);
    }

    #[test]
    fn a_child_outweighs_a_proxy_left_by_an_earlier_session() {
        // An earlier session of the same swap crashed unrepaired: its proxy is still there,
        // labelled with its id, and named as this command line would name it.
        let mode = swap("app");
        let sel = labels(&[("app", "app")]);
        let objects = [
            proxy(&format!("app-{A}"), A, "app"),
            proxy(&format!("app-{B}"), B, "app"),
        ];
        let children = [argv(&format!(
            "kubectl --context c --namespace n wait --for=condition=ready --timeout=60s pod/app-{B}"
        ))];
        let ev = Evidence {
            pid: 7,
            mode: &mode,
            selector: &sel,
            children: &children,
            objects: &objects,
        };
        assert!(matches!(pick(&[cand(A), cand(B)], &ev), IdPick::Proven { id, .. } if id == B));
        // Without the child, the two proxies fit alike: wait.
        let ev = Evidence {
            children: &[],
            ..ev
        };
        assert_eq!(
            pick(&[cand(A), cand(B)], &ev),
            IdPick::Ambiguous(vec![A.to_string(), B.to_string()])
        );
    }

    #[test]
    fn a_child_naming_a_user_named_proxy_proves_its_label() {
        // `--new-deployment dev` in 0.106+: the id is in no command line; the pod is.
        let mode = Mode::NewDeployment {
            name: Some("dev".to_string()),
        };
        let none = BTreeMap::new();
        let objects = [proxy("dev", A, "x"), proxy("other", B, "y")];
        let children = [argv(
            "kubectl --context c --namespace n logs -f dev --container telepresence --tail=10",
        )];
        let ev = Evidence {
            pid: 7,
            mode: &mode,
            selector: &none,
            children: &children,
            objects: &objects,
        };
        assert!(matches!(pick(&[cand(A), cand(B)], &ev), IdPick::Proven { id, .. } if id == A));
        // A context that happens to share the proxy's name names no pod.
        let children = [argv("kubectl --context other --namespace n get pods")];
        let mode = Mode::ExistingDeployment {
            name: "x".to_string(),
        };
        let ev = Evidence {
            mode: &mode,
            children: &children,
            ..ev
        };
        assert_eq!(pick(&[cand(A), cand(B)], &ev), IdPick::Unproven);
    }

    #[test]
    fn new_deployments_are_proven_by_their_name() {
        let none = BTreeMap::new();
        let objects = [
            proxy("telepresence-1700000000-123456-4242", A, "x"),
            proxy("telepresence-1700000000-654321-4243", B, "x"),
            proxy("named", B, "x"),
        ];
        let default = Mode::NewDeployment { name: None };
        let ev = Evidence {
            pid: 4243,
            mode: &default,
            selector: &none,
            children: &[],
            objects: &objects,
        };
        assert!(matches!(pick(&[cand(A), cand(B)], &ev), IdPick::Proven { id, .. } if id == B));
        let named = Mode::NewDeployment {
            name: Some("named".to_string()),
        };
        let ev = Evidence {
            mode: &named,
            pid: 1,
            ..ev
        };
        assert!(matches!(pick(&[cand(A), cand(B)], &ev), IdPick::Proven { id, .. } if id == B));
        // A proxy labelled with another id than its candidate's proves nothing.
        let objects = [proxy("named", "cccccccccccccccccccccccccccccccc", "x")];
        let ev = Evidence {
            objects: &objects,
            ..ev
        };
        assert_eq!(pick(&[cand(A), cand(B)], &ev), IdPick::Unproven);
    }
}
