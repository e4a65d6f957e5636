//! What a laptop does to a daemon without asking: it sleeps and wakes, and its network
//! changes. Both matter to the agent because a repair that waits for an unreachable
//! cluster should try again the moment either happens.
//!
//! - [`suspended_total`]: how long the machine has been suspended since boot, read from two
//!   clocks of which only one runs while suspended. A daemon that samples it on a timer sees
//!   it jump after a resume.
//! - [`NetworkChanges`]: a stream of "the network changed" (links, addresses, routes).
//!
//! # Caveats
//! - Linux reads `CLOCK_BOOTTIME` against `CLOCK_MONOTONIC`, both exact. Other systems read
//!   `CLOCK_MONOTONIC` (which counts sleep on macOS) against the process's `Instant` (which
//!   does not); that answer is only meaningful from the first call on, which is all a
//!   detector of jumps needs.
//! - Network changes come from rtnetlink on Linux. Elsewhere [`NetworkChanges::open`]
//!   answers [`crate::PlatformError::Unsupported`]: the macOS system configuration store needs a C
//!   API that this crate (no `unsafe`) cannot call.

use std::time::Duration;

use crate::Result;

/// The time the machine has spent suspended since boot (Linux), or since the first call
/// (other systems); it only ever grows, and grows by the length of each suspend.
pub fn suspended_total() -> Duration {
    imp::suspended_total()
}

/// A subscription to the kernel's network changes: links going up or down, addresses and
/// routes added or removed.
#[derive(Debug)]
pub struct NetworkChanges {
    #[cfg(target_os = "linux")]
    socket: tokio::io::unix::AsyncFd<rustix::fd::OwnedFd>,
}

impl NetworkChanges {
    /// Subscribes.
    ///
    /// # Errors
    /// [`crate::PlatformError::NetworkEvents`] if the kernel refuses the subscription;
    /// [`crate::PlatformError::Unsupported`] off Linux.
    ///
    /// # Panics
    /// If called outside a tokio runtime (the socket is registered with its reactor).
    pub fn open() -> Result<Self> {
        imp::open()
    }

    /// Waits for the next change, then swallows whatever else is already queued (one
    /// change usually comes as a burst of messages) and returns.
    ///
    /// Cancel-safe.
    ///
    /// # Errors
    /// [`crate::PlatformError::NetworkEvents`] if reading fails; the subscription is then
    /// best dropped.
    pub async fn next(&mut self) -> Result<()> {
        imp::next(self).await
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::time::Duration;

    use rustix::io::Errno;
    use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType, netlink};
    use rustix::time::{ClockId, Timespec, clock_gettime};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::NetworkChanges;
    use crate::{PlatformError, Result};

    // rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4/IPv6 addresses and routes.
    const RTMGRP_LINK: u32 = 0x1;
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    const RTMGRP_IPV6_IFADDR: u32 = 0x100;
    const RTMGRP_IPV6_ROUTE: u32 = 0x400;

    fn duration(t: Timespec) -> Duration {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }

    pub(super) fn suspended_total() -> Duration {
        // Monotonic first: a suspend between the two reads then shows as more suspended
        // time, never as less.
        let awake = duration(clock_gettime(ClockId::Monotonic));
        let since_boot = duration(clock_gettime(ClockId::Boottime));
        since_boot.saturating_sub(awake)
    }

    fn error(source: Errno) -> PlatformError {
        PlatformError::NetworkEvents {
            source: source.into(),
        }
    }

