//! telepolice-agent: a user-level daemon that watches Telepresence 0.x sessions, records
//! what each is about to change in the cluster, and puts the cluster back when a session
//! dies without cleaning up.
//!
//! # Layout
//! - [`cli`]: the command line and what each command does.
//! - [`config`]: `config.toml` and the paths the agent uses.
//! - [`control`]: the control socket `status` asks the daemon through.
//! - [`daemon`]: the lock, discovery loop and one task per session.
//! - [`desktop`]: desktop notifications of repairs and of sessions needing a person.
//! - [`discovery`]: noticing new Telepresence processes (inotify + new-pid scan).
//! - [`doctor`]: checking that the agent can do its work here, one line per check.
//! - [`telepresence`]: what a Telepresence 0.x command line and log say (pure).
//! - [`service`]: the systemd unit and launchd plist, `install`/`uninstall`, and telling
//!   systemd the daemon is ready and alive (`NOTIFY_SOCKET`).
//! - [`session`]: the journaled record of a session and its states.
//! - [`journal`]: durable, atomic storage of session records.
//! - `logind`: sleep notifications and the delay inhibitor (Linux).
//! - [`plan`]: deciding what to repair (pure).
//! - [`cluster`]: talking to a session's cluster as it did, and acting with preconditions.
//! - [`helpers`]: a dead session's local helper processes and temp dir.
//! - [`platform`]: the OS layer (processes, exit watches, signals); no Kubernetes in it.
//! - [`status`]: rendering the journal for `status` and `history`.
//! - [`unfollowed`]: Telepresence processes passed over or followed half-blind, for `status`
//!   and `doctor`.
//! - [`wake`]: noticing a resume, and what waiting repairs show in `status`.
//! - [`manual`]: the man page and shell completions, generated from the CLI definition.
//! - `logging`, `signals`: process set-up.
//! - `failpoint`: test builds only: named instants at which a test can kill the agent.
//! - `fuzz` (tests only): generated-input tests of every parser of untrusted input.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod effects;
mod failpoint;
pub mod lifecycle;
mod logging;
pub mod service;
pub mod session;
pub mod signals;
pub mod telepresence;

/// The OS layer lives in its own crate (`crates/platform`), free of Kubernetes and TLS
/// dependencies, so that it type-checks for macOS on any machine.
pub use telepolice_platform as platform;
