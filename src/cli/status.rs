//! `status` and `history`: the journal rendered for a person (a table) or a program (JSON).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::daemon::waiting::Waiting;
use crate::session::{SessionRecord, State};

/// Which sessions `history` shows: all, or those its filters keep (pure).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only sessions in this state.
    pub state: Option<State>,
    /// Only sessions whose last change is at or after this.
    pub since: Option<jiff::Timestamp>,
    /// Only the session with this key or Telepresence id (or a prefix of either).
    pub session: Option<String>,
}

impl HistoryFilter {
    /// From `history`'s options: a state name (any case), a span back from `now` (`2h`,
    /// `3d`, `1w`) or a time (RFC 3339), a session.
    ///
    /// # Errors
    /// What is wrong with an option, and what it takes.
    pub fn parse(
        state: Option<&str>,
        since: Option<&str>,
        session: Option<String>,
        now: jiff::Timestamp,
    ) -> Result<Self, String> {
        let state = match state {
            None => None,
            Some(name) => Some(
                State::ALL
                    .into_iter()
                    .find(|s| format!("{s:?}").eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        let names: Vec<String> =
                            State::ALL.iter().map(|s| format!("{s:?}")).collect();
                        format!("--state {name:?}: not a state; one of {}", names.join(", "))
                    })?,
            ),
        };
        let since = match since {
            None => None,
            Some(text) => Some(since_time(text, now).ok_or_else(|| {
                format!(
                    "--since {text:?}: give a span back from now (30m, 2h, 3d, 1w) or a time (2026-12-03T10:00:00Z)"
                )
            })?),
        };
        Ok(Self {
            state,
            since,
            session: session.filter(|s| !s.is_empty()),
        })
    }

    /// Whether `r` is shown.
    pub fn keeps(&self, r: &SessionRecord) -> bool {
        let changed = r
            .history
            .last()
            .and_then(|t| t.at.parse::<jiff::Timestamp>().ok());
        self.state.is_none_or(|s| r.state == s)
            && self
                .since
                .is_none_or(|cutoff| changed.is_some_and(|at| at >= cutoff))
            && self.session.as_deref().is_none_or(|want| {
                r.key.starts_with(want)
                    || r.telepresence_id
                        .as_deref()
                        .is_some_and(|id| id.starts_with(want))
            })
    }
}

/// `--since`'s time: `now` minus a span, or a time as written.
fn since_time(text: &str, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Some(at);
    }
    let span: jiff::Span = text.trim().parse().ok()?;
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .checked_sub(span)
        .ok()
        .map(|z| z.timestamp())
}

/// Whether a record belongs in `status` (live or needing a person) or only in `history`.
pub fn is_current(r: &SessionRecord) -> bool {
    !matches!(r.state, State::Ended | State::Cleaned)
}

/// `status`'s section for the sessions repaired in the last 24 hours (before `now`), newest
/// first, one line each; empty when there are none.
pub fn recent_repairs(records: &[SessionRecord], now: jiff::Timestamp) -> String {
    let mut recent: Vec<(jiff::Timestamp, &SessionRecord)> = records
        .iter()
        .filter(|r| r.state == State::Cleaned)
        .filter_map(|r| Some((r.history.last()?.at.parse::<jiff::Timestamp>().ok()?, r)))
        .filter(|(at, _)| now.duration_since(*at).as_secs() < 86_400)
        .collect();
    if recent.is_empty() {
        return String::new();
    }
    recent.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut t = String::from("\nRepaired in the last 24 hours:\n");
    for (at, r) in recent {
        t.push_str(&format!(
            "  {} {} in {}/{} (session {}): {}\n",
            at.strftime("%Y-%m-%d %H:%M:%S"),
            r.target(),
            r.cluster.context,
            r.cluster.namespace,
            r.key,
            r.repair_summary()
        ));
    }
    t
}

