//! What a Telepresence 0.x command line asks for: the mode (swap, new or existing
//! deployment), the cluster it targets, exposed ports, the method, the log file and the
//! user's command.
//!
//! 0.x parses its arguments with Python's `argparse`; this parser follows the same rules
//! where they change the meaning of a command line: `--flag value` and `--flag=value`,
//! `-n value`, `-nvalue` and `-n=value`, unambiguous abbreviations of long flags
//! (`--swap` for `--swap-deployment`), the last of a repeated flag wins, and everything
//! after `--run` or `--docker-run` belongs to the user's command.
//!
//! # Caveats
//! - The flag set is the one in the project's facts plus the 0.x flags this module knows
//!   of but does not use (`--also-proxy`, `--mount`, `--env-file`, ...), which are
//!   skipped. The short forms `-s` (`--swap-deployment`), `-d` (`--deployment`) and `-m`
//!   (`--method`) are from 0.x's help text as remembered, not from the facts file; the
//!   stand-in accepts `-s` and `-d` too.
//! - A flag this module does not know (a newer version's) is kept in
//!   [`Invocation::unknown`] rather than refused. 0.x takes no positional arguments, so a
//!   word that follows an unknown flag can only be that flag's value and is kept with it.

use serde::{Deserialize, Serialize};

/// Why a 0.x command line could not be understood. Each variant names the value a person
/// would have to look at; none of these command lines would have started a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A flag that needs a value was last, or was followed by another flag.
    #[error("{flag} needs a value")]
    MissingValue {
        /// The flag as written.
        flag: String,
    },
    /// A flag that takes no value was given one with `=`.
    #[error("{flag} takes no value (got {value:?})")]
    UnexpectedValue {
        /// The flag as written, without the value.
        flag: String,
        /// The value given.
        value: String,
    },
    /// `--expose` with something other than `PORT` or `PORT:REMOTE` (ports 1 to 65535).
    #[error("--expose {value:?} is not PORT or PORT:REMOTE_PORT with ports from 1 to 65535")]
    BadPort {
        /// The value given to `--expose`.
        value: String,
    },
    /// A deployment name that is empty.
    #[error("{flag} needs a deployment name, got {value:?}")]
    EmptyName {
        /// The flag as written.
        flag: String,
        /// The value given.
        value: String,
    },
    /// `--run` or `--docker-run` with nothing after it.
    #[error("{flag} needs a command after it")]
    EmptyCommand {
        /// The flag as written.
        flag: String,
    },
    /// Two different mode flags (`--swap-deployment`, `--new-deployment`, `--deployment`).
    #[error("{first} and {second} cannot be used together")]
    ConflictingModes {
        /// The mode flag seen first.
        first: String,
        /// The other one.
        second: String,
    },
    /// Two different ways of running the user's command (`--run`, `--run-shell`,
    /// `--docker-run`).
    #[error("{first} and {second} cannot be used together")]
    ConflictingCommands {
        /// The flag seen first.
        first: String,
        /// The other one.
        second: String,
    },
    /// An abbreviated long flag that matches several flags.
    #[error("{flag} is ambiguous: it could be {}", candidates.join(", "))]
    AmbiguousFlag {
        /// The abbreviation as written.
        flag: String,
        /// The flags it could stand for.
        candidates: Vec<String>,
    },
    /// A word that is neither a flag nor a flag's value (0.x takes no positional arguments).
    #[error("unexpected argument {value:?}")]
    UnexpectedArgument {
        /// The word.
        value: String,
    },
    /// `--version` or `--help`: 0.x prints and exits while parsing its arguments, before it
    /// makes a log, a session id or a temp dir. Not a session.
    #[error("{flag} prints and exits: not a session")]
    PrintsAndExits {
        /// The flag as written.
        flag: String,
    },
}

/// What a 0.x session does to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// `--swap-deployment NAME[:CONTAINER]`: the original is scaled to 0 and a proxy named
    /// after it (see [`swap_proxy_name`](super::swap_proxy_name)) takes its place.
    Swap {
        /// The original Deployment.
        deployment: String,
        /// The container to swap; `None` means the first one.
        container: Option<String>,
    },
    /// `--new-deployment NAME` (or `-n`), also the mode when no mode flag is given: a new
    /// proxy labelled `telepresence=<session id>`.
    NewDeployment {
        /// The proxy's name; `None` means 0.x's generated default
        /// (`telepresence-<time>-<pid>`).
        name: Option<String>,
    },
    /// `--deployment NAME`: attach to an existing proxy; nothing is created or cleaned.
    ExistingDeployment {
        /// The Deployment's name (a `:CONTAINER` suffix is dropped).
        name: String,
    },
}

