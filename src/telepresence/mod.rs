//! What the agent knows about Telepresence itself, as pure functions: recognising a
//! Telepresence process, parsing a 0.x command line, the names 0.x gives its objects, and
//! the facts its log file gives away. Nothing here reads files, runs commands or talks to
//! a cluster; callers pass in what they read.
//!
//! # Layout
//! - `program`: is this process Telepresence, and is it 0.x or 2.x ([`classify`],
//!   [`program_index`]).
//! - `args`: what a 0.x command line asks for ([`parse_legacy_args`], [`Invocation`]).
//! - `identity`: which `tel-*` session id is a process's own, from evidence only it has
//!   ([`pick_session_id`]).
//! - `log`: the session id and the original replica count from `telepresence.log`
//!   ([`read_log`], [`LogFacts`]).
//! - Here: the names 0.x derives from its session id ([`swap_proxy_name`],
//!   [`is_session_id`]).
//!
//! The facts matched on are restated in `telepresence-facts.md` (shared with the project);
//! where this module guesses beyond them, the item's doc says so.

mod args;
mod identity;
mod log;
mod program;

pub use args::{ArgsError, Invocation, Mode, known_flags, parse_legacy_args};
pub use identity::{Candidate, Evidence, IdPick, Labelled, pick as pick_session_id};
pub use log::{LogFacts, MAX_LOG_BYTES, read_log};
pub use program::{CONNECTOR_COMMAND, DEFAULT_NAMES, Flavor, classify, program_index};

/// How many characters of the original Deployment's name a 0.x swap proxy keeps.
pub const PROXY_NAME_PREFIX_CHARS: usize = 17;

/// The name of the proxy that `--swap-deployment <deployment>` creates in session
/// `session_id`: the deployment's name cut to its first 17 characters, a dash, the id.
///
/// The cut is by characters, as Telepresence's Python slicing does; Kubernetes names are
/// ASCII, so this is also a cut by bytes for every real name.
pub fn swap_proxy_name(deployment: &str, session_id: &str) -> String {
    let prefix: String = deployment.chars().take(PROXY_NAME_PREFIX_CHARS).collect();
    format!("{prefix}-{session_id}")
}

/// Whether `s` has the shape of a 0.x session id: exactly 32 lowercase hex digits (a UUID4
/// in hex, as 0.x generates it).
pub fn is_session_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9dc6d5a80acf4e6dae1045b22bfdd1ef";

    #[test]
    fn swap_proxy_names() {
        let cases = [
            ("app", "app-9dc6d5a80acf4e6dae1045b22bfdd1ef"),
            ("", "-9dc6d5a80acf4e6dae1045b22bfdd1ef"),
            // Exactly 17 characters: kept whole.
            (
                "abcdefghijklmnopq",
                "abcdefghijklmnopq-9dc6d5a80acf4e6dae1045b22bfdd1ef",
            ),
            // 18 and more: cut to 17.
            (
                "abcdefghijklmnopqr",
                "abcdefghijklmnopq-9dc6d5a80acf4e6dae1045b22bfdd1ef",
            ),
            (
                "very-long-deployment-name-api",
                "very-long-deploym-9dc6d5a80acf4e6dae1045b22bfdd1ef",
            ),
            // A cut that would split a multi-byte character if done by bytes.
            (
                "ééééééééééééééééééé",
                "ééééééééééééééééé-9dc6d5a80acf4e6dae1045b22bfdd1ef",
            ),
        ];
        for (deployment, want) in cases {
            assert_eq!(swap_proxy_name(deployment, ID), want, "{deployment:?}");
        }
    }

    #[test]
    fn session_ids() {
        let cases = [
            (ID, true),
            ("00000000000000000000000000000000", true),
            ("9DC6D5A80ACF4E6DAE1045B22BFDD1EF", false),
            ("9dc6d5a80acf4e6dae1045b22bfdd1e", false),
            ("9dc6d5a80acf4e6dae1045b22bfdd1efa", false),
            ("9dc6d5a8-0acf-4e6d-ae10-45b22bfdd1ef", false),
            ("9dc6d5a80acf4e6dae1045b22bfdd1eg", false),
            ("", false),
        ];
        for (s, want) in cases {
            assert_eq!(is_session_id(s), want, "{s:?}");
        }
    }
}
