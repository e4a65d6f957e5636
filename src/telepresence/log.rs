//! Facts a 0.x session's `telepresence.log` gives away: the session id, and (0.106+, or
//! 0.105 with `--verbose`) the original Deployment's replica count and uid, from the
//! `kubectl get deploy <original> -o json` output that Telepresence logs before it scales
//! the original down. The caller reads the file; this module only reads text.
//!
//! Telepresence writes each line as `<seconds> <tag> | <text>`, the tag being `TEL` for its
//! own messages and the number of the command whose output it is. Output of the proxy
//! pod's `kubectl logs` helper is appended to the same file without a prefix.
//!
//! # Guarantees
//! - Never panics, whatever the text, and does work linear in the text's length: at most
//!   the first [`MAX_LOG_BYTES`] are read, every line is looked at a bounded number of
//!   times, and a JSON object is given up after 2 MiB.
//! - The first mention wins, for the session id as for the original: the log is truncated
//!   at every start, so the earliest lines are the current session's setup, written before
//!   anything from the cluster (the proxy's own log) is appended.
//!
//! # Caveats
//! - Because the log is truncated at every start, a log found in a directory may belong to
//!   a later session than the process in hand; callers should check the session id against
//!   the one in `tel-*/session_id.txt` when they have it.
//! - A JSON object written without the prefix (a log on a terminal, saved by hand) is
//!   read too, but then nothing tells a foreign line inside it apart from its own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{is_session_id, swap_proxy_name};

/// How much of a log is read: the facts are all in its first lines, and the rest is the
/// proxy's log, which can grow for as long as the session lives.
pub const MAX_LOG_BYTES: usize = 10 * 1024 * 1024;

/// A JSON object larger than this is not a Deployment Telepresence fetched.
const MAX_OBJECT_BYTES: usize = 2 * 1024 * 1024;

/// What a log says about its session. Every field is `None` when the log does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFacts {
    /// The session id (32 lowercase hex digits) the log mentions first. Not evidence of
    /// which session a process is: sessions started from one directory share (and
    /// truncate) one log; the agent decides that from the process's own children and
    /// proxies ([`pick_session_id`](super::pick_session_id)).
    pub session_id: Option<String>,
    /// The original Deployment's `spec.replicas` before the swap (a missing value is 1, as
    /// the API server defaults it).
    pub original_replicas: Option<i32>,
    /// The original Deployment's `metadata.uid` when it was fetched.
    pub original_uid: Option<String>,
}

/// Reads what a `telepresence.log` says about its session. `deployment` is the swapped
/// Deployment's name (from `--swap-deployment`); without it, only the session id is looked
/// for.
///
/// The session id comes from the first of:
/// - a label mention `telepresence=<id>` (as in `--selector=telepresence=<id>` or
///   `-l telepresence=<id>`), or a swap proxy's name `<deployment cut to 17>-<id>`;
/// - failing those, a label in logged JSON, `"telepresence": "<id>"`.
///
/// The original is the first logged JSON object (pretty-printed over several lines or on
/// one) whose `kind` is `Deployment` and whose `metadata.name` is `deployment`. A
/// `spec.replicas` that is not a count from 0 to `i32::MAX` gives `None`.
pub fn read_log(text: &str, deployment: Option<&str>) -> LogFacts {
    let text = clip(text);
    let deployment = deployment.filter(|d| !d.is_empty());
    let (original_replicas, original_uid) = deployment
        .and_then(|name| Objects::new(text).find_map(|object| original_facts(&object, name)))
        .unwrap_or_default();
    LogFacts {
        session_id: session_id(text, deployment).map(str::to_string),
        original_replicas,
        original_uid,
    }
}

/// The first [`MAX_LOG_BYTES`] of `text`, cut at a character boundary.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_LOG_BYTES {
        return text;
    }
    let mut end = MAX_LOG_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// ------------------------------------------------------------------------- session id