/// A parsed 0.x command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// What the session does to the cluster.
    pub mode: Mode,
    /// `--context`; `None` means kubectl's current context.
    pub context: Option<String>,
    /// `--namespace`; `None` means the context's namespace.
    pub namespace: Option<String>,
    /// `--expose PORT[:REMOTE]`, in order, as `(local, remote)`.
    pub expose: Vec<(u16, u16)>,
    /// `--method` as given (`vpn-tcp`, `inject-tcp`, `container`), not validated.
    pub method: Option<String>,
    /// `--logfile`; `None` means `./telepresence.log` in the process's working directory,
    /// `Some("-")` means standard output (no file to read).
    pub logfile: Option<String>,
    /// The user's command: after `--run`, or the arguments to `docker run` when
    /// [`docker_run`](Self::docker_run) is set.
    pub run: Option<Vec<String>>,
    /// `--run-shell`.
    pub run_shell: bool,
    /// `--docker-run`; [`run`](Self::run) then holds its arguments.
    pub docker_run: bool,
    /// `--verbose` (0.105 logs the original's JSON only with it).
    #[serde(default)]
    pub verbose: bool,
    /// Flags this parser does not know, as written, each followed by its value when it had
    /// one.
    #[serde(default)]
    pub unknown: Vec<String>,
}

impl Default for Invocation {
    /// A command line without flags: Telepresence then makes a new deployment with a
    /// random name.
    fn default() -> Self {
        Self {
            mode: Mode::NewDeployment { name: None },
            context: None,
            namespace: None,
            expose: vec![],
            method: None,
            logfile: None,
            run: None,
            run_shell: false,
            docker_run: false,
            verbose: false,
            unknown: vec![],
        }
    }
}

/// The flags that matter, and the known ones that do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Context,
    Namespace,
    Swap,
    New,
    Existing,
    Expose,
    Method,
    Logfile,
    Run,
    RunShell,
    DockerRun,
    Verbose,
    /// Known to 0.x, takes a value, irrelevant here.
    SkipValue,
    /// Known to 0.x, takes no value, irrelevant here.
    SkipSwitch,
    /// `--version`, `--help`: argparse prints and exits the moment it reads one.
    Exits,
}

/// What follows a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    Switch,
    Value,
    /// Everything up to the end of the command line.
    Rest,
}

impl Flag {
    fn arity(self) -> Arity {
        match self {
            Flag::RunShell | Flag::Verbose | Flag::SkipSwitch | Flag::Exits => Arity::Switch,
            Flag::Run | Flag::DockerRun => Arity::Rest,
            _ => Arity::Value,
        }
    }
}

/// 0.x's flags: long name, short letter.
const FLAGS: &[(&str, Option<char>, Flag)] = &[
    ("context", None, Flag::Context),
    ("namespace", None, Flag::Namespace),
    ("swap-deployment", Some('s'), Flag::Swap),
    ("new-deployment", Some('n'), Flag::New),
    ("deployment", Some('d'), Flag::Existing),
    ("expose", None, Flag::Expose),
    ("method", Some('m'), Flag::Method),
    ("logfile", None, Flag::Logfile),
    ("run", None, Flag::Run),
    ("run-shell", None, Flag::RunShell),
    ("docker-run", None, Flag::DockerRun),
    ("verbose", None, Flag::Verbose),
    ("also-proxy", None, Flag::SkipValue),
    ("serviceaccount", None, Flag::SkipValue),
    ("to-pod", None, Flag::SkipValue),
    ("from-pod", None, Flag::SkipValue),
    ("container-to-host", None, Flag::SkipValue),
    ("docker-mount", None, Flag::SkipValue),
    ("mount", None, Flag::SkipValue),
    ("env-json", None, Flag::SkipValue),
    ("env-file", None, Flag::SkipValue),
    ("local-cluster", None, Flag::SkipSwitch),
    ("version", None, Flag::Exits),
    ("help", Some('h'), Flag::Exits),
];

/// Every flag this parser knows, as long name and short letter (the fuzz tests generate
/// command lines from them).
pub fn known_flags() -> impl Iterator<Item = (&'static str, Option<char>)> {
    FLAGS.iter().map(|&(long, short, _)| (long, short))
}