fn age(at: Option<&str>) -> String {
    let Some(t) = at.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "?".to_string();
    };
    let s = jiff::Timestamp::now().duration_since(t).as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn last_action(r: &SessionRecord) -> String {
    match (r.actions.last(), r.history.last()) {
        (Some(a), _) if r.state == State::Cleaned || r.state == State::CleaningUp => {
            format!("{}: {}", a.action, a.outcome)
        }
        (_, Some(t)) => t.reason.clone(),
        (Some(a), None) => format!("{}: {}", a.action, a.outcome),
        (None, None) => String::new(),
    }
}

/// A table of sessions: state, target, cluster/namespace, age, last action (or, for a
/// repair waiting for its cluster, since when and how many tries).
pub fn table(records: &[&SessionRecord], waiting: &HashMap<String, Waiting>) -> String {
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.key.clone(),
                r.state.as_str().to_string(),
                r.target(),
                format!("{}/{}", r.cluster.context, r.cluster.namespace),
                age(r.seen_at()),
                waiting
                    .get(&r.key)
                    .map_or_else(|| last_action(r), Waiting::summary),
            ]
        })
        .collect();
    let header = [
        "SESSION",
        "STATE",
        "TARGET",
        "CONTEXT/NAMESPACE",
        "AGE",
        "LAST",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 6]| {
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, header);
    for row in &rows {
        line(
            &mut out,
            [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]],
        );
    }
    out
}

