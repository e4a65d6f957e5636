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

/// A request for a delay inhibitor that logind has not answered yet, and since when.
type Pending = (
    tokio::task::JoinHandle<zbus::Result<zbus::zvariant::OwnedFd>>,
    tokio::time::Instant,
);

/// A connection to logind, listening for sleeps.
pub struct Logind {
    manager: ManagerProxy<'static>,
    signals: PrepareForSleepStream,
    inhibitor: Option<zbus::zvariant::OwnedFd>,
    /// Asked for and not answered yet: logind asks polkit, which may first have to start
    /// (seconds on a slow machine), and the daemon's loop must not wait for that.
    pending: Option<Pending>,
}

impl std::fmt::Debug for Logind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logind")
            .field("inhibiting", &self.inhibitor.is_some())
            .field("asking", &self.pending.is_some())
            .finish()
    }
}

/// How long connecting may take before the agent gives up on logind.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call to logind may take: the daemon's loop waits for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// An inhibitor granted later than this is worth a line in the log.
const SLOW_ANSWER: Duration = Duration::from_secs(2);

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
                pending: None,
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

    /// Asks for a delay inhibitor for sleep, unless one is held or asked for already; the
    /// answer comes in through [`Self::next`] (logged there: a refusal, or a late grant).
    pub fn hold(&mut self) {
        if self.inhibitor.is_some() || self.pending.is_some() {
            return;
        }
        let manager = self.manager.clone();
        let ask = tokio::spawn(async move {
            manager
                .inhibit(
                    "sleep",
                    "telepolice-agent",
                    "ending live Telepresence sessions so that they clean up while the network is up",
                    "delay",
                )
                .await
        });
        self.pending = Some((ask, tokio::time::Instant::now()));
    }

    /// Lets the sleep go ahead, and stops asking; whether an inhibitor was held.
    pub fn release(&mut self) -> bool {
        if let Some((ask, _)) = self.pending.take() {
            ask.abort();
        }
        self.inhibitor.take().is_some()
    }

    /// Whether a delay inhibitor is held now.
    pub fn holds(&self) -> bool {
        self.inhibitor.is_some()
    }

    /// Takes in logind's answer to [`Self::hold`].
    fn answered(
        &mut self,
        answer: Result<zbus::Result<zbus::zvariant::OwnedFd>, tokio::task::JoinError>,
        asked: tokio::time::Instant,
    ) {
        let took = asked.elapsed();
        match answer {
            Ok(Ok(fd)) => {
                self.inhibitor = Some(fd);
                if took > SLOW_ANSWER {
                    tracing::info!(
                        "holding a delay inhibitor for sleep (logind took {:.1} s to grant it)",
                        took.as_secs_f64()
                    );
                } else {
                    tracing::debug!("holding a delay inhibitor for sleep");
                }
            }
            Ok(Err(e)) => tracing::warn!(
                "logind refused a delay inhibitor for sleep: {e}; with on_sleep = \"end-sessions\" the sessions are still sent SIGTERM as a sleep begins, but nothing holds the sleep back for their cleanup: what they leave is repaired after the resume"
            ),
            Err(e) if e.is_cancelled() => {}
            Err(e) => tracing::warn!("asking logind for a delay inhibitor failed: {e}"),
        }
    }

    /// How long logind waits for delay inhibitors (5 s when it does not say in time).
    pub async fn delay_limit(&self) -> Duration {
        match tokio::time::timeout(CALL_TIMEOUT, self.manager.inhibit_delay_max_usec()).await {
            Ok(Ok(us)) if us > 0 => Duration::from_micros(us),
            _ => Duration::from_secs(5),
        }
    }

    /// The next sleep or resume; `None` when the bus connection is gone. Meanwhile takes in
    /// the answer to a pending [`Self::hold`]. Cancel-safe.
    pub async fn next(&mut self) -> Option<Sleep> {
        loop {
            let signal = tokio::select! {
                signal = self.signals.next() => signal?,
                answer = async {
                    match self.pending.as_mut() {
                        Some((ask, _)) => ask.await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some((_, asked)) = self.pending.take() {
                        self.answered(answer, asked);
                    }
                    continue;
                }
            };
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