/// Parses the arguments of a 0.x command line: everything after the program
/// (`argv[index + 1..]` with the index from [`classify`](super::classify)).
///
/// # Errors
/// An [`ArgsError`] for a command line 0.x itself would refuse: a missing or malformed
/// value, conflicting modes, an ambiguous abbreviation, a stray word.
pub fn parse_legacy_args(args: &[String]) -> Result<Invocation, ArgsError> {
    let mut parser = Parser::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let next = args.get(i + 1).filter(|n| is_value(n));
        let (flag, written, inline) = if arg == "--" {
            // argparse: everything after `--` is positional, and 0.x has no positionals.
            return match args.get(i + 1) {
                Some(value) => Err(ArgsError::UnexpectedArgument {
                    value: value.clone(),
                }),
                None => Ok(parser.finish()),
            };
        } else if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            match resolve_long(name)? {
                Some((long, flag)) => (flag, format!("--{long}"), inline),
                None => {
                    i += parser.keep_unknown(arg, inline.is_none().then_some(next).flatten());
                    continue;
                }
            }
        } else if is_value(arg) {
            return Err(ArgsError::UnexpectedArgument { value: arg.clone() });
        } else {
            match resolve_short(arg) {
                Ok(known) => known,
                // Unknown, or a switch clustered with other letters (`-hv`).
                Err(attached) => {
                    let value = if attached { None } else { next };
                    i += parser.keep_unknown(arg, value);
                    continue;
                }
            }
        };
        if flag == Flag::Exits {
            return Err(ArgsError::PrintsAndExits { flag: written });
        }
        match flag.arity() {
            Arity::Switch => {
                if let Some(value) = inline {
                    return Err(ArgsError::UnexpectedValue {
                        flag: written,
                        value: value.to_string(),
                    });
                }
                parser.switch(flag, &written)?;
                i += 1;
            }
            Arity::Value => {
                let value = match (inline, next) {
                    (Some(value), _) => {
                        i += 1;
                        value
                    }
                    (None, Some(value)) => {
                        i += 2;
                        value.as_str()
                    }
                    (None, None) => return Err(ArgsError::MissingValue { flag: written }),
                };
                parser.value(flag, &written, value)?;
            }
            Arity::Rest => {
                let command: Vec<String> = inline
                    .map(str::to_string)
                    .into_iter()
                    .chain(args[i + 1..].iter().cloned())
                    .collect();
                if command.is_empty() {
                    return Err(ArgsError::EmptyCommand { flag: written });
                }
                parser.command(flag, &written, command)?;
                break;
            }
        }
    }
    Ok(parser.finish())
}

/// A short flag: `-n NAME`, `-nNAME`, `-n=NAME`, as (flag, how it was written, inline
/// value); otherwise whether something was attached to the unknown letter.
fn resolve_short(arg: &str) -> Result<(Flag, String, Option<&str>), bool> {
    let mut chars = arg[1..].chars();
    let letter = chars.next();
    let attached = chars.as_str();
    let known = FLAGS
        .iter()
        .find(|(_, short, _)| short.is_some() && *short == letter);
    match known {
        Some(&(_, Some(letter), flag)) if flag.arity() == Arity::Value => {
            let inline =
                (!attached.is_empty()).then(|| attached.strip_prefix('=').unwrap_or(attached));
            Ok((flag, format!("-{letter}"), inline))
        }
        Some(&(_, Some(letter), flag)) if attached.is_empty() => {
            Ok((flag, format!("-{letter}"), None))
        }
        _ => Err(!attached.is_empty()),
    }
}

