//! The resource verbs: reads (list, get, the status and scale subresources), writes
//! (create, update, patch, scale) and deletes (delete, deletecollection), each decoded from
//! the request and carried out on the store.

use std::sync::Arc;

use hyper::{Method, Response};
use serde_json::{Value, json};

use super::stream::{pod_log, watch};
use super::{
    Body, Query, Target, error_response, field_filter, json_response, label_filter, obj_labels,
    verb_of, wants_table,
};
use crate::access;
use crate::api::{self, DeleteOptions, Part, PatchType};
use crate::resources::ResourceType;
use crate::state::Shared;
use crate::status::ApiError;
use crate::store::Key;
use crate::table::{self, Include};

/// The parts of a resource request the verbs read.
#[derive(Clone, Copy)]
pub(super) struct Req<'a> {
    /// The emulator's state.
    pub(super) shared: &'a Arc<Shared>,
    /// The HTTP method.
    pub(super) method: &'a Method,
    /// What the path addresses.
    pub(super) t: &'a Target,
    /// The decoded query.
    pub(super) q: &'a Query,
    /// The request's `Content-Type`.
    pub(super) content_type: &'a str,
    /// The request's `Accept`.
    pub(super) accept: &'a str,
    /// The request body.
    pub(super) body: &'a [u8],
}

impl Req<'_> {
    /// The namespace in the path, or empty.
    fn ns(&self) -> &str {
        self.t.namespace.as_deref().unwrap_or("")
    }
}

/// What a verb answered: the HTTP code and the JSON body.
type Answer = Result<(u16, Value), ApiError>;

fn read_json(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if ct.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(ct));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

fn strict(q: &Query) -> bool {
    q.get("fieldValidation") == Some("Strict")
}

