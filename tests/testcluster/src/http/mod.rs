//! The HTTP face: routing a request to discovery or to a resource verb, the bearer-token
//! check, injected faults and latency, content negotiation (JSON, `Table`), watches as
//! newline-delimited JSON streams, pod logs, and the audit log.
//!
//! The streamed answers (watches, followed pod logs) are in `stream`, the resource verbs in
//! `verbs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::Value;

use crate::discovery;
use crate::resources::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::{AuditEntry, Shared};
use crate::status::ApiError;

mod portforward;
mod spdy;
mod stream;
mod verbs;

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

/// The request headers a request is judged by.
struct Headers {
    /// `User-Agent`, or empty.
    user_agent: String,
    /// `Content-Type`, or empty.
    content_type: String,
    /// `Accept`, or empty.
    accept: String,
    /// Whether it carries the instance's bearer token.
    authorized: bool,
}

/// Reads a request's headers; `token` is the bearer token it must carry.
fn read_headers(req: &Request<Incoming>, token: &str) -> Headers {
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
        .is_some_and(|v| v == format!("Bearer {token}"));
    Headers {
        user_agent,
        content_type,
        accept,
        authorized,
    }
}

/// The verb, resource (with any subresource), namespace and name a request is audited as;
/// empty for non-resource paths.
fn classify(
    method: &Method,
    route: &Route,
    query: &Query,
) -> (&'static str, String, Option<String>, Option<String>) {
    match route {
        Route::Resource(t) => (
            verb_of(method, t, query),
            match &t.sub {
                Some(s) => format!("{}/{s}", t.rt.plural),
                None => t.rt.plural.to_string(),
            },
            t.namespace.clone(),
            t.name.clone(),
        ),
        _ => ("", String::new(), None, None),
    }
}

/// The injected latency, and the code of the first injected fault or denial that matches.
fn fault_for(shared: &Shared, verb: &str, resource: &str) -> (Duration, Option<u16>) {
    let st = shared.lock();
    // An injected error matching first wins; then a denial, always RBAC's 403.
    let fault = st
        .faults
        .rules
        .iter()
        .chain(&st.faults.denials)
        .find(|r| !verb.is_empty() && r.matches(verb, resource))
        .map(|r| r.code);
    (st.faults.latency, fault)
}

/// The answer to a request an injected fault refuses with `code`.
fn refused(route: &Route, code: u16, verb: &str, resource: &str) -> Response<Body> {
    // An injected 403 reads like RBAC's, naming the verb and resource refused.
    match (route, code) {
        (Route::Resource(t), 403) => error_response(&ApiError::forbidden(
            t.rt,
            verb,
            resource,
            t.name.as_deref(),
            t.namespace.as_deref(),
        )),
        _ => error_response(&ApiError::injected(code)),
    }
}

/// The OpenAPI v2 document, as protobuf or JSON as `accept` asks.
fn openapi_v2(shared: &Shared, method: &Method, accept: &str) -> Response<Body> {
    if method != Method::GET {
        error_response(&ApiError::method_not_allowed())
    } else if accept.contains("protobuf") {
        let mut r = Response::new(full(discovery::openapi_v2_protobuf(shared.opts.minor)));
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

/// Answers an authorized request that no fault refused.
async fn answer(
    shared: &Arc<Shared>,
    route: Route,
    method: &Method,
    req: Request<Incoming>,
    query: &Query,
    headers: &Headers,
) -> Response<Body> {
    match route {
        Route::NotFound => error_response(&ApiError::no_route()),
        Route::OpenApiV2 => openapi_v2(shared, method, &headers.accept),
        Route::Document(doc) => {
            if method == Method::GET {
                json_response(200, &doc)
            } else {
                error_response(&ApiError::method_not_allowed())
            }
        }
        Route::Resource(t) if t.rt.plural == "pods" && t.sub.as_deref() == Some("portforward") => {
            portforward::serve(shared, &t, query, req)
        }
        Route::Resource(t) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            verbs::resource_request(&verbs::Req {
                shared,
                method,
                t: &t,
                q: query,
                content_type: &headers.content_type,
                accept: &headers.accept,
                body: &body,
            })
        }
    }
}

/// Adds a request to the audit log; says whether a cut matched it (each cut is used once).
fn record(shared: &Shared, entry: AuditEntry, verb: &str, resource: &str) -> bool {
    let mut st = shared.lock();
    st.audit.push(entry);
    let i = st
        .faults
        .cuts
        .iter()
        .position(|r| !verb.is_empty() && r.matches(verb, resource));
    i.map(|i| st.faults.cuts.remove(i)).is_some()
}

/// Handles one request: authenticates, applies faults, answers, and audits it.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let headers = read_headers(&req, &shared.token);
    let route = route(&path, shared.opts.minor);
    let query = Query(parse_query(&raw_query));
    let (verb, resource, namespace, name) = classify(&method, &route, &query);
    let mut entry = AuditEntry {
        at: SystemTime::now(),
        method: method.to_string(),
        verb: verb.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        resource: resource.clone(),
        namespace,
        name,
        content_type: headers.content_type.clone(),
        status: 0,
        user_agent: headers.user_agent.clone(),
    };
    let (latency, fault) = fault_for(&shared, verb, &resource);
    if latency > Duration::ZERO {
        tokio::time::sleep(latency).await;
    }
    let response = if !headers.authorized {
        error_response(&ApiError::unauthorized())
    } else if let Some(code) = fault {
        refused(&route, code, verb, &resource)
    } else {
        answer(&shared, route, &method, req, &query, &headers).await
    };
    entry.status = response.status().as_u16();
    if record(&shared, entry, verb, &resource) {
        // The request was carried out; now the network fails before the answer leaves. The
        // listener drops every connection, this one with it, so this never returns.
        let _ = shared.reachable.send(false);
        std::future::pending::<()>().await;
    }
    response
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

#[cfg(test)]
mod tests;
