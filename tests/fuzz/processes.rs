//! Other processes' command lines, which anyone on the machine can shape: `classify` and
//! `program_index` on generated interpreter command lines and file heads, and the helper
//! matching of `helpers::select` and `container_matches` on generated processes and
//! container names.

use std::path::PathBuf;

use super::{Bytes, Rng, run};
use telepolice_agent::effects::helpers::{container_matches, select};
use telepolice_agent::platform::{ProcessId, ProcessInfo};
use telepolice_agent::telepresence::{DEFAULT_NAMES, Flavor, classify, program_index};

/// Cases per target in `cargo test`.
const CASES: u64 = 3_000;

#[test]
fn classify_command_lines() {
    run(
        "processes::classify_command_lines",
        CASES,
        launch,
        |l: &Launch| {
            let names: Vec<&str> = l.names.iter().map(String::as_str).collect();
            let head = l.head.as_ref().map(|h| h.0.as_slice());
            let got = classify(&l.argv, head, &names);
            let index = program_index(&l.argv, &names);
            assert_eq!(
                got.map(|(_, i)| i),
                index,
                "classify and program_index disagree"
            );
            if let Some((flavor, i)) = got {
                let program = &l.argv[i];
                assert!(
                    names.iter().any(|n| program.ends_with(n)),
                    "{program:?} is not one of {names:?}"
                );
                if i > 0 {
                    // Through an interpreter: always 0.x, whatever the file's head says.
                    assert_eq!(flavor, Flavor::Legacy);
                    assert_eq!(classify(&l.argv, None, &names), got);
                }
            }
        },
    );
}

#[test]
fn helpers_are_only_what_names_the_session() {
    run(
        "processes::helpers_are_only",
        CASES,
        helpers,
        |h: &Helpers| {
            let found = select(
                &h.candidates,
                h.uid,
                h.min_start,
                Some((&h.context, &h.namespace)),
                h.pod.as_deref(),
                Some(&h.session_id),
                h.tmp_dir.as_deref(),
            );
            let mut candidates = h.candidates.iter();
            for helper in &found {
                // In the candidates' order, each at most once.
                assert!(candidates.any(|c| *c == helper.info), "{helper:?}");
                let p = &helper.info;
                assert!(p.uid == h.uid && p.id.start_ticks >= h.min_start, "{p:?}");
                let argv = &p.argv;
                let pod = h.pod.as_ref().is_some_and(|pod| argv.contains(pod));
                let id = argv.iter().any(|a| a.contains(&h.session_id));
                let tmp = h.tmp_dir.as_ref().is_some_and(|t| {
                    let t = t.to_string_lossy();
                    argv.iter().any(|a| a.starts_with(t.as_ref()))
                });
                let ssh = argv.iter().any(|a| a.starts_with("telepresence@127.0.0.1"));
                assert!(
                    pod || id || tmp || ssh,
                    "{p:?} names nothing of the session"
                );
            }
        },
    );
}

#[test]
fn container_names() {
    run(
        "processes::container_names",
        CASES,
        container,
        |c: &Container| {
            let matches = container_matches(&c.name, c.pid, c.start_secs);
            if let Some(want) = c.want {
                assert_eq!(matches, want);
            }
            if matches {
                let name = c.name.trim_start_matches('/');
                assert!(name.starts_with("telepresence-"), "{name:?}");
                assert!(name.ends_with(&format!("-{}", c.pid)), "{name:?}");
            }
        },
    );
}

// ------------------------------------------------------------------------- generators

/// A command line that may run Telepresence, the head of the file it names, and the
/// program names to recognise.
#[derive(Debug)]
struct Launch {
    argv: Vec<String>,
    head: Option<Bytes>,
    names: Vec<String>,
}

