//! The HTTP face: routing a request to discovery or to a resource verb, the bearer-token
//! check, injected faults and latency, content negotiation (JSON, `Table`), watches as
//! newline-delimited JSON streams, pod logs, and the audit log.
//!
//! The streamed answers (watches, followed pod logs) are in `stream`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::access;
use crate::api::{self, DeleteOptions, Part, PatchType};
use crate::discovery;
use crate::resources::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{AuditEntry, Shared};
use crate::status::ApiError;
use crate::store::Key;
use crate::table::{self, Include};

mod stream;

use stream::{pod_log, watch};

/// The response body type: whole or streamed.
pub type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// A request's path split into what it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resource type.
    pub rt: &'static ResourceType,
    /// The namespace in the path.
    pub namespace: Option<String>,
    /// The object name in the path.
    pub name: Option<String>,
    /// The subresource (`scale`, `status`, `log`).
    pub sub: Option<String>,
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A discovery or version document.
    Document(Value),
    /// A resource request.
    Resource(Target),
    /// The OpenAPI v2 document (protobuf or JSON, as asked).
    OpenApiV2,
    /// Nothing served here.
    NotFound,
}

/// Routes a path (without query).
pub fn route(path: &str, minor: u32) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Document(discovery::version(minor)),
        ["api"] => return Route::Document(discovery::core_versions()),
        ["apis"] => return Route::Document(discovery::groups()),
        ["openapi", "v2"] => return Route::OpenApiV2,
        ["openapi", "v3"] => return Route::Document(discovery::openapi_root()),
        ["openapi", "v3", doc @ ..] => {
            return discovery::openapi_group(&doc.join("/"), minor)
                .map_or(Route::NotFound, Route::Document);
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version).map_or(Route::NotFound, Route::Document);
    }
    let find = |plural: &str| resources::find(group, version, plural);
    let t = |rt, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(Target {
            rt,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        })
    };
    match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] => match find("namespaces") {
            Some(rt) => t(rt, None, Some(ns), Some(sub)),
            None => Route::NotFound,
        },
        ["namespaces", ns, plural, more @ ..] => match (find(plural), more) {
            (Some(rt), []) if rt.namespaced => t(rt, Some(ns), None, None),
            (Some(rt), [name]) if rt.namespaced => t(rt, Some(ns), Some(name), None),
            (Some(rt), [name, sub]) if rt.namespaced => t(rt, Some(ns), Some(name), Some(sub)),
            _ => Route::NotFound,
        },
        [plural, more @ ..] => match (find(plural), more) {
            (Some(rt), []) => t(rt, None, None, None),
            (Some(rt), [name]) if !rt.namespaced => t(rt, None, Some(name), None),
            (Some(rt), [name, sub]) if !rt.namespaced => t(rt, None, Some(name), Some(sub)),
            _ => Route::NotFound,
        },
        [] => Route::NotFound,
    }
}