    pub(super) fn open() -> Result<NetworkChanges> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            // NETLINK_ROUTE is protocol 0, the default.
            None,
        )
        .map_err(error)?;
        let groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV6_ROUTE;
        rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, groups)).map_err(error)?;
        // The safe constructor, deprecated in favour of an `unsafe` one; an `OwnedFd` moved
        // in keeps its contract by construction (see `wait_for_exit` in linux.rs).
        #[allow(deprecated)]
        let socket = AsyncFd::with_interest(fd, Interest::READABLE)
            .map_err(|source| PlatformError::NetworkEvents { source })?;
        Ok(NetworkChanges { socket })
    }

    pub(super) async fn next(changes: &mut NetworkChanges) -> Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut ready = changes
                .socket
                .readable()
                .await
                .map_err(|source| PlatformError::NetworkEvents { source })?;
            let mut got = false;
            loop {
                match rustix::net::recv(ready.get_inner(), &mut buf[..], RecvFlags::DONTWAIT) {
                    Ok(_) => got = true,
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR) => {}
                    // The kernel dropped messages because we were slow: still a change.
                    Err(Errno::NOBUFS) => got = true,
                    Err(e) => return Err(error(e)),
                }
            }
            ready.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use rustix::time::{ClockId, clock_gettime};

    use super::NetworkChanges;
    use crate::{PlatformError, Result};

    fn with_sleep() -> Duration {
        let t = clock_gettime(ClockId::Monotonic);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }

    pub(super) fn suspended_total() -> Duration {
        static BASE: OnceLock<(Duration, Instant)> = OnceLock::new();
        let (base_clock, base_instant) = *BASE.get_or_init(|| (with_sleep(), Instant::now()));
        let awake = base_instant.elapsed();
        with_sleep()
            .saturating_sub(base_clock)
            .saturating_sub(awake)
    }

    pub(super) fn open() -> Result<NetworkChanges> {
        Err(PlatformError::Unsupported {
            operation: "following network changes",
        })
    }

    pub(super) async fn next(_: &mut NetworkChanges) -> Result<()> {
        Err(PlatformError::Unsupported {
            operation: "following network changes",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspended_time_never_goes_back() {
        let a = suspended_total();
        std::thread::sleep(Duration::from_millis(20));
        let b = suspended_total();
        assert!(
            b + Duration::from_millis(1) >= a,
            "suspended time went from {a:?} back to {b:?}"
        );
        // Nothing suspends a test run for a second between two reads 20 ms apart.
        assert!(
            b.saturating_sub(a) < Duration::from_secs(1),
            "20 ms awake read as {:?} suspended",
            b.saturating_sub(a)
        );
    }

    /// Set in the copy of this test binary that runs inside a private network namespace.
    #[cfg(target_os = "linux")]
    const IN_NAMESPACE: &str = "TELEPOLICE_TEST_IN_NETNS";

    /// A link going up is a change: seen in a network namespace of the test's own (made with
    /// `unshare --net`, where loopback starts down), so that the host's network is untouched.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_link_coming_up_is_a_network_change() {
        if std::env::var_os(IN_NAMESPACE).is_some() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut changes = NetworkChanges::open().expect("subscribed to rtnetlink");
                let up = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .expect("`ip` runs (Debian: apt-get install iproute2)");
                assert!(up.success(), "ip link set lo up: {up}");
                tokio::time::timeout(Duration::from_secs(20), changes.next())
                    .await
                    .expect("a change is seen within 20 s")
                    .expect("reading the change");
            });
            return;
        }
        let exe = std::env::current_exe().expect("the test binary");
        let run = |prefix: &[&str]| {
            std::process::Command::new("unshare")
                .args(prefix)
                .arg(&exe)
                .args([
                    "--exact",
                    "events::tests::a_link_coming_up_is_a_network_change",
                    "--nocapture",
                ])
                .env(IN_NAMESPACE, "1")
                .output()
        };
        // As root a network namespace is enough; otherwise a user namespace makes one.
        let attempts = [vec!["--net"], vec!["--user", "--map-root-user", "--net"]];
        let mut why = Vec::new();
        for prefix in &attempts {
            match run(prefix) {
                Ok(out) if out.status.success() => {
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        text.contains("1 passed"),
                        "the test did not run inside the namespace: {text}"
                    );
                    return;
                }
                Ok(out) => why.push(format!(
                    "unshare {}: {}\n{}{}",
                    prefix.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(e) => why.push(format!("unshare {}: {e}", prefix.join(" "))),
            }
        }
        panic!(
            "could not see a network change in a private network namespace (needs `unshare` \
             from util-linux, `ip` from iproute2, and root or user namespaces):\n{}",
            why.join("\n")
        );
    }
}