const LAUNCHERS: &[&str] = &[
    "python3",
    "/usr/bin/python3.11",
    "python",
    "Python",
    "python3.7m",
    "python3.12d",
    "pythonw",
    "python3x",
    "env",
    "/usr/bin/env",
    "telepresence",
    "/usr/local/bin/telepresence",
    "bash",
    "/bin/sh",
    "/home/u/.pyenv/shims/python3",
    "",
    "/",
];

const INTERPRETER_OPTIONS: &[&str] = &[
    "-I",
    "-S",
    "-u",
    "-b",
    "-W",
    "ignore",
    "-Wignore",
    "-X",
    "dev",
    "-Xdev",
    "-m",
    "-mtelepresence",
    "-ISmtelepresence",
    "-c",
    "print(1)",
    "--check-hash-based-pycs",
    "always",
    "--check-hash-based-pycs=never",
    "--",
    "-",
    "-IS",
    "-é",
    "--help",
    "A=B",
    "-i",
];

const SCRIPTS: &[&str] = &[
    "telepresence",
    "/usr/local/bin/telepresence",
    "./telepresence",
    "telepresence/",
    "/opt/tp/telepresence.py",
    "/usr/bin/python3",
];

fn word(rng: &mut Rng, from: &[&str]) -> String {
    match rng.below(8) {
        0 => rng.text(20),
        1 => super::argv::token(rng),
        _ => rng.pick(from).to_string(),
    }
}

/// Beginnings of program files: native binaries, a zipapp, scripts.
const HEADS: &[&[u8]] = &[
    b"\x7fELF",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"PK",
    b"#!",
    b"#!/usr/bin/env python3\n",
    b"#!/bin/sh\n",
    b"#!python",
];

fn launch(rng: &mut Rng) -> Launch {
    let mut argv = vec![word(rng, LAUNCHERS)];
    for _ in 0..rng.len(4) {
        argv.push(word(rng, LAUNCHERS));
    }
    for _ in 0..rng.len(6) {
        argv.push(word(rng, INTERPRETER_OPTIONS));
    }
    if !rng.one_in(4) {
        argv.push(word(rng, SCRIPTS));
    }
    for _ in 0..rng.len(8) {
        argv.push(super::argv::token(rng));
    }
    if rng.one_in(3) {
        // Only some of the launcher, options and script.
        let from = rng.below(argv.len());
        argv.drain(..from);
    }
    let head = match rng.below(6) {
        0 => None,
        1 => Some(rng.bytes(64)),
        2 => {
            let magic = *rng.pick(HEADS);
            let mut head = magic[..rng.between(0, magic.len())].to_vec();
            head.extend(rng.bytes(16));
            Some(head)
        }
        _ => Some(b"#!/usr/bin/env python3\nPK\x03\x04".to_vec()),
    };
    let names = match rng.below(6) {
        0 => vec![rng.text(8)],
        1 => vec![String::new()],
        2 => vec![
            "telepresence".to_string(),
            "python3".to_string(),
            "env".to_string(),
        ],
        _ => DEFAULT_NAMES.iter().map(|n| n.to_string()).collect(),
    };
    Launch {
        argv,
        head: head.map(Bytes),
        names,
    }
}

/// Processes that may be a session's helpers, and the session they are matched against.
#[derive(Debug)]
struct Helpers {
    candidates: Vec<ProcessInfo>,
    uid: u32,
    min_start: u64,
    context: String,
    namespace: String,
    pod: Option<String>,
    session_id: String,
    tmp_dir: Option<PathBuf>,
}

