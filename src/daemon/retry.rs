//! The pauses between tries of something that waits for a cluster: doubling from a first
//! pause to a cap, plus jitter, and cut short by a probe (a resume, a network change: see
//! `Ctx::probe_now`), though never closer than [`MIN_SPACING`] to the last try.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Woken tries are at least this far apart, however chatty the network is.
pub(super) const MIN_SPACING: Duration = Duration::from_millis(250);

/// The pause schedule of one retry loop.
#[derive(Debug)]
pub(super) struct Retry {
    first: Duration,
    max: Duration,
    jitter_ms: u32,
    next: Duration,
    woken: watch::Receiver<u64>,
}

impl Retry {
    /// Pauses from `first` doubling to `max`, each plus up to `jitter_ms` (so that several
    /// sessions do not probe in lockstep), cut short by `woken`.
    pub(super) fn new(
        first: Duration,
        max: Duration,
        jitter_ms: u32,
        woken: watch::Receiver<u64>,
    ) -> Self {
        Self {
            first,
            max,
            jitter_ms,
            next: first,
            woken,
        }
    }

    /// Waits before the next try, the last one having started at `tried`. After a full pause
    /// the next one doubles, up to `cap` (at least the schedule's own cap); after a wake the
    /// schedule starts again from the first pause.
    ///
    /// Cancel-safe: dropped mid-way, it leaves the schedule as it was.
    pub(super) async fn pause(&mut self, tried: Instant, cap: Duration) {
        self.pause_or(tried, cap, std::future::pending()).await;
    }

    /// As [`Self::pause`], also cut short (at once, and starting the schedule again) when
    /// `answered` completes: the server was seen taking connections again after refusing
    /// them (see [`super::knock`]).
    pub(super) async fn pause_or(
        &mut self,
        tried: Instant,
        cap: Duration,
        answered: impl std::future::Future<Output = ()>,
    ) {
        let jitter = match self.jitter_ms {
            0 => Duration::ZERO,
            j => Duration::from_millis(u64::from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
                    % j,
            )),
        };
        tokio::select! {
            _ = tokio::time::sleep(self.next + jitter) => {
                self.next = (self.next * 2).min(self.max.max(cap));
            }
            // A burst of network messages is one wake: `changed` coalesces.
            Ok(()) = self.woken.changed() => {
                tokio::time::sleep_until(tried + MIN_SPACING).await;
                self.next = self.first;
            }
            () = answered => {
                self.next = self.first;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_to_the_cap_and_a_wake_starts_them_again() {
        let (tx, rx) = watch::channel(0u64);
        let mut r = Retry::new(
            Duration::from_millis(500),
            Duration::from_millis(1500),
            0,
            rx,
        );
        let mut waited = Vec::new();
        for _ in 0..4 {
            let t = Instant::now();
            r.pause(t, Duration::ZERO).await;
            waited.push(t.elapsed().as_millis());
        }
        assert_eq!(waited, [500, 1000, 1500, 1500]);
        // A wake during the pause: the try comes at once (MIN_SPACING after the last one),
        // and the schedule starts again from 0.5 s.
        let t = Instant::now();
        {
            let pause = r.pause(t, Duration::ZERO);
            tokio::pin!(pause);
            tokio::select! {
                () = &mut pause => panic!("no full pause yet"),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            tx.send_modify(|n| *n += 1);
            pause.await;
        }
        assert_eq!(t.elapsed().as_millis(), 250);
        let t = Instant::now();
        r.pause(t, Duration::from_secs(30)).await;
        assert_eq!(t.elapsed().as_millis(), 500);
    }
}
