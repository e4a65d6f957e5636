//! The integration tests: one binary, one module per area.
//!
//! - `agent`: the real binary repairing sessions of the stand-in against the emulator.
//! - `crash`: the agent killed at each failpoint, or losing the cluster mid-repair, and
//!   restarted: every repair write carried out exactly once.
//! - `debian_root`: Debian roots made with debootstrap (cached): 13 (systemd 257, and the
//!   VM's) and 12 with systemd 254 from bookworm-backports.
//! - `discovery`: sessions found wherever Telepresence lives and however it is launched
//!   (a replaced program, one not configured or on PATH, a shell wrapper).
//! - `doctor`: `telepolice-agent doctor` against the emulator, a running agent and the
//!   stand-in.
//! - `emulator_kubectl`: the API emulator driven by the real `kubectl`.
//! - `emulator_kube`: the API emulator driven by kube-rs.
//! - `emulator_portforward`: the emulator's `pods/portforward`, driven by kube-rs's port-forward
//!   and by the real `kubectl port-forward`.
//! - `example`: the standalone emulator example, driven through stdin.
//! - `fuzz`: generated-input tests of every parser of untrusted input (see its module doc).
//! - `manager`: the agent's way to the Telepresence 2 traffic-manager (port-forward, gRPC)
//!   against the emulator and the traffic-manager stand-in.
//! - `manual`: `completions` and `man` run as a packager runs them.
//! - `real_init`: the installed service under a real systemd (252, 254, 257) run as PID 1 in
//!   namespaces.
//! - `real_sessions`: what the real 0.109 showed the stand-in had missed (/tmp, twins
//!   sharing one log, `--version`, a shell dying early), against the agent.
//! - `service`: the generated unit and plist, `install`/`uninstall` with stand-ins for
//!   `systemctl` and `launchctl`, and the daemon's readiness and watchdog notifications.
//! - `sleep`: sleeps announced by (a stand-in for) logind on a private D-Bus.
//! - `standin`: the Telepresence 0.x stand-in against the emulator.
//! - `sweep`: team mode: laptop agents' facts and heartbeats, and `telepolice-agent sweep`
//!   run as in a pod (leader election, repairs after the grace, fencing, leftovers).
//! - `telepresence2`: Telepresence 2 end to end: the agent following the connector stand-in,
//!   ending a dead connector's session in the traffic-manager stand-in.
//! - `traffic_manager`: the Telepresence 2 traffic-manager stand-in's rules, over gRPC.
//! - `vm_sleep`: a real suspend and a lost link, in a Debian 13 VM booted under qemu.

mod agent;
mod crash;
mod debian_root;
mod discovery;
mod doctor;
mod emulator_kube;
mod emulator_kubectl;
mod emulator_portforward;
mod example;
mod fuzz;
mod manager;
mod manual;
mod real_init;
mod real_sessions;
mod service;
mod sleep;
mod standin;
mod sweep;
mod telepresence2;
mod traffic_manager;
mod util;
mod vm_sleep;