/// Decodes `%XX` escapes and `+` as a space.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a query string into decoded pairs; empty fields (`?&a=`) are tolerated.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// The Kubernetes verb of a request.
fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    match (method, t.name.is_some()) {
        (&Method::GET, false) if q.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) if q.flag("watch") => "watch",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "unknown",
    }
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Handles one request: authenticates, applies faults, answers, and audits it.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let header_str = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let user_agent = header_str(header::USER_AGENT);
    let content_type = header_str(header::CONTENT_TYPE);
    let accept = header_str(header::ACCEPT);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.token));
    let route = route(&path, shared.opts.minor);
    let query = Query(parse_query(&raw_query));
    let (verb, resource, namespace, name) = match &route {
        Route::Resource(t) => (
            verb_of(&method, t, &query),
            match &t.sub {
                Some(s) => format!("{}/{s}", t.rt.plural),
                None => t.rt.plural.to_string(),
            },
            t.namespace.clone(),
            t.name.clone(),
        ),
        _ => ("", String::new(), None, None),
    };
    let mut entry = AuditEntry {
        at: SystemTime::now(),
        method: method.to_string(),
        verb: verb.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        resource: resource.clone(),
        namespace,
        name,
        content_type: content_type.clone(),
        status: 0,
        user_agent,
    };
    let (latency, fault) = {
        let st = shared.lock();
        // An injected error matching first wins; then a denial, always RBAC's 403.
        let fault = st
            .faults
            .rules
            .iter()
            .chain(&st.faults.denials)
            .find(|r| !verb.is_empty() && r.matches(verb, &resource))
            .map(|r| r.code);
        (st.faults.latency, fault)
    };
    if latency > Duration::ZERO {
        tokio::time::sleep(latency).await;
    }
    let response = if !authorized {
        error_response(&ApiError::unauthorized())
    } else if let Some(code) = fault {
        // An injected 403 reads like RBAC's, naming the verb and resource refused.
        match (&route, code) {
            (Route::Resource(t), 403) => error_response(&ApiError::forbidden(
                t.rt,
                verb,
                &resource,
                t.name.as_deref(),
                t.namespace.as_deref(),
            )),
            _ => error_response(&ApiError::injected(code)),
        }
    } else {
        match route {
            Route::NotFound => error_response(&ApiError::no_route()),
            Route::OpenApiV2 => {
                if method != Method::GET {
                    error_response(&ApiError::method_not_allowed())
                } else if accept.contains("protobuf") {
                    let mut r =
                        Response::new(full(discovery::openapi_v2_protobuf(shared.opts.minor)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(
                            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                        ),
                    );
                    r
                } else {
                    json_response(200, &discovery::openapi_v2_json(shared.opts.minor))
                }
            }
            Route::Document(doc) => {
                if method == Method::GET {
                    json_response(200, &doc)
                } else {
                    error_response(&ApiError::method_not_allowed())
                }
            }
            Route::Resource(t) => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                resource_request(&shared, &method, &t, &query, &content_type, &accept, &body)
            }
        }
    };
    entry.status = response.status().as_u16();
    let cut = {
        let mut st = shared.lock();
        st.audit.push(entry);
        let i = st
            .faults
            .cuts
            .iter()
            .position(|r| !verb.is_empty() && r.matches(verb, &resource));
        i.map(|i| st.faults.cuts.remove(i)).is_some()
    };
    if cut {
        // The request was carried out; now the network fails before the answer leaves. The
        // listener drops every connection, this one with it, so this never returns.
        let _ = shared.reachable.send(false);
        std::future::pending::<()>().await;
    }
    response
}

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

fn label_filter(q: &Query) -> Result<LabelSelector, ApiError> {
    LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)
}

fn field_filter(q: &Query, rt: &ResourceType) -> Result<FieldSelector, ApiError> {
    FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), rt.plural)
        .map_err(ApiError::bad_request)
}

fn obj_labels(v: &Value) -> std::collections::BTreeMap<String, String> {
    crate::controllers::labels(v, "/metadata/labels")
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

#[allow(clippy::too_many_arguments)]
fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    t: &Target,
    q: &Query,
    content_type: &str,
    accept: &str,
    body: &[u8],
) -> Response<Body> {
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
    let ns = t.namespace.as_deref().unwrap_or("");
    let result: Result<(u16, Value), ApiError> = (|| {
        let rt = t.rt;
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
                if wants_table(accept) {
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
                if wants_table(accept) {
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
            ("delete", None, Some(name)) => {
                let v: Value = if body.is_empty() {
                    json!({})
                } else {
                    read_json(content_type, body)?
                };
                let opts = DeleteOptions::from_body_and_query(&v, &q.0);
                let out = api::delete(&mut shared.lock(), rt, ns, name, &opts)?;
                after_write(shared);
                Ok((out.code, out.body))
            }
            ("deletecollection", None, None) => {
                let v: Value = if body.is_empty() {
                    json!({})
                } else {
                    read_json(content_type, body)?
                };
                let opts = DeleteOptions::from_body_and_query(&v, &q.0);
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
            _ => Err(ApiError::method_not_allowed()),
        }
    })();
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

#[cfg(test)]
mod tests;
