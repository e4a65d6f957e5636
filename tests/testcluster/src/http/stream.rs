//! The streamed answers: watches as newline-delimited JSON events (replay, initial events,
//! bookmarks, timeouts) and followed pod logs, each fed to the client through a channel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{Body, Query, Target, error_response, field_filter, full, label_filter, obj_labels};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::Shared;
use crate::status::ApiError;
use crate::store::{Change, ChangeType, Key, Store};
use crate::table::{self, Include};

/// A streamed body fed by a channel; the sender sees an error once the client is gone.
fn channel_body(content_type: &'static str) -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    (tx, r)
}

/// What a watch sends for one change, after its filters: `None` when it is not for it.
fn filter_change(
    c: &Change,
    t: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<(&'static str, Value)> {
    if c.key.resource != t.rt.plural {
        return None;
    }
    if let Some(ns) = &t.namespace
        && c.key.namespace != *ns
    {
        return None;
    }
    if let Some(name) = &t.name
        && c.key.name != *name
    {
        return None;
    }
    let hit = |o: &Value| labels.matches(&obj_labels(o)) && fields.matches(o);
    let new_hit = hit(&c.new);
    let old_hit = c.old.as_ref().is_some_and(hit);
    match c.kind {
        ChangeType::Added if new_hit => Some(("ADDED", c.new.clone())),
        ChangeType::Modified if old_hit && new_hit => Some(("MODIFIED", c.new.clone())),
        ChangeType::Modified if new_hit => Some(("ADDED", c.new.clone())),
        ChangeType::Modified if old_hit => Some(("DELETED", c.new.clone())),
        ChangeType::Deleted if old_hit => Some(("DELETED", c.new.clone())),
        _ => None,
    }
}

fn event_line(
    kind: &str,
    obj: &Value,
    rt: &ResourceType,
    as_table: bool,
    rv: u64,
    include: Include,
) -> Bytes {
    let object = if as_table && kind != "BOOKMARK" && kind != "ERROR" {
        table::table(rt, &[obj], rv, include)
    } else {
        obj.clone()
    };
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch's parameters, read from its query.
struct WatchParams {
    /// The label selector.
    labels: LabelSelector,
    /// The field selector.
    fields: FieldSelector,
    /// How much of each object a `Table` row carries.
    include: Include,
    /// When the watch ends.
    timeout: Duration,
    /// Whether the client asked for bookmarks.
    bookmarks: bool,
    /// Whether objects are sent as `Table`s.
    as_table: bool,
    /// How often a bookmark is sent.
    bookmark_interval: Duration,
}

/// Reads a watch's parameters from its query and the instance's options.
fn watch_params(
    shared: &Shared,
    t: &Target,
    q: &Query,
    as_table: bool,
) -> Result<WatchParams, ApiError> {
    let labels = label_filter(q)?;
    let fields = field_filter(q, t.rt)?;
    let include = Include::parse(q.get("includeObject"));
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(shared.opts.default_watch_timeout);
    let bookmarks = q.flag("allowWatchBookmarks");
    Ok(WatchParams {
        labels,
        fields,
        include,
        timeout,
        bookmarks,
        as_table,
        bookmark_interval: shared.opts.bookmark_interval,
    })
}

/// How a watch starts: the events sent first, the version they bring the client to, and
/// the feed of later changes (none when the asked version has expired).
struct Start {
    /// The first events.
    initial: Vec<Bytes>,
    /// The version the first events bring the client to.
    start_rv: u64,
    /// The changes after that.
    rx: Option<broadcast::Receiver<Arc<Change>>>,
}

/// An `ADDED` event for each stored object the watch selects, at version `rv`.
fn listed(store: &Store, t: &Target, p: &WatchParams, rv: u64) -> Vec<Bytes> {
    let mut initial = Vec::new();
    for o in store.list(t.rt.plural, t.namespace.as_deref()) {
        let name_ok = t
            .name
            .as_deref()
            .is_none_or(|n| o.pointer("/metadata/name").and_then(Value::as_str) == Some(n));
        if name_ok && p.labels.matches(&obj_labels(o)) && p.fields.matches(o) {
            initial.push(event_line("ADDED", o, t.rt, p.as_table, rv, p.include));
        }
    }
    initial
}

/// A watch from version `from`: the changes since, or an `ERROR` event when it expired.
fn replayed(store: &Store, t: &Target, p: &WatchParams, from: u64) -> Start {
    let rt = t.rt;
    let mut initial = Vec::new();
    match store.subscribe_from(from) {
        Ok((replay, r)) => {
            for c in replay {
                if let Some((kind, obj)) = filter_change(&c, t, &p.labels, &p.fields) {
                    initial.push(event_line(kind, &obj, rt, p.as_table, c.rv, p.include));
                }
            }
            Start {
                initial,
                start_rv: from,
                rx: Some(r),
            }
        }
        Err(expired) => {
            let status = ApiError::expired(expired.asked, expired.oldest).to_status();
            initial.push(event_line("ERROR", &status, rt, false, from, p.include));
            Start {
                initial,
                start_rv: from,
                rx: None,
            }
        }
    }
}

/// How a watch starts, as its `sendInitialEvents` and `resourceVersion` ask.
fn start(shared: &Shared, t: &Target, q: &Query, p: &WatchParams) -> Result<Start, ApiError> {
    let rt = t.rt;
    let st = shared.lock();
    let send_initial = q.flag("sendInitialEvents");
    if send_initial && !p.bookmarks {
        return Err(ApiError::invalid_params(
            "sendInitialEvents",
            "allowWatchBookmarks must be true when sendInitialEvents is set",
        ));
    }
    match q.get("resourceVersion") {
        _ if send_initial => {
            let start_rv = st.store.current_rv();
            let mut initial = listed(&st.store, t, p, start_rv);
            // The end of the initial events, as a streaming list announces it.
            let end = json!({"kind": rt.kind, "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": start_rv.to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}}});
            initial.push(event_line("BOOKMARK", &end, rt, false, start_rv, p.include));
            Ok(Start {
                initial,
                start_rv,
                rx: Some(st.store.subscribe()),
            })
        }
        None | Some("0") => {
            let start_rv = st.store.current_rv();
            let initial = listed(&st.store, t, p, start_rv);
            Ok(Start {
                initial,
                start_rv,
                rx: Some(st.store.subscribe()),
            })
        }
        Some(v) => match v.parse::<u64>() {
            Err(_) => Err(ApiError::bad_request(format!(
                "invalid resource version: {v}"
            ))),
            Ok(from) => Ok(replayed(&st.store, t, p, from)),
        },
    }
}

