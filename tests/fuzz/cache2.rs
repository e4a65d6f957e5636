//! Telepresence 2's session cache and daemon info (`telepolice_agent::telepresence2`): a
//! file written from known facts gives exactly those facts back; any other input (mutated,
//! or bytes at random) parses without a panic, and a session it gives has an id written in
//! it.

use telepolice_agent::telepresence2::{
    Scope, daemon_id, parse_daemon_info, parse_saved_session, safe_name,
};

use super::{Bytes, Rng, run};

const CASES: u64 = 2_000;

/// A JSON string of `text`, as Go's encoding/json writes it (close enough: serde's escaping
/// is valid JSON, which is all the reader relies on).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Known facts, and the file 2.x would write for them (either shape).
fn written(rng: &mut Rng) -> (String, String, String, bool, Bytes) {
    let (context, namespace, id) = (rng.text(40), rng.name(), rng.session_id());
    let daemon_shape = rng.one_in(2);
    let file = if daemon_shape {
        format!(
            r#"{{"kubeContext":{},"namespace":{},"session":{{"session_id":{},"cluster_id":{}}}}}"#,
            quoted(&context),
            quoted(&namespace),
            quoted(&id),
            quoted(&rng.name())
        )
    } else {
        format!(
            r#"{{"Host":{},"session":{{"session_id":{}}}}}"#,
            quoted(&context),
            quoted(&id)
        )
    };
    (
        context,
        namespace,
        id,
        daemon_shape,
        Bytes(file.into_bytes()),
    )
}

#[test]
fn written_caches_give_their_facts_back() {
    run(
        "cache2::written_caches_give_their_facts_back",
        CASES,
        written,
        |(context, namespace, id, daemon_shape, file)| {
            let s = parse_saved_session(&file.0).expect("a written cache parses");
            assert_eq!(&s.session.session_id, id);
            let want = if *daemon_shape {
                Scope::Daemon {
                    context: context.clone(),
                    namespace: namespace.clone(),
                }
            } else {
                Scope::Host(context.clone())
            };
            assert_eq!(s.scope, want);
        },
    );
}

fn mutated(rng: &mut Rng) -> Bytes {
    let (.., mut file) = written(rng);
    rng.mutate(
        &mut file.0,
        &[
            b"\"session\"",
            b"null",
            b"{}",
            b"\\u0000",
            b"\"Host\"",
            b"[",
            b"\"",
        ],
    );
    file
}

#[test]
fn mutated_caches_parse_or_are_refused_without_a_panic() {
    run(
        "cache2::mutated_caches_parse_or_are_refused_without_a_panic",
        CASES,
        mutated,
        |file| {
            if let Ok(s) = parse_saved_session(&file.0) {
                assert!(!s.session.session_id.is_empty(), "a session has an id");
            }
            let _ = parse_daemon_info(&file.0);
        },
    );
}

#[test]
fn daemon_ids_are_safe_file_names() {
    run(
        "cache2::daemon_ids_are_safe_file_names",
        CASES,
        |rng| (rng.text(60), rng.text(30), rng.one_in(3)),
        |(context, namespace, containerized)| {
            let Some(id) = daemon_id(None, context, namespace, *containerized) else {
                assert!(namespace.is_empty(), "only a missing namespace has no id");
                return;
            };
            assert!(
                !id.is_empty() && !id.contains('/') && !id.starts_with('.'),
                "{id:?}"
            );
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
                "{id:?}"
            );
            assert_eq!(safe_name(&id), id, "a safe name stays as it is");
        },
    );
}

/// An `intercept` command line built from known parts: its name comes back, wherever the
/// flags are, and a flag-looking token never becomes the name; any other token list is
/// read without a panic.
#[test]
fn intercept_command_lines_give_their_name_back() {
    use telepolice_agent::telepresence2::intercept::bound_intercept;
    const VALUE: &[&str] = &[
        "--port",
        "-p",
        "--workload",
        "-w",
        "--env-file",
        "--mount",
        "--namespace",
        "-n",
    ];
    const BOOL: &[&str] = &["--replace", "-l", "--detailed-output", "--docker-run"];
    run(
        "cache2::intercept_command_lines_give_their_name_back",
        CASES,
        |rng| {
            // A name never starts with a dash (the CLI would read a flag).
            let name = format!("w{}", rng.name());
            let mut args = vec!["intercept".to_string()];
            let mut flags: Vec<Vec<String>> = Vec::new();
            for _ in 0..rng.below(4) {
                if rng.one_in(2) {
                    let v = rng.pick(VALUE).to_string();
                    if v.starts_with("--") && rng.one_in(3) {
                        flags.push(vec![format!("{v}={}", rng.name())]);
                    } else {
                        flags.push(vec![v, rng.name()]);
                    }
                } else {
                    flags.push(vec![rng.pick(BOOL).to_string()]);
                }
            }
            let at = rng.below(flags.len() + 1);
            for (i, f) in flags.iter().enumerate() {
                if i == at {
                    args.push(name.clone());
                }
                args.extend(f.iter().cloned());
            }
            if at == flags.len() {
                args.push(name.clone());
            }
            args.push("--".to_string());
            args.push(rng.name());
            let noise: Vec<String> = (0..rng.below(6)).map(|_| rng.text(12)).collect();
            (name, args, noise)
        },
        |(name, args, noise)| {
            assert_eq!(bound_intercept(args), Ok(Some(name.clone())), "{args:?}");
            let mut any = vec!["intercept".to_string()];
            any.extend(noise.iter().cloned());
            // A flag never becomes the name (a lone `-` is a positional argument to the
            // CLI's flag parser, so it can be).
            if let Ok(Some(n)) = bound_intercept(&any) {
                assert!(n == "-" || !n.starts_with('-'), "{any:?} -> {n}");
            }
        },
    );
}
