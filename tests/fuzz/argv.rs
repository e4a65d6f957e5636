//! `parse_legacy_args` on generated command lines: soups of real and near-real flags,
//! mutated real command lines, random bytes, and command lines written from a known
//! intent in every spelling argparse accepts, which must parse back to that intent.

use std::collections::VecDeque;

use super::{Rng, run};
use telepolice_agent::telepresence::{Invocation, Mode, known_flags, parse_legacy_args};

/// Cases per target in `cargo test`.
const CASES: u64 = 2_000;

#[test]
fn token_soup() {
    run("argv::token_soup", CASES, soup, |argv| check_any(argv));
}

#[test]
fn mutated_command_lines() {
    run("argv::mutated_command_lines", CASES, mutated, |argv| {
        check_any(argv)
    });
}

#[test]
fn random_bytes() {
    run("argv::random_bytes", CASES, raw, |argv| check_any(argv));
}

#[test]
fn intent_round_trip() {
    run("argv::intent_round_trip", CASES, intent, |w: &Written| {
        let got = parse_legacy_args(&w.argv);
        assert_eq!(got.as_ref(), Ok(&w.want), "{:?}", w.argv);
        check_any(&w.argv);
    });
}

// ------------------------------------------------------------------------- generators

fn longs() -> Vec<&'static str> {
    known_flags().map(|(long, _)| long).collect()
}

fn shorts() -> Vec<char> {
    known_flags().filter_map(|(_, short)| short).collect()
}

/// Words that sit on the edges of what argparse takes as a value, a port or a flag.
const EDGE_WORDS: &[&str] = &[
    "--",
    "-",
    "---",
    "--=",
    "-=",
    "--=x",
    "-.",
    "-1",
    "-1.5",
    "-.5",
    "-5.",
    "-0x1",
    "--run",
    "--docker-run",
    "--run-shell",
    "0",
    "1",
    "+80",
    " 80 ",
    "65535",
    "65536",
    "99999999999999999999999",
    "8080:80",
    "1:65535",
    ":",
    "80:",
    ":80",
    "a:b:c",
    "app:",
    ":web",
    "=",
    "==",
    "",
];

/// A value: a name, a `name:container`, a port, a path, nothing, text, or something long.
pub(super) fn value(rng: &mut Rng) -> String {
    match rng.below(12) {
        0..=3 => rng.name(),
        4 => format!("{}:{}", rng.name(), rng.name()),
        5 => String::new(),
        6 => rng.text(40),
        7 => rng.pick(EDGE_WORDS).to_string(),
        8 => rng.between(0, 70_000).to_string(),
        9 => rng
            .pick(&["a", "é", "-", "=", ":", "🦀"])
            .repeat(rng.between(1_000, 20_000)),
        10 => format!("/tmp/{}.log", rng.name()),
        _ => rng
            .pick(&["vpn-tcp", "inject-tcp", "container"])
            .to_string(),
    }
}

/// A known long flag, sometimes cut to a prefix (which may be ambiguous).
fn flag_name(rng: &mut Rng, longs: &[&str]) -> String {
    let long = rng.pick(longs);
    if rng.one_in(3) {
        long[..rng.between(1, long.len())].to_string()
    } else {
        long.to_string()
    }
}

/// One word of a command line, flag or value, in any of the shapes argparse knows.
pub(super) fn token(rng: &mut Rng) -> String {
    let longs = longs();
    let shorts = shorts();
    let short = |rng: &mut Rng| {
        if rng.one_in(4) {
            rng.char()
        } else {
            *rng.pick(&shorts)
        }
    };
    match rng.below(14) {
        0..=3 => format!("--{}", flag_name(rng, &longs)),
        4 => format!("--{}={}", flag_name(rng, &longs), value(rng)),
        5 => format!("-{}", short(rng)),
        6 => format!("-{}{}", short(rng), value(rng)),
        7 => format!("-{}={}", short(rng), value(rng)),
        8 => rng.pick(EDGE_WORDS).to_string(),
        9 => format!("--x-{}", rng.name()),
        10 => format!("--x-{}={}", rng.name(), value(rng)),
        _ => value(rng),
    }
}