/// Answers a watch: its events as a stream of newline-delimited JSON.
pub(super) fn watch(shared: &Arc<Shared>, t: &Target, q: &Query, as_table: bool) -> Response<Body> {
    let p = match watch_params(shared, t, q, as_table) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let (tx, response) = channel_body("application/json");
    let start = match start(shared, t, q, &p) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    tokio::spawn(feed(tx, start, t.clone(), p));
    response
}

/// Sends a watch's events to the client: the first ones, then each change it selects,
/// with bookmarks if asked, until the timeout, the client leaving or the feed failing.
async fn feed(tx: mpsc::Sender<Bytes>, start: Start, t: Target, p: WatchParams) {
    let rt = t.rt;
    let WatchParams {
        labels,
        fields,
        include,
        timeout,
        bookmarks,
        as_table,
        bookmark_interval,
    } = p;
    for line in start.initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let Some(mut rx) = start.rx else { return };
    let mut last_rv = start.start_rv;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(bookmark_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    let bookmark = |rv: u64| {
        let obj = json!({"kind": rt.kind, "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": rv.to_string()}});
        event_line("BOOKMARK", &obj, rt, false, rv, include)
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if bookmarks {
                    let _ = tx.send(bookmark(last_rv)).await;
                }
                return;
            }
            _ = tick.tick(), if bookmarks => {
                if tx.send(bookmark(last_rv)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            c = rx.recv() => match c {
                Ok(c) => {
                    if c.rv <= last_rv {
                        continue;
                    }
                    last_rv = c.rv;
                    if let Some((kind, obj)) = filter_change(&c, &t, &labels, &fields)
                        && tx.send(event_line(kind, &obj, rt, as_table, c.rv, include)).await.is_err()
                    {
                        return;
                    }
                }
                // Lagged or closed: end the watch; the client resumes from its last version.
                Err(_) => return,
            },
        }
    }
}

pub(super) fn pod_log(shared: &Arc<Shared>, t: &Target, q: &Query) -> Response<Body> {
    let (ns, name) = (
        t.namespace.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    );
    let key = Key::new("pods", &ns, &name);
    let (pod, rx) = {
        let st = shared.lock();
        (st.store.get(&key).cloned(), st.store.subscribe())
    };
    let Some(pod) = pod else {
        return error_response(&ApiError::not_found(t.rt, &name));
    };
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container") {
        Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
        Some(c) => {
            return error_response(&ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return error_response(&ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let text = format!("testcluster: container {container} of pod {ns}/{name} is running\n");
    if !q.flag("follow") {
        let mut r = Response::new(full(text));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        return r;
    }
    let (tx, response) = channel_body("text/plain");
    let uid = pod.pointer("/metadata/uid").cloned();
    tokio::spawn(async move {
        let mut rx = rx;
        if tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
        // Follow until the pod is gone (or replaced), or the client leaves.
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                c = rx.recv() => match c {
                    Ok(c) if c.key == key && (c.kind == ChangeType::Deleted || c.new.pointer("/metadata/uid") != uid.as_ref()) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
    response
}
