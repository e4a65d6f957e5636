//! Effects: everything that changes the world outside the agent's memory, each with the
//! preconditions that keep it safe.
//!
//! - [`cluster`]: talking to a session's cluster as it did, reading what it holds and acting
//!   with uid preconditions.
//! - [`helpers`]: a dead session's local helper processes, containers and temp dir.
//! - [`journal`]: durable, atomic storage of session records.
//! - [`local2`]: Telepresence 2's sockets and DNS files on the laptop (a stale connector
//!   socket removed; the root daemon's leftovers reported).
//! - [`manager`]: Telepresence 2's traffic-manager, through a port-forward (`Depart`).
//! - [`desktop`]: desktop notifications of repairs and of sessions needing a person.

pub mod cluster;
pub mod desktop;
pub mod helpers;
pub mod journal;
pub mod local2;
pub mod manager;
