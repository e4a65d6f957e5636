//! Knocking: while a repair waits for an API server that does not answer, a bare TCP
//! connect to it every [`KNOCK_INTERVAL`] tells the moment it takes connections again, so
//! the repair's next try comes then instead of at the end of its pause.
//!
//! A knock is a connect and a close, no TLS and no request: to a machine that refuses, one
//! SYN and its RST. One waiting repair costs 300 connects a minute for its first
//! [`FAST_FOR`] of waiting, then 60 ([`SLOW_INTERVAL`]), on top of its full tries (about 40
//! a minute at the 1.5 s cap). Knocks only ever cut a pause short after a refused knock was
//! followed by an answered one: a server that takes connections but fails requests (a load
//! balancer in front of a dead API server) is knocked at once per pause and then left to the
//! full tries' backoff, so knocking never turns into a stream of full requests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// The pause between knocks in the first minutes of a wait.
pub(super) const KNOCK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a wait is knocked at [`KNOCK_INTERVAL`].
pub(super) const FAST_FOR: Duration = Duration::from_secs(600);
/// The pause between knocks after that: a laptop off its VPN all afternoon should not wake
/// five times a second.
pub(super) const SLOW_INTERVAL: Duration = Duration::from_secs(1);
/// A name lookup longer than this gives up on knocking for this pause.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The host and port of an API server URL (`https://host[:port][/path]`), or `None` when it
/// has no host.
pub(super) fn host_port(server: &str) -> Option<(String, u16)> {
    let uri: http::Uri = server.parse().ok()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    Some((host.to_string(), port))
}

/// The addresses of `server`, looked up once per pause (so a dead DNS server is asked at the
/// full tries' pace, not the knocks'). Empty when the lookup fails or is slow.
pub(super) async fn resolve(server: &str) -> Vec<SocketAddr> {
    let Some((host, port)) = host_port(server) else {
        return Vec::new();
    };
    match tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => Vec::new(),
    }
}

/// Whether any of `addrs` takes a connection within `limit`.
async fn answered(addrs: &[SocketAddr], limit: Duration) -> bool {
    let each = limit / u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
    for addr in addrs {
        if let Ok(Ok(_stream)) = tokio::time::timeout(each, TcpStream::connect(addr)).await {
            return true;
        }
    }
    false
}

/// Knocks at `addrs` until a knock is answered after one that was not; never returns when
/// there is nothing to knock at, or when the first knock is answered (the server takes
/// connections, so it is the requests that fail: the caller's own backoff applies).
/// `waiting_since` is when the repair's first try failed, for the switch to
/// [`SLOW_INTERVAL`].
pub(super) async fn until_answered(addrs: &[SocketAddr], waiting_since: Instant) {
    if addrs.is_empty() {
        return std::future::pending().await;
    }
    until_edge(waiting_since, |limit| answered(addrs, limit)).await;
}

/// The rule of [`until_answered`], with `knock(limit)` saying whether one knock was
/// answered within `limit`.
async fn until_edge<F, Fut>(waiting_since: Instant, mut knock: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut refused = false;
    loop {
        let start = Instant::now();
        let interval = if start.duration_since(waiting_since) < FAST_FOR {
            KNOCK_INTERVAL
        } else {
            SLOW_INTERVAL
        };
        match (knock(interval).await, refused) {
            (true, true) => return,
            (true, false) => return std::future::pending().await,
            (false, _) => refused = true,
        }
        tokio::time::sleep_until(start + interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_and_port_come_from_the_server_url() {
        let cases = [
            ("https://127.0.0.1:6443", Some(("127.0.0.1", 6443))),
            ("https://api.example.test", Some(("api.example.test", 443))),
            ("http://localhost:8080/prefix", Some(("localhost", 8080))),
            ("https://[::1]:6443", Some(("::1", 6443))),
            ("not a url", None),
        ];
        for (server, want) in cases {
            let got = host_port(server);
            assert_eq!(
                got.as_ref().map(|(h, p)| (h.as_str(), *p)),
                want,
                "{server}"
            );
        }
    }

    /// A knock that answers as `script` says, one entry per knock (then as the last one),
    /// counting the knocks.
    fn scripted<'a>(
        script: &'static [bool],
        count: &'a std::cell::Cell<usize>,
    ) -> impl FnMut(Duration) -> std::future::Ready<bool> + 'a {
        move |_| {
            let i = count.get();
            count.set(i + 1);
            std::future::ready(script[i.min(script.len() - 1)])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_after_a_refusal_ends_the_wait_and_a_first_answer_never_does() {
        let knocks = std::cell::Cell::new(0);
        let t = Instant::now();
        until_edge(t, scripted(&[false, false, true], &knocks)).await;
        assert_eq!(knocks.get(), 3);
        assert_eq!(t.elapsed(), KNOCK_INTERVAL * 2, "one knock per interval");

        // Answered at once: the requests are what fails; knocking gives way to the backoff.
        let knocks = std::cell::Cell::new(0);
        let never = tokio::time::timeout(
            KNOCK_INTERVAL * 50,
            until_edge(Instant::now(), scripted(&[true], &knocks)),
        )
        .await;
        assert!(never.is_err(), "returned though never refused");
        assert_eq!(knocks.get(), 1, "one knock, then none");

        // After FAST_FOR of waiting, one knock a second.
        let knocks = std::cell::Cell::new(0);
        let t = Instant::now();
        until_edge(t - FAST_FOR, scripted(&[false, true], &knocks)).await;
        assert_eq!(t.elapsed(), SLOW_INTERVAL);
    }

    #[tokio::test]
    async fn a_listener_answers_a_knock() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        assert!(answered(&[addr], Duration::from_secs(5)).await);
        assert!(
            !answered(&[], Duration::from_secs(5)).await,
            "nothing to knock at"
        );
    }
}
