//! The permissions the agent needs in a session's namespace, and asking the API server
//! whether the user holds them (for `doctor`).

use kube::{Api, Client};

use super::{ClusterError, Step, api_err};

/// One permission the agent needs in a session's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The Kubernetes verb (`get`, `list`, `watch`, `patch`, `delete`).
    pub verb: &'static str,
    /// The API group (empty for the core group).
    pub group: &'static str,
    /// The resource (plural), with any subresource after a slash (`pods/portforward`).
    pub resource: &'static str,
    /// What the agent does with it, for people reading `doctor`'s output.
    pub why: &'static str,
}

impl Permission {
    /// The resource as RBAC names it: `deployments.apps`, `pods`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// Every permission the agent uses in a session's namespace, from recording a session to
/// repairing it: the calls in this module (reading the original, listing and reading the
/// labelled proxies, the restore patch, the deletes) and the label watches of
/// `daemon::follow` (a watch is a list, then a watch). Nothing else is asked of the cluster;
/// in particular the restore patches the Deployment itself, never its `scale` subresource.
///
/// Keep it in step with the calls: `doctor` checks each entry with a
/// SelfSubjectAccessReview, and the README's "doctor" section lists them (a unit test
/// compares the two).
pub const NEEDED_PERMISSIONS: &[Permission] = &[
    Permission {
        verb: "get",
        group: "apps",
        resource: "deployments",
        why: "read the original's replica count before Telepresence scales it down",
    },
    Permission {
        verb: "list",
        group: "apps",
        resource: "deployments",
        why: "find the session's proxy Deployment by its label",
    },
    Permission {
        verb: "watch",
        group: "apps",
        resource: "deployments",
        why: "notice the proxy Deployment as Telepresence creates it",
    },
    Permission {
        verb: "patch",
        group: "apps",
        resource: "deployments",
        why: "scale the original back",
    },
    Permission {
        verb: "delete",
        group: "apps",
        resource: "deployments",
        why: "delete the proxy Deployment",
    },
    Permission {
        verb: "get",
        group: "",
        resource: "pods",
        why: "read a recorded proxy pod by name",
    },
    Permission {
        verb: "list",
        group: "",
        resource: "pods",
        why: "find the session's proxy pod by its label",
    },
    Permission {
        verb: "watch",
        group: "",
        resource: "pods",
        why: "notice the proxy pod as Telepresence creates it",
    },
    Permission {
        verb: "delete",
        group: "",
        resource: "pods",
        why: "delete the proxy pod",
    },
    Permission {
        verb: "get",
        group: "",
        resource: "services",
        why: "read a recorded proxy Service by name",
    },
    Permission {
        verb: "list",
        group: "",
        resource: "services",
        why: "find the session's proxy Service by its label",
    },
    Permission {
        verb: "watch",
        group: "",
        resource: "services",
        why: "notice the proxy Service as Telepresence creates it",
    },
    Permission {
        verb: "delete",
        group: "",
        resource: "services",
        why: "delete the proxy Service",
    },
];

/// What a SelfSubjectAccessReview answered: whether the permission is granted, and the
/// authorizer's reason (often empty for a refusal).
/// What team mode adds (the heartbeat Lease, the facts on a 0.106+ proxy Pod; patching a
/// 0.105 proxy Deployment is among [`NEEDED_PERMISSIONS`]).
pub const TEAM_PERMISSIONS: &[Permission] = &[
    Permission {
        verb: "get",
        group: "coordination.k8s.io",
        resource: "leases",
        why: "read the session's heartbeat Lease",
    },
    Permission {
        verb: "create",
        group: "coordination.k8s.io",
        resource: "leases",
        why: "make the session's heartbeat Lease",
    },
    Permission {
        verb: "update",
        group: "coordination.k8s.io",
        resource: "leases",
        why: "renew the heartbeat",
    },
    Permission {
        verb: "delete",
        group: "coordination.k8s.io",
        resource: "leases",
        why: "remove the heartbeat when the session ends",
    },
    Permission {
        verb: "patch",
        group: "",
        resource: "pods",
        why: "write the recovery facts on the proxy Pod",
    },
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAnswer {
    /// Whether the current user may do it.
    pub allowed: bool,
    /// Why, as the authorizer says (with any evaluation error appended).
    pub reason: String,
}

/// Asks the API server whether the client's user holds `perm` in `namespace`, with a
/// SelfSubjectAccessReview (`POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`),
/// as `kubectl auth can-i` does. Nothing is changed in the cluster.
pub async fn review_access(
    client: &Client,
    namespace: &str,
    perm: &Permission,
) -> Result<AccessAnswer, ClusterError> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let (resource, subresource) = match perm.resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub.to_string())),
        None => (perm.resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some(perm.verb.to_string()),
                group: Some(perm.group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(api_err(Step::Review {
            verb: perm.verb,
            resource: perm.qualified_resource(),
            namespace: namespace.to_string(),
        }))?;
    let status = answer.status.unwrap_or_default();
    let mut reason = status.reason.unwrap_or_default();
    if let Some(e) = status.evaluation_error.filter(|e| !e.is_empty()) {
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str(&e);
    }
    Ok(AccessAnswer {
        allowed: status.allowed,
        reason,
    })
}