fn session_id<'t>(text: &'t str, deployment: Option<&str>) -> Option<&'t str> {
    let label = first_label(text);
    let proxy = deployment.and_then(|d| first_proxy_name(text, d));
    [label, proxy]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
        .or_else(|| first_json_label(text))
        .map(|(_, id)| id)
}

/// Characters of Kubernetes names and label values: a mention must not be part of a
/// longer one.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Whether the byte before `at` ends a token (or there is none).
fn starts_token(text: &str, at: usize, also_reject: u8) -> bool {
    text.as_bytes()[..at]
        .last()
        .is_none_or(|&b| !is_name_byte(b) && b != also_reject)
}

/// The session id at `start` if it is a whole token: followed by the end, a byte that is no
/// part of a name, a full stop that ends a sentence, or (when `dash_ok`, for the pods of a
/// proxy Deployment) a dash.
fn id_at(text: &str, start: usize, dash_ok: bool) -> Option<&str> {
    let id = text.get(start..start.checked_add(32)?)?;
    if !is_session_id(id) {
        return None;
    }
    let bytes = text.as_bytes();
    let end = start + 32;
    let ends = match bytes.get(end) {
        None => true,
        Some(b'-') => dash_ok,
        Some(b'.') => bytes.get(end + 1).is_none_or(|&b| !is_name_byte(b)),
        Some(&b) => !is_name_byte(b),
    };
    ends.then_some(id)
}

/// `telepresence=<id>`, not preceded by more of a label key (`example.com/telepresence=`).
fn first_label(text: &str) -> Option<(usize, &str)> {
    const KEY: &str = "telepresence=";
    text.match_indices(KEY).find_map(|(at, _)| {
        if !starts_token(text, at, b'/') {
            return None;
        }
        id_at(text, at + KEY.len(), false).map(|id| (at, id))
    })
}

/// `<deployment cut to 17>-<id>`, not preceded by more of a name.
fn first_proxy_name<'t>(text: &'t str, deployment: &str) -> Option<(usize, &'t str)> {
    let prefix = swap_proxy_name(deployment, "");
    text.match_indices(prefix.as_str()).find_map(|(at, _)| {
        if !starts_token(text, at, b'-') {
            return None;
        }
        id_at(text, at + prefix.len(), true).map(|id| (at, id))
    })
}

/// `"telepresence": "<id>"` in logged JSON (escaped JSON inside a string does not match).
fn first_json_label(text: &str) -> Option<(usize, &str)> {
    const KEY: &str = "\"telepresence\"";
    // Blanks around the colon; more than this is not JSON anyone printed.
    const MAX_BLANKS: usize = 8;
    text.match_indices(KEY).find_map(|(at, _)| {
        let rest = &text[at + KEY.len()..];
        fn skip(s: &str) -> &str {
            let blanks = s
                .bytes()
                .take(MAX_BLANKS)
                .take_while(|b| *b == b' ')
                .count();
            &s[blanks..]
        }
        let value = skip(skip(rest).strip_prefix(':')?).strip_prefix('"')?;
        let id = value.get(..32).filter(|id| is_session_id(id))?;
        value[32..].starts_with('"').then_some((at, id))
    })
}

// ------------------------------------------------------------------------- original

/// `(replicas, uid)` if `object` is the Deployment `name`.
fn original_facts(object: &Value, name: &str) -> Option<(Option<i32>, Option<String>)> {
    if object.get("kind")?.as_str()? != "Deployment"
        || object.pointer("/metadata/name")?.as_str()? != name
    {
        return None;
    }
    let replicas = match object.pointer("/spec/replicas") {
        None | Some(Value::Null) => Some(1),
        Some(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0),
    };
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|uid| !uid.is_empty())
        .map(str::to_string);
    Some((replicas, uid))
}

