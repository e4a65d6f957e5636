//! `Status` objects: the errors (and the few successes) the API server answers with, with the
//! reasons, codes and message wording of a real `kube-apiserver`.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// An API error, rendered as a `meta.k8s.io/v1` `Status` with the matching HTTP code.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// The human message, worded as the real server words it.
    pub message: String,
    /// `details`, when the real server fills them.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        let mut d = json!({ "name": name, "kind": rt.plural });
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        self.details = Some(d);
        self
    }

    /// 404 for a named object.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
        .with_details(rt, name)
    }

    /// 404 for a path that names no resource (the real server's wording does not name it).
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
            .tap_details(json!({ "causes": [{ "reason": "UnexpectedServerResponse", "message": "404 page not found" }] }))
    }

    fn tap_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }

    /// 409 for a create whose name is taken.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
        )
        .with_details(rt, name)
    }

    /// 409 for a stale `resourceVersion`.
    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 `Conflict` with the server's "Operation cannot be fulfilled" wording.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified()
            ),
        )
        .with_details(rt, name)
    }

    /// 422 `Invalid`, one cause per `(field, message)`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: &[(String, String)]) -> Self {
        let text = causes
            .iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join(", ");
        let kind = if rt.group.is_empty() {
            rt.kind.to_string()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {text}"),
        );
        let mut d = json!({
            "name": name,
            "kind": rt.kind,
            "causes": causes.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect::<Vec<_>>(),
        });
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        e.details = Some(d);
        e
    }

    /// 422 for a JSON patch that cannot be applied (a failed `test` op, say): the real
    /// server's generic wording, with the patch library's reason as the one cause.
    pub fn patch_failed(why: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .tap_details(
            json!({ "causes": [{ "reason": "UnexpectedServerResponse", "message": why.into() }] }),
        )
    }

    /// 422 for query parameters that do not fit together.
    pub fn invalid_params(field: &str, why: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: Forbidden: {why}"),
        )
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401, for a request without the right bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 `Forbidden` with RBAC's wording, e.g. `deployments.apps "app" is forbidden: User
    /// "testcluster-user" cannot patch resource "deployments" in API group "apps" in the
    /// namespace "default"`. `resource` may name a subresource (`deployments/scale`).
    pub fn forbidden(
        rt: &ResourceType,
        verb: &str,
        resource: &str,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> Self {
        let scope = match namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let what = match name {
            Some(n) => format!("{} \"{n}\"", rt.qualified()),
            None => rt.qualified(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{what} is forbidden: User \"testcluster-user\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}",
                rt.group
            ),
        )
    }

    /// 403 for content created in a namespace that is being deleted.
    pub fn namespace_terminating(rt: &ResourceType, name: &str, ns: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified()
            ),
        )
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 406 for an `Accept` the server cannot produce.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml (asked: {accept})"
            ),
        )
    }

    /// 415 for a body in a media type the server cannot read.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"
            ),
        )
    }

    /// 410 `Expired`, for a `resourceVersion` older than the server keeps.
    pub fn expired(asked: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {asked} ({oldest})"),
        )
    }

    /// A fault injected by a test: the code it chose, with that code's usual reason.
    pub fn injected(code: u16) -> Self {
        let (reason, message) = match code {
            400 => ("BadRequest", "injected fault"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "injected fault: forbidden"),
            404 => ("NotFound", "injected fault: not found"),
            409 => ("Conflict", "injected fault: conflict"),
            410 => ("Expired", "injected fault: expired"),
            422 => ("Invalid", "injected fault: invalid"),
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            503 => ("ServiceUnavailable", "injected fault: service unavailable"),
            504 => ("Timeout", "injected fault: timeout"),
            _ => ("InternalError", "Internal error occurred: injected fault"),
        };
        Self::new(code, reason, message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The `Status` a delete that removed the object at once answers with.
pub fn deleted(rt: &ResourceType, name: &str, uid: &str) -> Value {
    let mut d = json!({ "name": name, "kind": rt.plural, "uid": uid });
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}
