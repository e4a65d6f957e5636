//! Recognising a Telepresence process from its command line and the first bytes of the
//! file it runs, and telling 0.x (a Python program) from 2.x (a Go binary).
//!
//! # Guarantees
//! - A process run through a Python interpreter is always 0.x: 2.x is never run that way.
//! - Only the program's file name is compared with the configured names, never a substring
//!   of an argument: `vim telepresence.txt` or `less /usr/local/bin/telepresence` is not
//!   Telepresence.
//!
//! # Caveats
//! A process whose `argv[0]` is the Telepresence path itself (a direct exec) is classified
//! from the file's first bytes when they are conclusive, and otherwise as 2.x. That default
//! is deliberate: when the kernel runs a `#!` script it replaces `argv[0]` with the
//! interpreter, so a running 0.x session shows up as `python3 /path/telepresence ...`, and a
//! direct exec is almost always the 2.x binary. Guessing 2.x also makes the agent do nothing
//! rather than read a stale `telepresence.log` as if it belonged to the process.

use serde::{Deserialize, Serialize};

/// The program names recognised when the caller configures none.
pub const DEFAULT_NAMES: &[&str] = &["telepresence"];

/// Which generation of Telepresence a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Flavor {
    /// Telepresence 0.x ("legacy"), the Python program that swaps Deployments.
    Legacy,
    /// Telepresence 2.x, the Go binary with a traffic manager and intercepts.
    Modern,
}

/// The 2.x subcommand that runs the user daemon (the connector), which holds a session.
pub const CONNECTOR_COMMAND: &str = "connector-foreground";

/// First arguments that only a 2.x binary accepts: 0.x takes no positional arguments at
/// all, so a running 0.x session never has one of these right after the program.
const MODERN_SUBCOMMANDS: &[&str] = &[
    "completion",
    "config",
    "connect",
    "connector-foreground",
    "current-cluster-id",
    "curl",
    "daemon-foreground",
    "dashboard",
    "gather-logs",
    "gather-traces",
    "genyaml",
    "helm",
    "help",
    "ingest",
    "intercept",
    "leave",
    "license",
    "list",
    "list-contexts",
    "list-namespaces",
    "login",
    "loglevel",
    "logout",
    "preview",
    "quit",
    "replace",
    "serve",
    "status",
    "test-vpn",
    "uninstall",
    "upload-traces",
    "version",
    "vpn-diag",
    "wiretap",
];

/// Magic numbers of native executables: ELF, Mach-O (64- and 32-bit, both byte orders) and
/// Mach-O universal ("fat") binaries.
const NATIVE_MAGICS: &[&[u8]] = &[
    b"\x7fELF",
    b"\xcf\xfa\xed\xfe",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xfe\xed\xfa\xce",
    b"\xca\xfe\xba\xbe",
    b"\xbe\xba\xfe\xca",
];

/// How the Telepresence program sits in a command line.
enum Launch {
    /// Run by a Python interpreter; the script (or `-m` module) is `argv[index]`.
    Python { index: usize },
    /// Executed directly: the program is `argv[0]`.
    Direct,
}

/// Which entry of `argv` names the Telepresence program, if the process is Telepresence at
/// all: the script of `python3 [OPTIONS] /path/telepresence ARGS` (or the module argument
/// of `python3 -m telepresence`; also through `env` or a shell running a Python shim), or
/// `argv[0]` for a direct exec.
///
/// Callers read the first bytes of that file and pass them to [`classify`]. `names` are the
/// program file names to recognise ([`DEFAULT_NAMES`] unless configured).
pub fn program_index(argv: &[String], names: &[&str]) -> Option<usize> {
    match locate(argv, names)? {
        Launch::Python { index } => Some(index),
        Launch::Direct => Some(0),
    }
}

/// Recognises a Telepresence process and its generation.
///
/// `argv` is the process's command line; `script_head` the first bytes of the file
/// [`program_index`] points at, if it could be read; `names` the program file names to
/// recognise ([`DEFAULT_NAMES`] unless configured). Returns the flavor and the index in
/// `argv` of the Telepresence program (its own arguments start right after it), or `None`
/// when the process is not Telepresence.
///
/// Decided in this order:
/// 1. run by a Python interpreter (`python`, `python3`, `python3.11`, macOS's `Python`,
///    interpreter options allowed before the script), directly, through `env`, or through
///    a shell running a Python shim (`bash ~/.pyenv/shims/python3 /path/telepresence`):
///    [`Flavor::Legacy`];
/// 2. a direct exec whose first argument is a 2.x subcommand: [`Flavor::Modern`];
/// 3. a direct exec whose file starts with `#!` and names Python, or with `PK` (a zipapp):
///    [`Flavor::Legacy`]; with an ELF or Mach-O header: [`Flavor::Modern`];
/// 4. any other direct exec: [`Flavor::Modern`] (see the module's caveats).
///
/// `--swap-deployment` alone proves nothing: 2.x accepts it too.
pub fn classify(
    argv: &[String],
    script_head: Option<&[u8]>,
    names: &[&str],
) -> Option<(Flavor, usize)> {
    match locate(argv, names)? {
        Launch::Python { index } => Some((Flavor::Legacy, index)),
        Launch::Direct => {
            let subcommand = argv
                .get(1)
                .is_some_and(|a| MODERN_SUBCOMMANDS.contains(&a.as_str()));
            let flavor = if subcommand {
                Flavor::Modern
            } else {
                script_head.and_then(head_flavor).unwrap_or(Flavor::Modern)
            };
            Some((flavor, 0))
        }
    }
}