/// Splits off a `<seconds> <tag> | ` prefix (the pattern `^\s*[0-9.]+\s+\S+\s*\|\s?`):
/// returns the tag, if there was a prefix, and the rest of the line.
fn split_prefix(line: &str) -> (Option<&str>, &str) {
    let rest = line.trim_start();
    let stamp = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let after_stamp = &rest[stamp..];
    let tag_start = after_stamp.trim_start();
    if stamp == 0 || tag_start.len() == after_stamp.len() || tag_start.is_empty() {
        return (None, line);
    }
    let run_len = tag_start
        .find(char::is_whitespace)
        .unwrap_or(tag_start.len());
    let run = &tag_start[..run_len];
    let (tag, content) = match tag_start[run_len..].trim_start().strip_prefix('|') {
        Some(content) => (run, content),
        // `0.0 TEL|text`: the bar is inside the run of non-blanks; like the regex's
        // backtracking, take the last one.
        None => match run.rfind('|') {
            Some(bar) if bar > 0 => (&run[..bar], &tag_start[bar + 1..]),
            _ => return (None, line),
        },
    };
    let content = content
        .strip_prefix(|c: char| c.is_whitespace())
        .unwrap_or(content);
    (Some(tag), content)
}

/// The JSON objects in a log, in order: each starts on a line (after the prefix) with `{`
/// and ends where its brackets balance, on that line or a later one with the same tag.
/// Unprefixed lines inside a prefixed object (the proxy's log) are skipped; a line with
/// another tag ends the object unfinished.
#[derive(Debug)]
struct Objects<'t> {
    lines: std::str::Lines<'t>,
    /// A line that ended the object being read and must be looked at again.
    again: Option<&'t str>,
    current: Option<Candidate<'t>>,
}

/// An object being read.
#[derive(Debug)]
struct Candidate<'t> {
    /// The tag of its first line; a line with another tag ends it.
    tag: Option<&'t str>,
    text: String,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// What one more line did to a [`Candidate`].
enum Fed {
    /// Still open.
    Open,
    /// Balanced: the text is complete.
    Closed,
    /// Not an object after all (a line ended inside a string, or it grew too large).
    Broken,
}

impl<'t> Objects<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            lines: text.lines(),
            again: None,
            current: None,
        }
    }

    /// Feeds `content` to the current candidate; an object if that completed one.
    fn feed(&mut self, content: &str) -> Option<Value> {
        let candidate = self.current.as_mut()?;
        match candidate.feed(content) {
            Fed::Open => None,
            Fed::Broken => {
                self.current = None;
                None
            }
            Fed::Closed => {
                let text = self.current.take()?.text;
                serde_json::from_str(&text).ok()
            }
        }
    }
}

impl Iterator for Objects<'_> {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        loop {
            let line = match self.again.take() {
                Some(line) => line,
                None => self.lines.next()?,
            };
            let (tag, content) = split_prefix(line);
            if let Some(candidate) = &self.current {
                if candidate.tag.is_some() && tag.is_none() {
                    // Appended by the proxy's `kubectl logs` helper, not part of the object.
                    continue;
                }
                if tag.is_some() && candidate.tag.is_some() && tag != candidate.tag {
                    // Another command's output: the object was cut short.
                    self.current = None;
                    self.again = Some(line);
                    continue;
                }
                if let Some(object) = self.feed(content) {
                    return Some(object);
                }
                continue;
            }
            let trimmed = content.trim_start();
            if trimmed.starts_with('{') {
                self.current = Some(Candidate {
                    tag,
                    text: String::new(),
                    depth: 0,
                    in_string: false,
                    escaped: false,
                });
                if let Some(object) = self.feed(trimmed) {
                    return Some(object);
                }
            }
        }
    }
}

impl Candidate<'_> {
    fn feed(&mut self, content: &str) -> Fed {
        if self.text.len() + content.len() > MAX_OBJECT_BYTES {
            return Fed::Broken;
        }
        for (i, b) in content.bytes().enumerate() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        // `i` is an ASCII byte's index, so a character boundary.
                        self.text.push_str(&content[..=i]);
                        return Fed::Closed;
                    }
                }
                _ => {}
            }
        }
        if self.in_string {
            // JSON strings never span lines.
            return Fed::Broken;
        }
        self.text.push_str(content);
        self.text.push('\n');
        Fed::Open
    }
}

#[cfg(test)]
mod tests;