fn soup(rng: &mut Rng) -> Vec<String> {
    (0..rng.len(16)).map(|_| token(rng)).collect()
}

/// Real command lines, from the parser's own tests and the stand-in's sessions.
const CORPUS: &[&str] = &[
    "--context kind-dev --namespace=shop --swap-deployment api:web --expose 8080 \
     --expose 9000:90 --method vpn-tcp --logfile /tmp/tp.log --also-proxy 10.0.0.1 \
     --verbose --run python3 -m http.server",
    "--new-deployment try-it --run-shell",
    "-s app:web -m inject-tcp --docker-run --rm -it alpine sh",
    "--deployment=dev-proxy:web --expose=+80 --future-flag value --",
    "-n=x --mount=false --env-json env.json --local-cluster --run-shell",
    "--swap app --context=c --namespace n --logfile - --run bash -c true",
];

fn mutated(rng: &mut Rng) -> Vec<String> {
    let mut argv: Vec<String> = rng
        .pick(CORPUS)
        .split_whitespace()
        .map(String::from)
        .collect();
    for _ in 0..rng.between(1, 4) {
        let len = argv.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if at < len => {
                argv.remove(at);
            }
            1 if at < len => {
                let copy = argv[at].clone();
                argv.insert(rng.below(len + 1), copy);
            }
            2 if at < len => {
                let other = rng.below(len);
                argv.swap(at, other);
            }
            3 if at < len => argv[at] = rng.mutate_text(&argv[at], &["=", ":", "-", "--"]),
            4 if at + 1 < len => {
                let next = argv.remove(at + 1);
                argv[at] = format!("{}={next}", argv[at]);
            }
            5 if at < len => argv[at] = token(rng),
            _ => argv.insert(at, token(rng)),
        }
    }
    argv
}

fn raw(rng: &mut Rng) -> Vec<String> {
    (0..rng.len(8))
        .map(|_| {
            if rng.one_in(2) {
                String::from_utf8_lossy(&rng.bytes(64)).into_owned()
            } else {
                rng.text(64)
            }
        })
        .collect()
}

/// A command line written from a known intent, and the invocation it means.
#[derive(Debug)]
struct Written {
    argv: Vec<String>,
    want: Invocation,
}

/// An abbreviation of `long` that argparse resolves to it (or `long` itself).
fn abbreviation(rng: &mut Rng, long: &str) -> String {
    if rng.one_in(2) {
        return long.to_string();
    }
    let longs = longs();
    let unique: Vec<usize> = (1..=long.len())
        .filter(|&n| {
            let prefix = &long[..n];
            prefix == long || longs.iter().filter(|l| l.starts_with(prefix)).count() == 1
        })
        .collect();
    long[..*rng.pick(&unique)].to_string()
}

/// `long` (or `short`) with `value`, in one of the spellings that give exactly `value`.
fn spell(rng: &mut Rng, long: &str, short: Option<char>, value: &str) -> Vec<String> {
    // Conservative: a word not starting with `-` is a value to argparse whatever follows.
    let separate = !value.starts_with('-');
    if let Some(s) = short.filter(|_| rng.one_in(3)) {
        let attached = !value.is_empty() && !value.starts_with('=');
        return match rng.below(3) {
            0 if separate => vec![format!("-{s}"), value.to_string()],
            1 if attached => vec![format!("-{s}{value}")],
            _ => vec![format!("-{s}={value}")],
        };
    }
    let name = abbreviation(rng, long);
    if separate && rng.one_in(2) {
        vec![format!("--{name}"), value.to_string()]
    } else {
        vec![format!("--{name}={value}")]
    }
}

/// A value for a flag whose value is kept as written: anything at all.
fn any_value(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => rng.text(30),
        1 => rng.pick(EDGE_WORDS).to_string(),
        _ => value(rng),
    }
}