fn locate(argv: &[String], names: &[&str]) -> Option<Launch> {
    let program = file_name(argv.first()?);
    if program == "env" {
        // A `#!/usr/bin/env python3` script, caught in its first instant: the kernel ran
        // `env python3 /path/telepresence ARGS` (same process, same pid, before env execs
        // the interpreter). Skip env's options and assignments, then expect Python (or a
        // shell running a Python shim: `env bash .../shims/python3 /path/telepresence`).
        let skip = argv[1..]
            .iter()
            .take_while(|a| a.starts_with('-') || a.contains('='))
            .count();
        let rest = &argv[1 + skip..];
        return interpreted(rest, names).map(|index| Launch::Python {
            index: index + 1 + skip,
        });
    }
    if is_python(program) || is_shell(program) {
        interpreted(argv, names).map(|index| Launch::Python { index })
    } else if names.contains(&program) {
        Some(Launch::Direct)
    } else {
        None
    }
}

/// The index of the Telepresence script in `python [OPTIONS] SCRIPT ...`, or in
/// `SHELL [OPTIONS] .../python3 [OPTIONS] SCRIPT ...`: with pyenv or asdf, `python3` is a
/// shell script (a shim) that execs the real interpreter a moment later, in the same
/// process, so for that moment the process is a shell running the shim.
///
/// A shell running a script named `telepresence` is not this: that is a wrapper, and the
/// session is the Python process it starts.
fn interpreted(argv: &[String], names: &[&str]) -> Option<usize> {
    let program = file_name(argv.first()?);
    if is_python(program) {
        return python_program(argv, names);
    }
    if !is_shell(program) {
        return None;
    }
    let shim = shell_script(argv)?;
    if !is_python(file_name(argv.get(shim)?)) {
        return None;
    }
    python_program(&argv[shim..], names).map(|index| shim + index)
}

/// The shells a shim is written for (pyenv's and asdf's are `#!/usr/bin/env bash`).
fn is_shell(name: &str) -> bool {
    matches!(name, "bash" | "sh" | "dash" | "zsh")
}

/// Skips a shell's options and returns the index of the script it runs; `None` when it
/// runs a command string (`-c`) or reads commands from stdin (`-s`, or no script at all).
fn shell_script(argv: &[String]) -> Option<usize> {
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        if arg == "--" || arg == "-" {
            i += 1;
            break;
        }
        let Some(options) = arg.strip_prefix('-').or_else(|| arg.strip_prefix('+')) else {
            break;
        };
        if options.starts_with('-') {
            // A long option (`--norc`, `--posix`): none of them names a script.
            i += 1;
            continue;
        }
        if options.contains(['c', 's']) {
            return None;
        }
        // `-o NAME` and bash's `-O NAME` take the next argument.
        i += 1 + usize::from(options.contains(['o', 'O']));
    }
    argv.get(i).map(|_| i)
}

/// The last component of a path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `python`, `python3`, `python3.11`, `python3.7m`, and macOS framework builds' `Python`.
fn is_python(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let Some(version) = lower.strip_prefix("python") else {
        return false;
    };
    // ABI suffixes of older builds: debug, pymalloc, wide unicode.
    let version = version.trim_end_matches(['d', 'm', 'u']);
    version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Skips the interpreter's options and returns the index of the Telepresence script or
/// module in a `python ...` command line.
fn python_program(argv: &[String], names: &[&str]) -> Option<usize> {
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        // `-` runs a script from stdin; anything else not starting with `-` is the script.
        if arg == "-" || !arg.starts_with('-') {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if long == "check-hash-based-pycs" {
                i += 2;
                continue;
            }
            if long.starts_with("check-hash-based-pycs=") {
                i += 1;
                continue;
            }
            // --help, --version and the like print something and exit: no script runs.
            return None;
        }
        // A cluster of one-letter options such as `-IS`, `-Wignore` or `-m telepresence`.
        let cluster = &arg[1..];
        for (pos, option) in cluster.char_indices() {
            let attached = &cluster[pos + option.len_utf8()..];
            match option {
                // `-c CODE`: a command, not a script.
                'c' => return None,
                'm' => {
                    return if attached.is_empty() {
                        let module = argv.get(i + 1)?;
                        names.contains(&module.as_str()).then_some(i + 1)
                    } else {
                        names.contains(&attached).then_some(i)
                    };
                }
                'W' | 'X' => {
                    if attached.is_empty() {
                        // The value is the next argument.
                        i += 1;
                    }
                    break;
                }
                _ => {}
            }
        }
        i += 1;
    }
    let script = argv.get(i)?;
    names.contains(&file_name(script)).then_some(i)
}

/// What the first bytes of the program file say, if anything conclusive.
fn head_flavor(head: &[u8]) -> Option<Flavor> {
    if NATIVE_MAGICS.iter().any(|magic| head.starts_with(magic)) {
        return Some(Flavor::Modern);
    }
    if head.starts_with(b"PK") {
        return Some(Flavor::Legacy);
    }
    let interpreter_line = head.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    interpreter_line
        .windows(b"python".len())
        .any(|w| w.eq_ignore_ascii_case(b"python"))
        .then_some(Flavor::Legacy)
}

#[cfg(test)]
mod tests;
