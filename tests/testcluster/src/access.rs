//! Access reviews: `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`, which
//! `kubectl auth can-i` and permission checks send to ask "may I do this?".
//!
//! The emulator has no RBAC; what stands in for it are the rules a test sets:
//! [`TestCluster::deny`](crate::TestCluster::deny) and the 403s of
//! [`TestCluster::fail`](crate::TestCluster::fail). A review answers from those same rules,
//! so that what it says and what the request then gets agree, as on a real server: a denied
//! `patch deployments` is `allowed: false` in a review and a 403 when sent. Everything else
//! is allowed, as for a cluster admin.
//!
//! Reviews are not stored: the answer is the request with its `status` filled in, `201
//! Created`, as the real server answers.

use serde_json::{Value, json};

use crate::api::admit;
use crate::resources::ResourceType;
use crate::state::{FailRule, Faults};
use crate::status::ApiError;

/// The reason an allowed review gives, worded as RBAC words it.
pub const ALLOWED_REASON: &str = "RBAC: allowed by ClusterRoleBinding \"testcluster-admin\" of ClusterRole \"cluster-admin\" to User \"testcluster-user\"";

/// What a review asks about, as `(verb, resource)`, the resource with any subresource
/// (`deployments/scale`), both possibly `*`; `None` for a non-resource request (a URL path).
/// A review must ask about exactly one of the two (else 422, worded as the real server).
fn asked(rt: &ResourceType, spec: &Value) -> Result<Option<(String, String)>, ApiError> {
    let invalid = |field: &str, message: &str| {
        ApiError::invalid(rt, "", &[(field.to_string(), message.to_string())])
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (resource, non_resource) {
        (Some(r), None) => {
            let sub = text(r, "subresource");
            let mut res = text(r, "resource");
            if !sub.is_empty() {
                res = format!("{res}/{sub}");
            }
            Ok(Some((text(r, "verb"), res)))
        }
        (None, Some(_)) => Ok(None),
        (None, None) => Err(invalid(
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "spec.nonResourceAttributes",
            "Invalid value: \"non-null\": cannot be specified in combination with resourceAttributes",
        )),
    }
}

/// Whether `rule` covers a review of `verb` on `resource`. A review of `*` asks about every
/// verb (or resource), so any rule on one of them refuses it.
fn covers(rule: &FailRule, verb: &str, resource: &str) -> bool {
    let one = |r: &str, asked: &str| r == "*" || asked == "*" || r == asked;
    one(&rule.verb, verb) && one(&rule.resource, resource)
}

/// The decision for `verb` on `resource`: allowed, and why.
pub fn decide(faults: &Faults, verb: &str, resource: &str) -> (bool, String) {
    if faults.denials.iter().any(|r| covers(r, verb, resource)) {
        return (
            false,
            format!("testcluster: {verb} on {resource} is denied (TestCluster::deny)"),
        );
    }
    let refused = faults
        .rules
        .iter()
        .any(|r| r.code == 403 && covers(r, verb, resource));
    if refused {
        return (
            false,
            format!("testcluster: {verb} on {resource} is refused by an injected 403"),
        );
    }
    (true, ALLOWED_REASON.to_string())
}

/// Answers a review: the request decoded as a `SelfSubjectAccessReview` (unknown fields
/// refused when `strict`), with `status.allowed` and `status.reason` set from `faults`.
pub fn review(
    rt: &ResourceType,
    faults: &Faults,
    body: &Value,
    strict: bool,
) -> Result<Value, ApiError> {
    let mut obj = admit(rt, body, strict)?;
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let asked = asked(rt, &spec)?;
    let (allowed, reason) = match asked {
        Some((verb, resource)) => decide(faults, &verb, &resource),
        None => (true, ALLOWED_REASON.to_string()),
    };
    obj["metadata"] = json!({"creationTimestamp": null});
    obj["status"] = json!({"allowed": allowed, "reason": reason});
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_plural;

    fn ssar(verb: &str, resource: &str, sub: Option<&str>) -> Value {
        let mut attrs =
            json!({"namespace": "default", "verb": verb, "group": "apps", "resource": resource});
        if let Some(s) = sub {
            attrs["subresource"] = json!(s);
        }
        json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes": attrs},
            "status": {"allowed": false},
        })
    }

    fn rule(code: u16, verb: &str, resource: &str) -> FailRule {
        FailRule {
            code,
            verb: verb.to_string(),
            resource: resource.to_string(),
        }
    }

    fn rt() -> &'static ResourceType {
        by_plural("selfsubjectaccessreviews").expect("served")
    }

    #[test]
    fn everything_is_allowed_without_rules() {
        let out = review(
            rt(),
            &Faults::default(),
            &ssar("patch", "deployments", None),
            false,
        )
        .expect("answered");
        assert_eq!(out["status"]["allowed"], true);
        assert_eq!(out["status"]["reason"], ALLOWED_REASON);
        assert_eq!(out["spec"]["resourceAttributes"]["verb"], "patch");
        assert_eq!(out["kind"], "SelfSubjectAccessReview");
    }

    #[test]
    fn denials_and_injected_403s_refuse_what_they_cover() {
        let faults = Faults {
            denials: vec![rule(403, "patch", "deployments")],
            rules: vec![
                rule(403, "delete", "pods"),
                rule(500, "get", "services"),
                rule(403, "*", "deployments/scale"),
            ],
            ..Default::default()
        };
        let allowed = |verb: &str, res: &str, sub: Option<&str>| {
            review(rt(), &faults, &ssar(verb, res, sub), false).expect("answered")["status"]["allowed"]
                == true
        };
        assert!(!allowed("patch", "deployments", None));
        assert!(!allowed("delete", "pods", None));
        assert!(!allowed("get", "deployments", Some("scale")));
        assert!(
            !allowed("*", "deployments", None),
            "all verbs include patch"
        );
        assert!(allowed("get", "deployments", None));
        assert!(allowed("get", "services", None), "a 500 is not a refusal");
        let (_, why) = decide(&faults, "patch", "deployments");
        assert!(why.contains("patch on deployments"), "{why}");
    }

    #[test]
    fn a_review_must_ask_about_exactly_one_thing() {
        let mut body = ssar("get", "pods", None);
        body["spec"] = json!({});
        let e = review(rt(), &Faults::default(), &body, false).expect_err("invalid");
        assert_eq!(e.code, 422);
        assert!(e.message.contains("exactly one of"), "{}", e.message);
        body["spec"] = json!({"nonResourceAttributes": {"path": "/version", "verb": "get"}});
        let out = review(rt(), &Faults::default(), &body, false).expect("answered");
        assert_eq!(out["status"]["allowed"], true);
    }

    #[test]
    fn strict_validation_refuses_unknown_fields() {
        let mut body = ssar("get", "pods", None);
        body["spec"]["bogus"] = json!(1);
        assert!(review(rt(), &Faults::default(), &body, false).is_ok());
        let e = review(rt(), &Faults::default(), &body, true).expect_err("strict");
        assert_eq!(e.code, 400);
    }
}