/// A deployment name: not empty, no `:` (which starts the container).
fn deployment_name(rng: &mut Rng) -> String {
    let name = if rng.one_in(4) {
        rng.text(20).replace(':', "_")
    } else {
        rng.name()
    };
    if name.is_empty() { rng.name() } else { name }
}

/// `PORT` or `PORT:REMOTE` for `(local, remote)`, with the blanks, `+` and leading zeros
/// Python's `int()` allows.
fn spell_port(rng: &mut Rng, (local, remote): (u16, u16)) -> String {
    let one = |rng: &mut Rng, p: u16| {
        let sign = if rng.one_in(5) { "+" } else { "" };
        let zeros = "0".repeat(if rng.one_in(5) { rng.between(1, 3) } else { 0 });
        let before = if rng.one_in(6) { " " } else { "" };
        let after = if rng.one_in(6) { "\t" } else { "" };
        format!("{before}{sign}{zeros}{p}{after}")
    };
    if local == remote && rng.one_in(2) {
        one(rng, local)
    } else {
        let local = one(rng, local);
        format!("{local}:{}", one(rng, remote))
    }
}

/// Occurrences of one flag, in order; the last one is the one that counts.
type Occurrences = VecDeque<Vec<String>>;

/// Up to two earlier occurrences that the last one overrides, then the last one.
fn with_decoys(
    rng: &mut Rng,
    last: Vec<String>,
    mut decoy: impl FnMut(&mut Rng) -> Vec<String>,
) -> Occurrences {
    let mut out: Occurrences = (0..rng.below(3)).map(|_| decoy(rng)).collect();
    out.push_back(last);
    out
}

/// An invocation of every kind, for the journal's records.
pub(super) fn invocation(rng: &mut Rng) -> Invocation {
    intent(rng).want
}

