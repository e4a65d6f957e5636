//! Carrying out a planned action, with the preconditions that make it safe: the restore is
//! pinned to the original's uid and to `spec.replicas == 0`, a delete to the object's uid.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use super::{ClusterError, Step, api_err};
use crate::lifecycle::Action;
use crate::session::ProxyKind;

/// Carries out one action with its preconditions.
pub async fn execute(
    client: &Client,
    namespace: &str,
    action: &Action,
) -> Result<(), ClusterError> {
    match action {
        Action::Restore {
            name,
            uid,
            replicas,
        } => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let patch: json_patch::Patch = serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "test", "path": "/spec/replicas", "value": 0},
                {"op": "replace", "path": "/spec/replicas", "value": replicas},
            ]))
            .map_err(|e| ClusterError::Client {
                context: String::new(),
                source: Box::new(e),
            })?;
            // The Deployment itself, not its scale subresource: a real server leaves
            // `spec.replicas` out of an autoscaling/v1 Scale at 0 (omitempty), so a `test`
            // op on the Scale could never pass; a Deployment always carries it.
            api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(api_err(Step::Restore {
                    name: name.clone(),
                    namespace: namespace.to_string(),
                    replicas: *replicas,
                }))?;
        }
        Action::Delete { kind, name, uid } => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            let step = Step::Delete {
                kind: *kind,
                name: name.clone(),
                namespace: namespace.to_string(),
            };
            let result = match kind {
                ProxyKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
                ProxyKind::Pod => Api::<Pod>::namespaced(client.clone(), namespace)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
                ProxyKind::Service => Api::<Service>::namespaced(client.clone(), namespace)
                    .delete(name, &dp)
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {}
                // Already gone: the goal is reached.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err(step)(e)),
            }
        }
    }
    Ok(())
}
