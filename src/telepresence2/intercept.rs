//! `telepresence intercept NAME [flags] -- CMD` (or `--docker-run`, `--docker-build`,
//! `--docker-debug`): an intercept bound to a command. The CLI creates the intercept, runs
//! the command, and leaves the intercept when the command ends; a CLI killed meanwhile
//! leaves it in place for as long as the connector lives. This reads such a command line.
//!
//! The flags are those of Telepresence's `intercept` command and its global flags at
//! v2.20.2 (`pkg/client/cli/intercept/command.go`, `pkg/client/cli/global/flags.go`). A
//! flag it does not know makes the name unclear (it might take a value), and the agent
//! then does not guess which intercept the command held.

/// Flags that take a value (long names).
const VALUE_FLAGS: &[&str] = &[
    "workload",
    "port",
    "address",
    "service",
    "env-file",
    "env-syntax",
    "env-json",
    "mount",
    "to-pod",
    "docker-build",
    "docker-debug",
    "docker-build-opt",
    "docker-mount",
    "namespace",
    "mechanism",
    "wait-message",
    "local-mount-port",
    "context",
    "use",
    "output",
];
/// Flags that take none.
const BOOL_FLAGS: &[&str] = &[
    "local-only",
    "docker-run",
    "detailed-output",
    "replace",
    "docker",
    "no-report",
    "help",
];
/// Short forms that take a value, and those that take none.
const VALUE_SHORTS: &[char] = &['w', 'p', 'e', 'j', 'n'];
const BOOL_SHORTS: &[char] = &['l', 'h'];
/// Flags that make the intercept run a container, and leave it when the container ends.
const RUN_FLAGS: &[&str] = &["docker-run", "docker-build", "docker-debug"];

/// Why the intercept's name cannot be told from a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unclear {
    /// A flag Telepresence 2.20's `intercept` does not have (it might take a value).
    #[error("unknown flag {0}: the intercept's name cannot be told")]
    UnknownFlag(String),
    /// No name before the command.
    #[error("no intercept name")]
    NoName,
}

/// The intercept a command line holds while its command runs: `Ok(Some(name))` for
/// `intercept NAME ... -- CMD` (or a `--docker-*` run), `Ok(None)` for anything else
/// (another subcommand, an intercept not bound to a command); `args` are the arguments
/// after the program.
pub fn bound_intercept(args: &[String]) -> Result<Option<String>, Unclear> {
    if args.first().map(String::as_str) != Some("intercept") {
        return Ok(None);
    }
    let mut name = None;
    let mut runs = false;
    let mut after_dash = false;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if after_dash {
            runs = true;
            break;
        }
        if a == "--" {
            after_dash = true;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (flag, attached) = match long.split_once('=') {
                Some((f, _)) => (f, true),
                None => (long, false),
            };
            if RUN_FLAGS.contains(&flag) {
                runs = true;
            }
            if VALUE_FLAGS.contains(&flag) {
                if !attached {
                    it.next();
                }
            } else if !BOOL_FLAGS.contains(&flag) {
                return Err(Unclear::UnknownFlag(format!("--{flag}")));
            }
            continue;
        }
        if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, c) in shorts.char_indices() {
                if BOOL_SHORTS.contains(&c) {
                    continue;
                }
                if VALUE_SHORTS.contains(&c) {
                    // The rest is its value (`-p8080`, `-p=8080`), else the next argument.
                    if i + c.len_utf8() == shorts.len() {
                        it.next();
                    }
                    break;
                }
                return Err(Unclear::UnknownFlag(format!("-{c}")));
            }
            continue;
        }
        if name.is_none() {
            name = Some(a.clone());
        }
    }
    if !runs {
        return Ok(None);
    }
    name.map(Some).ok_or(Unclear::NoName)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<String>, Unclear> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        bound_intercept(&args)
    }

    #[test]
    fn the_name_of_an_intercept_bound_to_a_command() {
        let some = |n: &str| Ok(Some(n.to_string()));
        let table: &[(&str, Result<Option<String>, Unclear>)] = &[
            ("intercept echo --port 8080 -- ./run.sh", some("echo")),
            (
                "intercept --port 8080 echo -- ./run.sh --port 9",
                some("echo"),
            ),
            (
                "intercept -p 8080:http -w echo-v2 echo -- make run",
                some("echo"),
            ),
            ("intercept -p8080 echo -- make", some("echo")),
            ("intercept -lp 8080 echo -- make", some("echo")),
            (
                "intercept --port=8080 --mount=false echo -- make",
                some("echo"),
            ),
            (
                "intercept echo --docker-run -- -it --rm ubuntu",
                some("echo"),
            ),
            (
                "intercept echo --docker-build ./ctx -- -it IMAGE",
                some("echo"),
            ),
            (
                "intercept echo --replace --env-file .env -- npm start",
                some("echo"),
            ),
            (
                "intercept --context dev --output json echo -- x",
                some("echo"),
            ),
            // Not bound to a command: the CLI returns once the intercept is made.
            ("intercept echo --port 8080", Ok(None)),
            ("intercept echo --port 8080 --", Ok(None)),
            ("connector-foreground", Ok(None)),
            ("leave echo", Ok(None)),
            ("list", Ok(None)),
            // Not sure: never guessed.
            (
                "intercept --frobnicate x echo -- make",
                Err(Unclear::UnknownFlag("--frobnicate".into())),
            ),
            (
                "intercept -x echo -- make",
                Err(Unclear::UnknownFlag("-x".into())),
            ),
            ("intercept --port 8080 -- make", Err(Unclear::NoName)),
        ];
        for (line, want) in table {
            assert_eq!(&parse(line), want, "{line}");
        }
    }
}