fn intent(rng: &mut Rng) -> Written {
    let mut want = Invocation::default();
    let mut flags: Vec<Occurrences> = Vec::new();
    for (long, short, field) in [
        ("context", None, 0),
        ("namespace", None, 1),
        ("method", Some('m'), 2),
        ("logfile", None, 3),
    ] {
        if rng.one_in(2) {
            continue;
        }
        let value = any_value(rng);
        let last = spell(rng, long, short, &value);
        flags.push(with_decoys(rng, last, |rng| {
            let decoy = any_value(rng);
            spell(rng, long, short, &decoy)
        }));
        let slot = match field {
            0 => &mut want.context,
            1 => &mut want.namespace,
            2 => &mut want.method,
            _ => &mut want.logfile,
        };
        *slot = Some(value);
    }

    // The mode: one kind, perhaps given several times.
    let swap_value = |rng: &mut Rng| {
        let deployment = deployment_name(rng);
        let container = rng.one_in(2).then(|| {
            let c = any_value(rng);
            if c.is_empty() { rng.name() } else { c }
        });
        let written = match &container {
            Some(c) => format!("{deployment}:{c}"),
            None if rng.one_in(3) => format!("{deployment}:"),
            None => deployment.clone(),
        };
        (
            written,
            Mode::Swap {
                deployment,
                container,
            },
        )
    };
    let new_value = |rng: &mut Rng| {
        let name = any_value(rng);
        let mode = Mode::NewDeployment {
            name: (!name.is_empty()).then(|| name.clone()),
        };
        (name, mode)
    };
    let existing_value = |rng: &mut Rng| {
        let name = deployment_name(rng);
        let written = if rng.one_in(3) {
            format!("{name}:{}", any_value(rng))
        } else {
            name.clone()
        };
        (written, Mode::ExistingDeployment { name })
    };
    type ModeValue = fn(&mut Rng) -> (String, Mode);
    let modes: [(&str, char, ModeValue); 3] = [
        ("swap-deployment", 's', swap_value),
        ("new-deployment", 'n', new_value),
        ("deployment", 'd', existing_value),
    ];
    if !rng.one_in(4) {
        let (long, short, make) = *rng.pick(&modes);
        let (written, mode) = make(rng);
        let last = spell(rng, long, Some(short), &written);
        flags.push(with_decoys(rng, last, |rng| {
            let (decoy, _) = make(rng);
            spell(rng, long, Some(short), &decoy)
        }));
        want.mode = mode;
    }

    // Ports, in order: one occurrence list, none overriding another.
    let mut exposes = Occurrences::new();
    for _ in 0..rng.below(4) {
        let port = (rng.between(1, 65535) as u16, rng.between(1, 65535) as u16);
        let port = if rng.one_in(2) {
            (port.0, port.0)
        } else {
            port
        };
        let written = spell_port(rng, port);
        exposes.push_back(spell(rng, "expose", None, &written));
        want.expose.push(port);
    }
    flags.push(exposes);

    // Switches, flags known but irrelevant, and flags this parser does not know.
    let mut switches = Occurrences::new();
    for _ in 0..rng.below(4) {
        match rng.below(5) {
            0 => {
                switches.push_back(vec![format!("--{}", abbreviation(rng, "verbose"))]);
                want.verbose = true;
            }
            1 => {
                // (`--version` and `--help` end the parse instead: not sessions.)
                let word = format!("--{}", abbreviation(rng, "local-cluster"));
                switches.push_back(vec![word]);
            }
            2 => {
                let long = rng.pick(&[
                    "also-proxy",
                    "serviceaccount",
                    "to-pod",
                    "from-pod",
                    "container-to-host",
                    "docker-mount",
                    "mount",
                    "env-json",
                    "env-file",
                ]);
                let value = any_value(rng);
                switches.push_back(spell(rng, long, None, &value));
            }
            _ => {
                // Unknown: kept as written, with the value that follows it.
                let flag = if rng.one_in(3) {
                    format!("-{}", rng.pick(&['q', 'z', 'Q', 'é']))
                } else {
                    format!("--x-{}", rng.name())
                };
                let words = match rng.below(3) {
                    0 => vec![flag],
                    // A value that cannot be taken for a flag.
                    1 => vec![flag, format!("v{}", rng.name())],
                    _ => vec![format!("{flag}={}", any_value(rng))],
                };
                want.unknown.extend(words.iter().cloned());
                switches.push_back(words);
            }
        }
    }
    flags.push(switches);

    // The user's command, last; `--run-shell` may come anywhere.
    let mut tail = Vec::new();
    match rng.below(4) {
        0 => {
            let mut shells = Occurrences::new();
            for _ in 0..rng.between(1, 2) {
                shells.push_back(vec![format!("--{}", abbreviation(rng, "run-shell"))]);
            }
            flags.push(shells);
            want.run_shell = true;
        }
        1 | 2 => {
            let docker = rng.one_in(3);
            let long = if docker { "docker-run" } else { "run" };
            let command: Vec<String> = (0..rng.between(1, 6)).map(|_| token(rng)).collect();
            let flag = format!("--{}", abbreviation(rng, long));
            if rng.one_in(3) {
                tail.push(format!("{flag}={}", command[0]));
                tail.extend(command[1..].iter().cloned());
            } else {
                tail.push(flag);
                tail.extend(command.iter().cloned());
            }
            want.run = Some(command);
            want.docker_run = docker;
        }
        _ => {
            if rng.one_in(4) {
                tail.push("--".to_string());
            }
        }
    }

    // Interleave the flags, keeping each one's occurrences in order.
    let mut argv = Vec::new();
    flags.retain(|f| !f.is_empty());
    while !flags.is_empty() {
        let at = rng.below(flags.len());
        if let Some(words) = flags[at].pop_front() {
            argv.extend(words);
        }
        if flags[at].is_empty() {
            flags.swap_remove(at);
        }
    }
    argv.extend(tail);
    Written { argv, want }
}

// ------------------------------------------------------------------------- properties