fn helpers(rng: &mut Rng) -> Helpers {
    let session_id = rng.session_id();
    let pod = rng
        .one_in(4)
        .then(|| format!("app-{session_id}"))
        .or_else(|| (!rng.one_in(3)).then(|| rng.name()));
    let tmp_dir = (!rng.one_in(3)).then(|| PathBuf::from(format!("/tmp/tel-{}", rng.name())));
    let (context, namespace) = (rng.name(), rng.name());
    let uid = 1000;
    let min_start = rng.below(1_000) as u64;
    let pieces = {
        let mut pieces = vec![
            "kubectl".to_string(),
            "/usr/bin/kubectl".to_string(),
            "ssh".to_string(),
            "sshfs".to_string(),
            "port-forward".to_string(),
            "logs".to_string(),
            "-f".to_string(),
            "--context".to_string(),
            context.clone(),
            "--namespace".to_string(),
            namespace.clone(),
            "-p".to_string(),
            "40123".to_string(),
            "40123:8022".to_string(),
            "telepresence@127.0.0.1".to_string(),
            "telepresence@127.0.0.1:/".to_string(),
            format!("{}/fs", session_id.get(..31).unwrap_or_default()),
        ];
        pieces.extend(pod.clone());
        pieces.extend(tmp_dir.as_ref().map(|t| format!("{}/fs", t.display())));
        pieces.push(session_id.clone());
        pieces
    };
    let candidates = (0..rng.len(8))
        .map(|_| {
            let pid = rng.between(1, 100_000) as u32;
            let argv = (0..rng.len(10))
                .map(|_| {
                    if rng.one_in(4) {
                        super::argv::token(rng)
                    } else {
                        rng.pick(&pieces).clone()
                    }
                })
                .collect();
            ProcessInfo {
                id: ProcessId {
                    pid,
                    start_ticks: rng.below(2_000) as u64,
                },
                ppid: 1,
                uid: if rng.one_in(4) { 0 } else { uid },
                session: if rng.one_in(2) { pid } else { 1 },
                tty_nr: 0,
                comm: String::new(),
                argv,
                cwd: None,
                exe: None,
            }
        })
        .collect();
    Helpers {
        candidates,
        uid,
        min_start,
        context,
        namespace,
        pod,
        session_id,
        tmp_dir,
    }
}

/// A Docker container name, and the session it is matched against.
#[derive(Debug)]
struct Container {
    name: String,
    pid: u32,
    start_secs: u64,
    /// Whether it must match, when the generator knows.
    want: Option<bool>,
}

fn container(rng: &mut Rng) -> Container {
    let pid = rng.between(1, 4_000_000) as u32;
    let start_secs = match rng.below(3) {
        0 => rng.next_u64(),
        1 => u64::MAX - rng.below(10) as u64,
        _ => 1_700_000_000 + rng.below(1_000_000) as u64,
    };
    let time = match rng.below(6) {
        0 => u64::MAX.to_string(),
        1 => (u64::MAX - rng.below(10) as u64).to_string(),
        2 => "99999999999999999999999".to_string(),
        3 => rng.text(12),
        _ => format!(
            "{}-{}",
            start_secs
                .wrapping_add(rng.below(20) as u64)
                .wrapping_sub(10),
            rng.below(1_000_000)
        ),
    };
    let tail = if rng.one_in(4) {
        rng.text(8)
    } else {
        pid.to_string()
    };
    let slash = if rng.one_in(2) { "/" } else { "" };
    let name = match rng.below(8) {
        0 => rng.text(40),
        1 => rng.mutate_text(&format!("telepresence-{time}-{tail}"), &["-", "/"]),
        _ => format!("{slash}telepresence-{time}-{tail}"),
    };
    // Telepresence's own name for this session's container: started at most 5 s before the
    // session was seen to start (clock slack), or any time after.
    let canonical = rng.one_in(3).then(|| {
        let secs = start_secs.checked_sub(5)?;
        let t = secs.checked_add(rng.below(1_000) as u64)?;
        let name = format!("{slash}telepresence-{t}-{}-{pid}", rng.below(1_000_000));
        Some(name)
    });
    if let Some(Some(name)) = canonical {
        return Container {
            name,
            pid,
            start_secs,
            want: Some(true),
        };
    }
    Container {
        name,
        pid,
        start_secs,
        want: None,
    }
}
