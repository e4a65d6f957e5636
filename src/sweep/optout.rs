//! The opt-out: `telepolice.dev/sweep: "false"` on a namespace or on a workload keeps the
//! sweeper from touching its sessions (they are reported instead).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use crate::effects::cluster::{ClusterError, Step, api_err};
use crate::team::{Facts, SWEEP_OPT_OUT};

fn says_no(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    m.annotations
        .as_ref()
        .and_then(|a| a.get(SWEEP_OPT_OUT))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// Who opted the session's objects out (`namespace/N`, `deployment/D`), if anyone.
pub async fn opted_out(
    client: &kube::Client,
    facts: &Facts,
) -> Result<Option<String>, ClusterError> {
    let ns: Api<Namespace> = Api::all(client.clone());
    // A sweeper limited to one namespace may not read namespaces: then only workloads.
    match ns.get_opt(&facts.namespace).await {
        Ok(Some(n)) if says_no(&n.metadata) => {
            return Ok(Some(format!("namespace/{}", facts.namespace)));
        }
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        Err(e) => {
            return Err(api_err(Step::ReadWorkload {
                name: facts.namespace.clone(),
                namespace: String::new(),
            })(e));
        }
    }
    if let Some(d) = &facts.swapped {
        let deps: Api<Deployment> = Api::namespaced(client.clone(), &facts.namespace);
        let got = deps.get_opt(d).await.map_err(api_err(Step::ReadWorkload {
            name: d.clone(),
            namespace: facts.namespace.clone(),
        }))?;
        if got.is_some_and(|d| says_no(&d.metadata)) {
            return Ok(Some(format!("deployment/{d}")));
        }
    }
    Ok(None)
}
