//! The control socket: a Unix socket in the runtime dir through which `status` asks the
//! running daemon. Private to the user: the socket is 0600 in a 0700 directory, and the
//! daemon answers only peers with its own uid.
//!
//! Protocol: the client sends one line (`status`), the daemon answers one JSON document and
//! closes the connection.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tracing::{debug, warn};

use crate::daemon::waiting::Board;
use crate::effects::journal::Journal;

/// The socket's path in the runtime dir.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("telepolice-agent.sock")
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening the control socket {path}: {source}")]
pub struct ControlError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Binds the socket (replacing a stale one: the caller holds the per-user lock, so no
/// other daemon owns it) with mode 0600.
pub fn bind(runtime_dir: &Path) -> Result<UnixListener, ControlError> {
    let path = socket_path(runtime_dir);
    let err = |source| ControlError {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(&path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(listener)
}

/// What the daemon says about itself and its sessions; `waiting` maps the key of each
/// session whose repair waits for its cluster to since when, how many tries and why.
pub fn status_document(
    journal: &Journal,
    board: &Board,
    unfollowed: &crate::daemon::unfollowed::Board,
    sight: &crate::daemon::unfollowed::Sight,
    started: &str,
) -> Value {
    let (records, problems) = journal.load_all().unwrap_or_default();
    let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    problems.extend(journal.quarantine_warning());
    json!({
        "daemon": {
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "started": started,
        },
        "sessions": records,
        "waiting": board.snapshot(),
        "unfollowed": unfollowed.snapshot(),
        "sight": sight,
        "journal_problems": problems,
    })
}

/// Answers `status` requests until the task is dropped.
pub async fn serve(
    listener: UnixListener,
    journal: Journal,
    board: Board,
    unfollowed: crate::daemon::unfollowed::Board,
    sight: crate::daemon::unfollowed::Sight,
    uid: u32,
    started: String,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: do not spin; try again shortly.
                warn!("accepting a control connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let peer = stream.peer_cred().ok().map(|c| c.uid());
        if peer != Some(uid) {
            warn!(peer_uid = ?peer, "refusing a control connection from another user");
            continue;
        }
        let journal = journal.clone();
        let board = board.clone();
        let unfollowed = unfollowed.clone();
        let sight = sight.clone();
        let started = started.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            let read_line = reader.read_line(&mut line);
            if tokio::time::timeout(Duration::from_secs(5), read_line)
                .await
                .is_err()
            {
                return;
            }
            let answer = match line.trim() {
                "status" => status_document(&journal, &board, &unfollowed, &sight, &started),
                other => json!({"error": format!("unknown request {other:?}; expected `status`")}),
            };
            let mut bytes = answer.to_string().into_bytes();
            bytes.push(b'\n');
            let write = tokio::time::timeout(Duration::from_secs(5), write.write_all(&bytes));
            if let Ok(Err(e)) = write.await {
                debug!("control client went away: {e}");
            }
        });
    }
}

/// Asks the running daemon for its status; `None` when no daemon answers.
pub fn ask_status(runtime_dir: &Path) -> Option<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(runtime_dir)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"status\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    serde_json::from_str(&buf).ok()
}
