//! telepolice-agent: a user-level daemon that watches Telepresence sessions, records what
//! each is about to change in the cluster, and puts the cluster back when a session dies
//! without cleaning up.
//!
//! # Layout
//! - [`cli`]: the command line, parsed in two stages (pure parsing, then resolution).
//!
//! The watchdog itself (process discovery, the journal, the supervisor and the cleanup
//! planner) is not built yet; see the project's issues.

pub mod cli;
