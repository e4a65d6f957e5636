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
    let mut refused = false;
    loop {
        let start = Instant::now();
        let interval = if start.duration_since(waiting_since) < FAST_FOR {
            KNOCK_INTERVAL
        } else {
            SLOW_INTERVAL
        };
        match (answered(addrs, interval).await, refused) {
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

    #[tokio::test]
    async fn a_knock_answered_after_a_refused_one_returns_and_a_first_answer_never_does() {
        // A port nobody listens on: bind, learn the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        let knocking = tokio::spawn(async move { until_answered(&[addr], started).await });
        tokio::time::sleep(KNOCK_INTERVAL * 3).await;
        assert!(!knocking.is_finished(), "returned while refused");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the port again");
        tokio::time::timeout(Duration::from_secs(10), knocking)
            .await
            .expect("a knock answered after refused ones returns")
            .expect("the knocking task ends");

        // The server answered from the first knock: the requests are what fails, and
        // knocking gives way to the caller's backoff.
        let first =
            tokio::time::timeout(KNOCK_INTERVAL * 5, until_answered(&[addr], Instant::now())).await;
        assert!(first.is_err(), "returned though never refused");
        drop(listener);
    }
}