/// What the parser could have read as a value from each word: the word, what follows the
/// first `=` of a long flag, and what is attached to a short one.
fn written_values(argv: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    for word in argv {
        out.push(word.as_str());
        if let Some(body) = word.strip_prefix("--") {
            if let Some((_, value)) = body.split_once('=') {
                out.push(value);
            }
        } else if let Some(rest) = word.strip_prefix('-') {
            let mut chars = rest.chars();
            if chars.next().is_some() {
                let attached = chars.as_str();
                out.push(attached);
                out.extend(attached.strip_prefix('='));
            }
        }
    }
    out
}

/// Whether `part` is a subsequence of `whole`.
fn is_subsequence(part: &[String], whole: &[String]) -> bool {
    let mut whole = whole.iter();
    part.iter().all(|p| whole.any(|w| w == p))
}

/// The properties every command line has, parsed or refused.
fn check_any(argv: &[String]) {
    let got = parse_legacy_args(argv);
    if let Ok(inv) = &got {
        check_invocation(argv, inv);
    }
    // A `--context` in front changes the context and nothing else, errors included.
    let mut prefixed = vec!["--context".to_string(), "fuzz-context".to_string()];
    prefixed.extend_from_slice(argv);
    let want = got.map(|inv| Invocation {
        context: inv.context.clone().or_else(|| Some("fuzz-context".into())),
        ..inv
    });
    assert_eq!(
        parse_legacy_args(&prefixed),
        want,
        "with a --context in front"
    );
}

/// What an accepted command line reports was written in it.
fn check_invocation(argv: &[String], inv: &Invocation) {
    let values = written_values(argv);
    for (what, value) in [
        ("context", &inv.context),
        ("namespace", &inv.namespace),
        ("method", &inv.method),
        ("logfile", &inv.logfile),
    ] {
        if let Some(value) = value {
            assert!(values.contains(&value.as_str()), "{what} {value:?}");
        }
    }
    match &inv.mode {
        Mode::Swap {
            deployment,
            container,
        } => {
            assert!(!deployment.is_empty() && !deployment.contains(':'));
            assert!(container.as_ref().is_none_or(|c| !c.is_empty()));
            let written = |v: &&str| match v.split_once(':') {
                Some((d, c)) => {
                    d == deployment.as_str()
                        && Some(c).filter(|c| !c.is_empty()) == container.as_deref()
                }
                None => *v == deployment.as_str() && container.is_none(),
            };
            assert!(
                values.iter().any(written),
                "swap {deployment:?} {container:?}"
            );
        }
        Mode::NewDeployment { name } => {
            if let Some(name) = name {
                assert!(!name.is_empty() && values.contains(&name.as_str()));
            }
        }
        Mode::ExistingDeployment { name } => {
            assert!(!name.is_empty() && !name.contains(':'));
            let written = |v: &&str| v.split(':').next() == Some(name.as_str());
            assert!(values.iter().any(written), "existing {name:?}");
        }
    }
    assert!(inv.expose.iter().all(|&(l, r)| l != 0 && r != 0));
    assert!(!(inv.run_shell && (inv.docker_run || inv.run.is_some())));
    assert!(!inv.docker_run || inv.run.is_some());
    if let Some(command) = &inv.run {
        // The end of the command line, perhaps with its first word after `--run=`.
        assert!(!command.is_empty());
        let whole = argv.ends_with(command);
        let inline = argv.len() >= command.len()
            && argv.ends_with(&command[1..])
            && argv[argv.len() - command.len()].ends_with(&format!("={}", command[0]));
        assert!(whole || inline, "run {command:?}");
    }
    assert!(
        is_subsequence(&inv.unknown, argv),
        "unknown {:?}",
        inv.unknown
    );
    if inv.verbose {
        assert!(argv.iter().any(|a| a.starts_with("--v")));
    }
    let json = serde_json::to_string(inv).expect("an invocation encodes");
    let back: Invocation = serde_json::from_str(&json).expect("an invocation decodes");
    assert_eq!(&back, inv, "through JSON");
}