/// A `<Kind>List` of `items` at resource version `rv`, as a list or a deletecollection
/// answers.
fn list_document<T: serde::Serialize>(rt: &ResourceType, rv: u64, items: Vec<T>) -> Value {
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn after_write(shared: &Shared) {
    shared.changed.notify_one();
}

/// Answers a request for a resource: checks what it accepts and may do, then runs its verb.
pub(super) fn resource_request(r: &Req<'_>) -> Response<Body> {
    let Req {
        shared,
        method,
        t,
        q,
        content_type,
        accept,
        body,
    } = *r;
    if !accept.is_empty()
        && !accept.contains("json")
        && !accept.contains("*/*")
        && !accept.contains("yaml")
        && t.sub.as_deref() != Some("log")
    {
        return error_response(&ApiError::not_acceptable(accept));
    }
    let verb = verb_of(method, t, q);
    if t.sub.is_none() && !t.rt.verbs.contains(&verb) {
        return error_response(&ApiError::method_not_allowed());
    }
    if verb == "create" && t.rt.kind == "SelfSubjectAccessReview" {
        let answer = read_json(content_type, body)
            .and_then(|v| access::review(t.rt, &shared.lock().faults, &v, strict(q)));
        return match answer {
            Ok(v) => json_response(201, &v),
            Err(e) => error_response(&e),
        };
    }
    if verb == "get" && t.sub.as_deref() == Some("log") && t.rt.plural == "pods" {
        return pod_log(shared, t, q);
    }
    if verb == "watch" {
        return watch(shared, t, q, wants_table(accept));
    }
    let result = match verb {
        "list" | "get" => read(r, verb),
        "create" | "update" | "patch" => write(r, verb),
        "delete" | "deletecollection" => remove(r, verb),
        _ => Err(ApiError::method_not_allowed()),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

/// The reads: list, get, and get of the status and scale subresources.
fn read(r: &Req<'_>, verb: &str) -> Answer {
    let Req { shared, t, q, .. } = *r;
    let (rt, ns) = (t.rt, r.ns());
    match (verb, t.sub.as_deref(), t.name.as_deref()) {
        ("list", None, None) => {
            let labels = label_filter(q)?;
            let fields = field_filter(q, rt)?;
            let st = shared.lock();
            let rv = st.store.current_rv();
            let items: Vec<&Value> = st
                .store
                .list(rt.plural, t.namespace.as_deref())
                .into_iter()
                .filter(|o| labels.matches(&obj_labels(o)) && fields.matches(o))
                .collect();
            if wants_table(r.accept) {
                return Ok((
                    200,
                    table::table(rt, &items, rv, Include::parse(q.get("includeObject"))),
                ));
            }
            Ok((200, list_document(rt, rv, items)))
        }
        ("get", None, Some(name)) => {
            let st = shared.lock();
            let key = Key::new(rt.plural, ns, name);
            let obj = st
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            if wants_table(r.accept) {
                let rv = st.store.current_rv();
                return Ok((
                    200,
                    table::table(rt, &[obj], rv, Include::parse(q.get("includeObject"))),
                ));
            }
            Ok((200, obj.clone()))
        }
        ("get", Some("status"), Some(name)) => {
            let st = shared.lock();
            let obj = st
                .store
                .get(&Key::new(rt.plural, ns, name))
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            Ok((200, obj.clone()))
        }
        ("get", Some("scale"), Some(name)) if rt.group == "apps" => {
            Ok((200, api::get_scale(&shared.lock(), rt, ns, name)?))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The writes: create, update and patch, of the object, its status or its scale.
fn write(r: &Req<'_>, verb: &str) -> Answer {
    let Req {
        shared,
        t,
        q,
        content_type,
        body,
        ..
    } = *r;
    let (rt, ns) = (t.rt, r.ns());
    match (verb, t.sub.as_deref(), t.name.as_deref()) {
        ("create", None, None) => {
            let v = read_json(content_type, body)?;
            let created = api::create(&mut shared.lock(), rt, ns, &v, strict(q))?;
            after_write(shared);
            Ok((201, created))
        }
        ("update", sub @ (None | Some("status")), Some(name)) => {
            let v = read_json(content_type, body)?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let out = api::update(&mut shared.lock(), rt, ns, name, &v, part, strict(q))?;
            after_write(shared);
            Ok((200, out))
        }
        ("patch", sub @ (None | Some("status")), Some(name)) => {
            let kind = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let part = if sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let mut st = shared.lock();
            let existed = st.store.get(&Key::new(rt.plural, ns, name)).is_some();
            let out = api::patch(&mut st, rt, ns, name, kind, body, part, strict(q))?;
            drop(st);
            after_write(shared);
            Ok((if existed { 200 } else { 201 }, out))
        }
        ("update", Some("scale"), Some(name)) if rt.group == "apps" => {
            let v = read_json(content_type, body)?;
            let out = api::write_scale(&mut shared.lock(), rt, ns, name, Ok(v))?;
            after_write(shared);
            Ok((200, out))
        }
        ("patch", Some("scale"), Some(name)) if rt.group == "apps" => {
            let kind = PatchType::from_content_type(content_type)
                .filter(|k| *k != PatchType::Apply)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let out = api::write_scale(&mut shared.lock(), rt, ns, name, Err((kind, body)))?;
            after_write(shared);
            Ok((200, out))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The deletes: delete of one object, and deletecollection.
fn remove(r: &Req<'_>, verb: &str) -> Answer {
    match (verb, r.t.sub.as_deref(), r.t.name.as_deref()) {
        ("delete", None, Some(name)) => {
            let opts = delete_options(r)?;
            let out = api::delete(&mut r.shared.lock(), r.t.rt, r.ns(), name, &opts)?;
            after_write(r.shared);
            Ok((out.code, out.body))
        }
        ("deletecollection", None, None) => delete_collection(r),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The `DeleteOptions` of a delete: its body (if any) merged with its query.
fn delete_options(r: &Req<'_>) -> Result<DeleteOptions, ApiError> {
    let v: Value = if r.body.is_empty() {
        json!({})
    } else {
        read_json(r.content_type, r.body)?
    };
    Ok(DeleteOptions::from_body_and_query(&v, &r.q.0))
}

/// deletecollection: deletes every object the selectors match; lists those that live on.
fn delete_collection(r: &Req<'_>) -> Answer {
    let Req { shared, t, q, .. } = *r;
    let rt = t.rt;
    let opts = delete_options(r)?;
    let labels = label_filter(q)?;
    let fields = field_filter(q, rt)?;
    let mut st = shared.lock();
    let names: Vec<(String, String)> = st
        .store
        .list(rt.plural, t.namespace.as_deref())
        .into_iter()
        .filter(|o| labels.matches(&obj_labels(o)) && fields.matches(o))
        .map(|o| {
            let s = |p| {
                o.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (s("/metadata/namespace"), s("/metadata/name"))
        })
        .collect();
    let mut items = Vec::new();
    for (ons, name) in names {
        match api::delete(&mut st, rt, &ons, &name, &opts) {
            Ok(d) if d.body["kind"] == "Status" => {}
            Ok(d) => items.push(d.body),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = st.store.current_rv();
    drop(st);
    after_write(shared);
    Ok((200, list_document(rt, rv, items)))
}