/// Whether argparse would take `arg` as a value rather than a flag: `-` alone, a negative
/// number, or anything not starting with `-`.
fn is_value(arg: &str) -> bool {
    match arg.strip_prefix('-') {
        None => true,
        Some("") => true,
        Some(rest) => {
            let (whole, fraction) = rest.split_once('.').unwrap_or((rest, ""));
            !(whole.is_empty() && fraction.is_empty())
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

/// Finds a long flag by its exact name or, as argparse does, by an unambiguous prefix.
/// `Ok(None)`: not a flag this module knows.
fn resolve_long(name: &str) -> Result<Option<(&'static str, Flag)>, ArgsError> {
    if let Some(&(long, _, flag)) = FLAGS.iter().find(|(long, _, _)| *long == name) {
        return Ok(Some((long, flag)));
    }
    if name.is_empty() {
        return Ok(None);
    }
    let mut matches = FLAGS.iter().filter(|(long, _, _)| long.starts_with(name));
    match (matches.next(), matches.next()) {
        (None, _) => Ok(None),
        (Some(&(long, _, flag)), None) => Ok(Some((long, flag))),
        (Some(_), Some(_)) => Err(ArgsError::AmbiguousFlag {
            flag: format!("--{name}"),
            candidates: FLAGS
                .iter()
                .filter(|(long, _, _)| long.starts_with(name))
                .map(|(long, _, _)| format!("--{long}"))
                .collect(),
        }),
    }
}

/// The state of a parse: what was seen so far.
#[derive(Debug, Default)]
struct Parser {
    /// The mode flag as written, and the mode it gave.
    mode: Option<(String, Mode)>,
    /// The command flag as written (`--run`, `--run-shell`, `--docker-run`).
    command_flag: Option<(String, Flag)>,
    context: Option<String>,
    namespace: Option<String>,
    expose: Vec<(u16, u16)>,
    method: Option<String>,
    logfile: Option<String>,
    run: Option<Vec<String>>,
    verbose: bool,
    unknown: Vec<String>,
}

impl Parser {
    /// Keeps an unknown flag and its value; returns how many arguments were used.
    fn keep_unknown(&mut self, arg: &str, value: Option<&String>) -> usize {
        self.unknown.push(arg.to_string());
        match value {
            Some(value) => {
                self.unknown.push(value.clone());
                2
            }
            None => 1,
        }
    }

    fn switch(&mut self, flag: Flag, written: &str) -> Result<(), ArgsError> {
        match flag {
            Flag::Verbose => self.verbose = true,
            Flag::RunShell => self.set_command_flag(flag, written)?,
            _ => {}
        }
        Ok(())
    }

    fn value(&mut self, flag: Flag, written: &str, value: &str) -> Result<(), ArgsError> {
        match flag {
            Flag::Context => self.context = Some(value.to_string()),
            Flag::Namespace => self.namespace = Some(value.to_string()),
            Flag::Method => self.method = Some(value.to_string()),
            Flag::Logfile => self.logfile = Some(value.to_string()),
            Flag::Expose => self.expose.push(parse_expose(value)?),
            Flag::Swap => {
                let (deployment, container) = match value.split_once(':') {
                    Some((name, container)) => (name, Some(container)),
                    None => (value, None),
                };
                let deployment = non_empty(deployment, written, value)?;
                let container = container.filter(|c| !c.is_empty()).map(str::to_string);
                self.set_mode(
                    written,
                    Mode::Swap {
                        deployment,
                        container,
                    },
                )?;
            }
            Flag::New => {
                // An empty name falls back to the generated one, as `name or default` does.
                let name = (!value.is_empty()).then(|| value.to_string());
                self.set_mode(written, Mode::NewDeployment { name })?;
            }
            Flag::Existing => {
                let name = value.split_once(':').map_or(value, |(name, _)| name);
                let name = non_empty(name, written, value)?;
                self.set_mode(written, Mode::ExistingDeployment { name })?;
            }
            _ => {}
        }
        Ok(())
    }

    fn command(
        &mut self,
        flag: Flag,
        written: &str,
        command: Vec<String>,
    ) -> Result<(), ArgsError> {
        self.set_command_flag(flag, written)?;
        self.run = Some(command);
        Ok(())
    }

    /// A mode flag; a different one seen before is a conflict, the same one again wins.
    fn set_mode(&mut self, written: &str, mode: Mode) -> Result<(), ArgsError> {
        if let Some((first, old)) = &self.mode
            && std::mem::discriminant(old) != std::mem::discriminant(&mode)
        {
            return Err(ArgsError::ConflictingModes {
                first: first.clone(),
                second: written.to_string(),
            });
        }
        self.mode = Some((written.to_string(), mode));
        Ok(())
    }

    fn set_command_flag(&mut self, flag: Flag, written: &str) -> Result<(), ArgsError> {
        if let Some((first, old)) = &self.command_flag
            && *old != flag
        {
            return Err(ArgsError::ConflictingCommands {
                first: first.clone(),
                second: written.to_string(),
            });
        }
        self.command_flag = Some((written.to_string(), flag));
        Ok(())
    }

    fn finish(self) -> Invocation {
        let command = self.command_flag.map(|(_, flag)| flag);
        Invocation {
            mode: self
                .mode
                .map_or(Mode::NewDeployment { name: None }, |(_, mode)| mode),
            context: self.context,
            namespace: self.namespace,
            expose: self.expose,
            method: self.method,
            logfile: self.logfile,
            run: self.run,
            run_shell: command == Some(Flag::RunShell),
            docker_run: command == Some(Flag::DockerRun),
            verbose: self.verbose,
            unknown: self.unknown,
        }
    }
}

fn non_empty(name: &str, flag: &str, value: &str) -> Result<String, ArgsError> {
    if name.is_empty() {
        return Err(ArgsError::EmptyName {
            flag: flag.to_string(),
            value: value.to_string(),
        });
    }
    Ok(name.to_string())
}

/// `PORT` or `PORT:REMOTE`, each 1 to 65535 (surrounding blanks and a `+` allowed, as
/// Python's `int()` allows them).
fn parse_expose(value: &str) -> Result<(u16, u16), ArgsError> {
    let port = |s: &str| {
        let s = s.trim();
        let digits = s.strip_prefix('+').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok().filter(|p| *p != 0)
    };
    let bad = || ArgsError::BadPort {
        value: value.to_string(),
    };
    match value.split_once(':') {
        Some((local, remote)) => Ok((port(local).ok_or_else(bad)?, port(remote).ok_or_else(bad)?)),
        None => {
            let local = port(value).ok_or_else(bad)?;
            Ok((local, local))
        }
    }
}

#[cfg(test)]
mod tests;
