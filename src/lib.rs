//! telepolice-agent: a user-level daemon that watches Telepresence 0.x sessions, records
//! what each is about to change in the cluster, and puts the cluster back when a session
//! dies without cleaning up; and follows Telepresence 2 connectors, ending the
//! traffic-manager session of one that died without departing.
//!
//! # Layout: signals -> decision -> effects
//! - [`signals`]: what the OS says, as events: new Telepresence processes
//!   ([`signals::discovery`]), resumes, logind's sleeps, SIGTERM/SIGHUP.
//! - [`telepresence`]: what a Telepresence 0.x command line and log say (pure). A new kind
//!   of session brings its own module beside it: [`telepresence2`] (what 2.x leaves on the
//!   laptop, and the verdict on a dead connector's session).
//! - [`lifecycle`]: every decision on a session, pure and table-tested: one
//!   [`lifecycle::step`] from (record, event) to (what it learns, next state, typed reasons,
//!   actions), with the repair plan, the evidence for the original's replica count and the
//!   live-twin check.
//! - [`effects`]: what changes the world: the cluster (with uid preconditions), Telepresence
//!   2's traffic-manager (`Depart` through a port-forward), local helpers, the journal,
//!   desktop notifications.
//! - [`daemon`]: the loop that wires them: one `Event` enum, one task per session that
//!   gathers events, asks the lifecycle, and carries out its steps (a 2.x connector's task,
//!   `daemon::tel2`, asks [`telepresence2::verdict`] instead); the lock, the control socket
//!   `status` asks, the systemd notifier.
//! - [`session`]: the journaled record of a session and its states (shared by all).
//! - [`config`]: `config.toml` and the paths the agent uses.
//! - [`cli`]: the commands (`status`, `history`, `repair`, `doctor`, the man page).
//! - [`service`]: the systemd unit and launchd plist, `install`/`uninstall`.
//! - [`platform`]: the OS layer (processes, exit watches, signals); no Kubernetes in it.
//! - `logging`: process set-up; `failpoint`: test builds only, named instants at which a test
//!   can kill the agent.
//!
//! No module imports one above it in this flow: `lifecycle` knows nothing of `effects` or
//! `daemon`, `effects` nothing of `daemon`, and `cli` sits on top.

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
pub mod sweep;
pub mod team;
pub mod telepresence;
pub mod telepresence2;

/// The OS layer lives in its own crate (`crates/platform`), free of Kubernetes and TLS
/// dependencies, so that it type-checks for macOS on any machine.
pub use telepolice_platform as platform;