/// The detail of one session: its history and actions, for `history` and `status -v`,
/// and whether its repair waits for the cluster.
pub fn detail(r: &SessionRecord, waiting: Option<&Waiting>) -> String {
    let mut out = format!(
        "session {} ({}), {} in {}/{}, server {}\n",
        r.key,
        r.state.as_str(),
        r.target(),
        r.cluster.context,
        r.cluster.namespace,
        if r.cluster.server.is_empty() {
            "?"
        } else {
            &r.cluster.server
        }
    );
    if let Some(id) = &r.telepresence_id {
        let _ = writeln!(out, "  telepresence session id {id}");
    }
    if let Some(o) = &r.original {
        let _ = writeln!(
            out,
            "  original deployment/{} replicas {} ({:?})",
            o.name,
            o.replicas.map_or("unknown".to_string(), |n| n.to_string()),
            o.source
        );
    }
    if let Some(t) = &r.tel2 {
        let _ = writeln!(
            out,
            "  telepresence 2 daemon {}, cache {}, traffic-manager in {}",
            t.daemon_id.as_deref().unwrap_or("?"),
            t.cache_dir.display(),
            t.manager_namespace
        );
        if let Some(id) = &t.session_id {
            let _ = writeln!(
                out,
                "  traffic-manager session {id} (cluster id {}), cached in {}",
                t.cluster_id.as_deref().unwrap_or("?"),
                t.session_file
                    .as_deref()
                    .map_or_else(|| "?".to_string(), |p| p.display().to_string())
            );
        }
        for i in &t.intercepts {
            let _ = writeln!(out, "  intercept {i}");
        }
    }
    for p in &r.proxies {
        let _ = writeln!(
            out,
            "  proxy {}/{} uid {}",
            p.kind.resource(),
            p.name,
            p.uid
        );
    }
    for t in &r.history {
        let _ = writeln!(out, "  {} {:<14} {}", t.at, t.state.as_str(), t.reason);
    }
    for a in &r.actions {
        let _ = writeln!(out, "  {} action: {} -> {}", a.at, a.action, a.outcome);
    }
    if let Some(w) = waiting {
        let _ = writeln!(out, "  {}", w.summary());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(r: SessionRecord, when: &str) -> SessionRecord {
        let mut r = r;
        if let Some(t) = r.history.last_mut() {
            t.at = when.to_string();
        }
        r
    }

    #[test]
    fn history_filters_keep_what_they_name() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().expect("a time");
        let mut cleaned = at(
            SessionRecord::test()
                .with_process(10, 1)
                .in_state(State::Cleaned, "repaired"),
            "2026-12-03T11:00:00Z",
        );
        cleaned.telepresence_id = Some("a23f09ad".into());
        let old = at(
            SessionRecord::test()
                .with_process(11, 1)
                .in_state(State::NeedsAttention, "refused"),
            "2026-11-20T11:00:00Z",
        );
        let records = [cleaned.clone(), old.clone()];
        let kept = |state: Option<&str>, since: Option<&str>, session: Option<&str>| {
            let f =
                HistoryFilter::parse(state, since, session.map(String::from), now).expect("valid");
            records
                .iter()
                .filter(|r| f.keeps(r))
                .map(|r| r.key.clone())
                .collect::<Vec<_>>()
        };
        let (c, o) = (&cleaned.key, &old.key);
        assert_eq!(kept(None, None, None), [c.as_str(), o.as_str()]);
        assert_eq!(kept(Some("cleaned"), None, None), [c.as_str()]);
        assert_eq!(kept(Some("NeedsAttention"), None, None), [o.as_str()]);
        assert_eq!(kept(None, Some("2h"), None), [c.as_str()]);
        assert_eq!(kept(None, Some("3w"), None), [c.as_str(), o.as_str()]);
        assert_eq!(kept(None, Some("2026-12-01T00:00:00Z"), None), [c.as_str()]);
        assert_eq!(kept(None, None, Some("a23f")), [c.as_str()]);
        assert_eq!(kept(None, None, Some(o.as_str())), [o.as_str()]);
        assert_eq!(
            kept(Some("Cleaned"), Some("1d"), Some("zzz")),
            Vec::<String>::new()
        );

        let bad = HistoryFilter::parse(Some("gone"), None, None, now).expect_err("no such state");
        assert!(bad.contains("one of Seen, Recorded, Active"), "{bad}");
        let bad = HistoryFilter::parse(None, Some("yesterday"), None, now).expect_err("no span");
        assert!(bad.contains("30m, 2h, 3d, 1w"), "{bad}");
    }

    #[test]
    fn repairs_of_the_last_24_hours_are_listed_newest_first() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().expect("a time");
        let mut done = SessionRecord::test()
            .with_process(10, 1)
            .swapping("app", 2)
            .in_state(State::Cleaned, "repaired what the session left");
        done.act("scale deployment/app to 2", "done");
        done.act("delete pod/app-x", "done");
        done.act("stop local helper 12", "skipped: already gone");
        let records = vec![
            at(done.clone(), "2026-12-03T11:00:00Z"),
            at(
                SessionRecord::test()
                    .with_process(11, 1)
                    .swapping("web", 1)
                    .in_state(State::Cleaned, "repaired"),
                "2026-12-03T11:30:00Z",
            ),
            at(
                SessionRecord::test()
                    .with_process(12, 1)
                    .in_state(State::Cleaned, "repaired"),
                "2026-12-01T11:00:00Z",
            ),
            at(
                SessionRecord::test()
                    .with_process(13, 1)
                    .in_state(State::Ended, "nothing to repair"),
                "2026-12-03T11:50:00Z",
            ),
        ];
        let text = recent_repairs(&records, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[1], "Repaired in the last 24 hours:");
        assert!(lines[2].contains("swap deployment/web"), "{text}");
        assert!(
            lines[3].starts_with("  2026-12-03 11:00:00 swap deployment/app in ")
                && lines[3].ends_with(": scale deployment/app to 2; delete pod/app-x"),
            "{text}"
        );
        assert_eq!(recent_repairs(&records[2..], now), "");
    }

    #[test]
    fn a_summary_names_what_was_done_and_counts_the_rest() {
        let mut r = SessionRecord::test().with_process(1, 1);
        assert_eq!(r.repair_summary(), "nothing needed doing");
        for i in 0..7 {
            r.act(format!("step {i}"), "done");
        }
        assert_eq!(
            r.repair_summary(),
            "step 0; step 1; step 2; step 3; step 4; and 2 more"
        );
    }
}
