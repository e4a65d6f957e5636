//! systemd-logind, over the system D-Bus: the machine is about to sleep, or has woken up;
//! and the delay inhibitor that holds a sleep back while live sessions end.
//!
//! # Guarantees
//! - The inhibitor is a file descriptor: logind holds the sleep back until it is closed or
//!   its own limit (`InhibitDelayMaxUSec`, 5 s by default) runs out. The agent closes it as
//!   soon as the sessions have ended, and never waits past logind's limit.
//! - Without a system bus or logind (containers, CI, macOS), nothing here is used: the
//!   daemon then notices resumes through its clock check only.
//!
//! # Testing
//! `DBUS_SYSTEM_BUS_ADDRESS` points the agent at another bus (the tests run a private
//! `dbus-daemon` with a stand-in logind).

use std::time::Duration;

use futures::StreamExt;

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    /// Takes an inhibitor lock, held as long as the returned descriptor is open.
    fn inhibit(
        &self,
        what: &str,
        who: &str,
        why: &str,
        mode: &str,
    ) -> zbus::Result<zbus::zvariant::OwnedFd>;

    /// How long logind waits for delay inhibitors, in microseconds.
    #[zbus(property, name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> zbus::Result<u64>;

    /// Sent with `true` before a sleep and with `false` after the resume.
    #[zbus(signal)]
    fn prepare_for_sleep(&self, start: bool) -> zbus::Result<()>;
}

/// What logind said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sleep {
    /// The machine is about to sleep.
    Going,
    /// The machine has woken up.
    Woke,
}

/// A connection to logind, listening for sleeps.
pub struct Logind {
    manager: ManagerProxy<'static>,
    signals: PrepareForSleepStream,
    inhibitor: Option<zbus::zvariant::OwnedFd>,
}

impl std::fmt::Debug for Logind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logind")
            .field("inhibiting", &self.inhibitor.is_some())
            .finish()
    }
}

/// How long connecting may take before the agent gives up on logind.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call to logind may take: the daemon's loop waits for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Logind {
    /// Connects to the system bus and subscribes to `PrepareForSleep`.
    ///
    /// # Errors
    /// A message for the log when there is no system bus, no logind, or no answer in time.
    pub async fn connect() -> Result<Self, String> {
        let connect = async {
            let conn = zbus::Connection::system().await?;
            let manager = ManagerProxy::builder(&conn)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?;
            let signals = manager.receive_prepare_for_sleep().await?;
            Ok::<_, zbus::Error>(Self {
                manager,
                signals,
                inhibitor: None,
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err(format!("logind is not available on the system bus: {e}")),
            Err(_) => Err(format!(
                "logind did not answer within {CONNECT_TIMEOUT:?} on the system bus"
            )),
        }
    }

    /// Takes a delay inhibitor for sleep, unless one is held already.
    ///
    /// # Errors
    /// Logind's refusal (a policy may forbid delay inhibitors), for the log.
    pub async fn hold(&mut self) -> Result<(), String> {
        if self.inhibitor.is_some() {
            return Ok(());
        }
        let ask = self.manager.inhibit(
            "sleep",
            "telepolice-agent",
            "ending live Telepresence sessions so that they clean up while the network is up",
            "delay",
        );
        let fd = match tokio::time::timeout(CALL_TIMEOUT, ask).await {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => return Err(format!("logind refused a delay inhibitor for sleep: {e}")),
            Err(_) => {
                return Err(format!(
                    "logind did not answer a request for a delay inhibitor within {CALL_TIMEOUT:?}"
                ));
            }
        };
        self.inhibitor = Some(fd);
        Ok(())
    }

    /// Lets the sleep go ahead; whether an inhibitor was held.
    pub fn release(&mut self) -> bool {
        self.inhibitor.take().is_some()
    }

    /// How long logind waits for delay inhibitors (5 s when it does not say in time).
    pub async fn delay_limit(&self) -> Duration {
        match tokio::time::timeout(CALL_TIMEOUT, self.manager.inhibit_delay_max_usec()).await {
            Ok(Ok(us)) if us > 0 => Duration::from_micros(us),
            _ => Duration::from_secs(5),
        }
    }

    /// The next sleep or resume; `None` when the bus connection is gone.
    pub async fn next(&mut self) -> Option<Sleep> {
        loop {
            let signal = self.signals.next().await?;
            match signal.args() {
                Ok(a) => {
                    return Some(if *a.start() {
                        Sleep::Going
                    } else {
                        Sleep::Woke
                    });
                }
                Err(e) => tracing::debug!("an unreadable PrepareForSleep from logind: {e}"),
            }
        }
    }
}
