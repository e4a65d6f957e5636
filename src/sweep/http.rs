//! The sweeper's small HTTP face: `/healthz` (the process answers: liveness), `/readyz` (its
//! watches have listed once: readiness), `/status` (text for a person, through
//! `kubectl port-forward`). HTTP/1.0-style: one request per connection, then closed.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::elect::Leadership;
use super::{SharedStatus, lock};

/// Serves until aborted; `leadership` says, at each request, whether this replica leads.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: SharedStatus,
    leadership: Leadership,
) {
    loop {
        let mut conn = match listener.accept().await {
            Ok((c, _)) => c,
            // Out of file descriptors, say: not a reason to spin.
            Err(e) => {
                tracing::warn!("accepting a status connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let status = status.clone();
        let leads = leadership.leads();
        tokio::spawn(async move {
            let Some(head) = read_head(&mut conn).await else {
                return;
            };
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = answer(path, &status, leads);
            let reply = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Reads a request's head (up to its blank line; 8 KiB and 5 s at most).
async fn read_head(conn: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The status line and body for `path`.
pub fn answer(path: &str, status: &SharedStatus, leads: bool) -> (&'static str, String) {
    let s = lock(status);
    match path {
        "/healthz" => ("200 OK", "ok\n".to_string()),
        "/readyz" if s.synced => ("200 OK", "ready\n".to_string()),
        "/readyz" => (
            "503 Service Unavailable",
            "the heartbeat leases have not been listed yet\n".to_string(),
        ),
        "/status" => {
            let mut out = format!(
                "sweeper {}: {}\n",
                s.identity,
                if leads { "leading" } else { "standing by" }
            );
            out.push_str(&format!("sessions ({}):\n", s.sessions.len()));
            for l in &s.sessions {
                out.push_str(&format!("  {l}\n"));
            }
            out.push_str(&format!("unrecorded leftovers ({}):\n", s.leftovers.len()));
            for l in &s.leftovers {
                out.push_str(&format!("  {l}\n"));
            }
            out.push_str("done:\n");
            for l in &s.done {
                out.push_str(&format!("  {l}\n"));
            }
            ("200 OK", out)
        }
        _ => (
            "404 Not Found",
            "try /status, /healthz or /readyz\n".to_string(),
        ),
    }
}
