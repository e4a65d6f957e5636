//! `status` and `history`: the journal rendered for a person (a table) or a program (JSON).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::session::{SessionRecord, State};
use crate::wake::Waiting;

/// Whether a record belongs in `status` (live or needing a person) or only in `history`.
pub fn is_current(r: &SessionRecord) -> bool {
    !matches!(r.state, State::Ended | State::Cleaned)
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
