//! The integration tests: one binary, one module per area.
//!
//! - `emulator_kubectl`: the API emulator driven by the real `kubectl`.
//! - `emulator_kube`: the API emulator driven by kube-rs.
//! - `standin`: the Telepresence 0.x stand-in against the emulator.

mod emulator_kube;
mod emulator_kubectl;
mod standin;
mod util;
