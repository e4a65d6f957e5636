//! Desktop notifications: a session was repaired, or needs a person. Sent with the
//! system's own tool (`notify-send` on Linux, `osascript` on macOS), never waited for; where
//! there is no such tool or no desktop, a debug line says so once and nothing else happens.
//! Off with `notifications = false`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::debug;

use crate::session::{SessionRecord, State};

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The title.
    pub summary: String,
    /// The text.
    pub body: String,
    /// Whether it needs a person.
    pub urgent: bool,
}

/// What to tell a person about a session that reached a final state; `None` for one that
/// ended by itself (nothing happened that they need to know).
pub fn message(rec: &SessionRecord) -> Option<Message> {
    let place = format!("{}/{}", rec.cluster.context, rec.cluster.namespace);
    match rec.state {
        State::Cleaned if rec.tel2.is_some() => Some(Message {
            summary: format!("Telepresence 2 session ended: {}", rec.target()),
            body: format!(
                "{place}: its connector had died; the traffic-manager no longer holds it or its intercepts"
            ),
            urgent: false,
        }),
        State::Cleaned => {
            // The changes to the cluster, without their preconditions: "scale deployment/app
            // to 2", "delete pod/app-1234".
            let done: Vec<&str> = rec
                .actions
                .iter()
                .filter(|a| {
                    a.outcome == "done"
                        && (a.action.starts_with("scale ") || a.action.starts_with("delete "))
                })
                .map(|a| a.action.split(" (uid").next().unwrap_or(&a.action))
                .collect();
            Some(Message {
                summary: format!("Telepresence session repaired: {}", rec.target()),
                body: if done.is_empty() {
                    format!("{place}: the cluster is back as it was")
                } else {
                    format!("{place}: {}", done.join("; "))
                },
                urgent: false,
            })
        }
        State::NeedsAttention => Some(Message {
            summary: format!("Telepresence session needs attention: {}", rec.target()),
            body: format!(
                "{place}: {} (see `telepolice-agent status -v`)",
                rec.history.last().map_or("", |t| t.reason.as_str())
            ),
            urgent: true,
        }),
        _ => None,
    }
}

/// The command that shows `m` on this system.
fn command(m: &Message) -> std::process::Command {
    if cfg!(target_os = "macos") {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut c = std::process::Command::new("osascript");
        c.arg("-e").arg(format!(
            "display notification {} with title {}",
            quote(&m.body),
            quote(&m.summary)
        ));
        c
    } else {
        let mut c = std::process::Command::new("notify-send");
        c.arg("--app-name=telepolice-agent")
            .arg(if m.urgent {
                "--urgency=critical"
            } else {
                "--urgency=normal"
            })
            .arg("--")
            .arg(&m.summary)
            .arg(&m.body);
        c
    }
}

/// Shows `m` without waiting for it (the tool is reaped in the background).
pub fn show(m: &Message) {
    static MISSING_SAID: AtomicBool = AtomicBool::new(false);
    let mut cmd = tokio::process::Command::from(command(m));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    match cmd.spawn() {
        Ok(mut child) => {
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                    Ok(Ok(s)) if !s.success() => {
                        debug!("the desktop notification was not shown ({s}): no desktop session?");
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = child.start_kill();
                    }
                }
            });
        }
        Err(e) => {
            if !MISSING_SAID.swap(true, Ordering::Relaxed) {
                debug!("no desktop notifications: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_lists_what_was_done_and_attention_says_why() {
        let mut rec = SessionRecord::test().in_state(State::Active, "following");
        rec.act("scale deployment/app to 2 (uid a, if still at 0)", "done");
        rec.act("stop local helper 42 `kubectl logs -f`", "done");
        rec.act("delete service/app-1 (uid s)", "refused: 409");
        rec.act("delete pod/app-1 (uid u)", "done");
        rec.transition(State::Cleaned, "repaired");
        let m = message(&rec).expect("a message");
        assert!(m.summary.contains("repaired"), "{m:?}");
        assert!(
            m.body
                .ends_with(": scale deployment/app to 2; delete pod/app-1"),
            "{m:?}"
        );
        assert!(!m.urgent);
        rec.transition(State::NeedsAttention, "deployment/app was rescaled");
        let m = message(&rec).expect("a message");
        assert!(
            m.urgent && m.body.contains("deployment/app was rescaled"),
            "{m:?}"
        );
        rec.transition(State::Ended, "Telepresence cleaned up");
        assert_eq!(message(&rec), None, "nothing to tell");
    }

    #[test]
    fn an_ended_2x_session_says_its_intercepts_are_gone() {
        let mut rec = SessionRecord::test();
        rec.tel2 = Some(crate::session::Tel2 {
            daemon_id: Some("dev-ns".into()),
            session_id: Some("5e55".into()),
            ..Default::default()
        });
        rec.transition(State::Cleaned, "ended session 5e55");
        let m = message(&rec).expect("a message");
        assert_eq!(
            m.summary,
            "Telepresence 2 session ended: 2.x dev-ns session 5e55"
        );
        assert!(
            m.body.starts_with("dev/ns: its connector had died"),
            "{m:?}"
        );
    }

    #[test]
    fn the_text_is_passed_as_arguments_not_interpreted() {
        let m = Message {
            summary: "-x `rm` $(id)".to_string(),
            body: "say \"hi\" \\".to_string(),
            urgent: false,
        };
        let c = command(&m);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if cfg!(target_os = "macos") {
            assert!(args[1].contains("\\\"hi\\\" \\\\"), "{args:?}");
        } else {
            assert_eq!(&args[2..], ["--", "-x `rm` $(id)", "say \"hi\" \\"]);
        }
    }
}
