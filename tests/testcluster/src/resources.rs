//! The resource types the emulator serves: their names for discovery and routing, and how a
//! body is checked against its `k8s-openapi` type (which also prunes unknown fields, as the
//! real server's decoder does).

use serde_json::Value;

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// Plural, lower case: `deployments`.
    pub plural: &'static str,
    /// Singular: `deployment`.
    pub singular: &'static str,
    /// Kind: `Deployment`.
    pub kind: &'static str,
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all`).
    pub categories: &'static [&'static str],
    /// Whether writes to the main resource leave `status` alone (it has a `/status`).
    pub has_status: bool,
    /// Whether `metadata.generation` tracks spec changes.
    pub tracks_generation: bool,
    /// The verbs served (and listed by discovery); any other verb is a 405.
    pub verbs: &'static [&'static str],
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every resource type served, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        has_status: true,
        tracks_generation: false,
        verbs: VERBS,
    },
    ResourceType {
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        verbs: VERBS,
    },
    ResourceType {
        plural: "services",
        singular: "service",
        kind: "Service",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        has_status: true,
        tracks_generation: false,
        verbs: VERBS,
    },
    ResourceType {
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        verbs: VERBS,
    },
    ResourceType {
        plural: "events",
        singular: "event",
        kind: "Event",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        verbs: VERBS,
    },
    ResourceType {
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        verbs: VERBS,
    },
    ResourceType {
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        has_status: true,
        tracks_generation: true,
        verbs: VERBS,
    },
    ResourceType {
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        group: "coordination.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        verbs: VERBS,
    },
    // Not stored: a review is answered from the access rules and forgotten (see `access`).
    ResourceType {
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        group: "authorization.k8s.io",
        version: "v1",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_status: false,
        tracks_generation: false,
        verbs: &["create"],
    },
];

/// The API groups served besides the core group, with their one version.
pub static GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("authorization.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
];

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by its plural alone (plurals are unique here).
pub fn by_plural(plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The subresources served, with the verbs and the kind each answers with.
pub fn subresources(rt: &ResourceType) -> Vec<(&'static str, &'static [&'static str])> {
    let mut out: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    if rt.has_status {
        out.push(("status", &["get", "patch", "update"]));
    }
    match rt.plural {
        "deployments" | "replicasets" => out.push(("scale", &["get", "patch", "update"])),
        "pods" => {
            out.push(("log", &["get"]));
            out.push(("portforward", &["create", "get"]));
        }
        _ => {}
    }
    out
}

impl ResourceType {
    /// `apiVersion` of its objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name errors use: `pods`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Decodes `body` as this type and encodes it again: the result holds only fields the
    /// type knows. The second value lists the paths of fields that were dropped.
    pub fn normalize(&self, body: &Value) -> Result<(Value, Vec<String>), String> {
        use k8s_openapi::api::{
            apps::v1 as apps, authorization::v1 as authz, coordination::v1 as coord,
            core::v1 as core,
        };
        fn round<T: serde::de::DeserializeOwned + serde::Serialize>(
            v: &Value,
        ) -> Result<Value, String> {
            let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
            serde_json::to_value(t).map_err(|e| e.to_string())
        }
        let out = match self.plural {
            "namespaces" => round::<core::Namespace>(body),
            "pods" => round::<core::Pod>(body),
            "services" => round::<core::Service>(body),
            "configmaps" => round::<core::ConfigMap>(body),
            "events" => round::<core::Event>(body),
            "deployments" => round::<apps::Deployment>(body),
            "replicasets" => round::<apps::ReplicaSet>(body),
            "leases" => round::<coord::Lease>(body),
            "selfsubjectaccessreviews" => round::<authz::SelfSubjectAccessReview>(body),
            other => Err(format!("no type for {other}")),
        }?;
        let mut dropped = Vec::new();
        dropped_fields(body, &out, String::new(), &mut dropped);
        Ok((out, dropped))
    }

    /// Checks what a real server's validation would reject for the fields the tests use.
    /// Returns `(field path, message)` pairs; empty means valid.
    pub fn validate(&self, obj: &Value) -> Vec<(String, String)> {
        let mut causes = Vec::new();
        check_metadata(obj, &mut causes);
        match self.plural {
            "pods" => check_pod_spec(obj.get("spec"), "spec", &mut causes),
            "deployments" | "replicasets" => check_workload(obj, &mut causes),
            "services" => check_service(obj, &mut causes),
            _ => {}
        }
        causes
    }
}

/// Checks the object's name and labels.
fn check_metadata(obj: &Value, causes: &mut Vec<(String, String)>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        causes.push((
            "metadata.name".to_string(),
            "Required value: name or generateName is required".to_string(),
        ));
    } else if !is_dns_subdomain(name) {
        causes.push((
            "metadata.name".to_string(),
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if v.len() > 63 {
                causes.push((
                    "metadata.labels".to_string(),
                    format!("Invalid value: \"{v}\": must be no more than 63 characters"),
                ));
            }
            if k.is_empty() {
                causes.push((
                    "metadata.labels".to_string(),
                    "Invalid value: \"\": name part must be non-empty".to_string(),
                ));
            }
        }
    }
}

/// Checks a deployment's or replica set's selector, replicas and pod template.
fn check_workload(obj: &Value, causes: &mut Vec<(String, String)>) {
    let selector = obj.pointer("/spec/selector/matchLabels");
    let template_labels = obj.pointer("/spec/template/metadata/labels");
    let has_exprs = obj
        .pointer("/spec/selector/matchExpressions")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    match (selector.and_then(Value::as_object), has_exprs) {
        (None, false) => causes.push(("spec.selector".to_string(), "Required value".to_string())),
        (Some(sel), _) => {
            let tl = template_labels.and_then(Value::as_object);
            let ok = sel
                .iter()
                .all(|(k, v)| tl.and_then(|t| t.get(k)) == Some(v));
            if !ok {
                causes.push((
                    "spec.template.metadata.labels".to_string(),
                    "Invalid value: `selector` does not match template `labels`".to_string(),
                ));
            }
        }
        (None, true) => {}
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push((
            "spec.replicas".to_string(),
            format!("Invalid value: {r}: must be greater than or equal to 0"),
        ));
    }
    check_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
}

/// Checks a service's ports.
fn check_service(obj: &Value, causes: &mut Vec<(String, String)>) {
    if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
        for (i, p) in ports.iter().enumerate() {
            if p.get("port").and_then(Value::as_i64).unwrap_or(0) <= 0 {
                causes.push((
                    format!("spec.ports[{i}].port"),
                    "Invalid value: 0: must be between 1 and 65535, inclusive".to_string(),
                ));
            }
        }
    }
}

fn check_pod_spec(spec: Option<&Value>, at: &str, causes: &mut Vec<(String, String)>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push((format!("{at}.containers"), "Required value".to_string())),
        Some(cs) if cs.is_empty() => {
            causes.push((format!("{at}.containers"), "Required value".to_string()))
        }
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push((
                        format!("{at}.containers[{i}].name"),
                        "Required value".to_string(),
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    causes.push((
                        format!("{at}.containers[{i}].image"),
                        "Required value".to_string(),
                    ));
                }
            }
        }
    }
}

/// Whether `s` is a lowercase RFC 1123 subdomain of at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Collects the paths of object keys present in `before` but not in `after`.
fn dropped_fields(before: &Value, after: &Value, at: String, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in b {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match a.get(k) {
                    Some(av) => dropped_fields(v, av, path, out),
                    None if v.is_null() => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                dropped_fields(bv, av, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_drops_unknown_fields_and_names_them() {
        let rt = by_plural("configmaps").expect("configmaps");
        let (v, dropped) = rt
            .normalize(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}, "extra": true}))
            .expect("decodes");
        assert_eq!(v["data"]["k"], "v");
        assert!(v["metadata"].get("bogus").is_none());
        assert_eq!(
            dropped,
            vec!["extra".to_string(), "metadata.bogus".to_string()]
        );
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let rt = by_plural("deployments").expect("deployments");
        let bad = json!({"metadata": {"name": "a"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = rt.validate(&bad);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].0, "spec.template.metadata.labels");
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(is_dns_subdomain("app-1.x"));
        assert!(!is_dns_subdomain("App"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(""));
    }
}
