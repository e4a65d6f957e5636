//! A client for a recorded session's cluster.

use std::collections::HashMap;

use kube::Client;
use kube::config::KubeConfigOptions;

use super::binding::{load_merged, resolve_server};
use super::{ClusterError, Step, api_err};
use crate::session::ClusterBinding;

/// A client for a recorded session's cluster. Refuses when the context now points at
/// another API server than the one recorded.
pub async fn client_for(b: &ClusterBinding) -> Result<Client, ClusterError> {
    let mut kc = load_merged(&b.kubeconfig)?;
    let now = resolve_server(&kc, &b.context)?;
    if now != b.server {
        return Err(ClusterError::ServerChanged {
            context: b.context.clone(),
            recorded: b.server.clone(),
            now,
        });
    }
    // Exec credential plugins run with the session's PATH and HOME, not the service's.
    for ai in &mut kc.auth_infos {
        if let Some(exec) = ai.auth_info.as_mut().and_then(|a| a.exec.as_mut()) {
            let env = exec.env.get_or_insert_with(Vec::new);
            for (k, v) in &b.exec_env {
                if !env.iter().any(|e| e.get("name") == Some(k)) {
                    env.push(HashMap::from([
                        ("name".to_string(), k.clone()),
                        ("value".to_string(), v.clone()),
                    ]));
                }
            }
        }
    }
    let opts = KubeConfigOptions {
        context: Some(b.context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| ClusterError::Client {
            context: b.context.clone(),
            source: Box::new(e),
        })?;
    // Building the client runs an exec credential plugin (`aws`, `gcloud`, ...) with a
    // blocking wait: on a blocking thread, bounded, so that a plugin that hangs (or waits for
    // a login on a terminal) stalls neither the daemon nor `doctor`.
    let context = b.context.clone();
    let build = tokio::task::spawn_blocking(move || Client::try_from(config));
    match tokio::time::timeout(CLIENT_BUILD_TIMEOUT, build).await {
        Ok(Ok(Ok(client))) => Ok(client),
        Ok(Ok(Err(e))) => Err(ClusterError::Client {
            context,
            source: Box::new(e),
        }),
        Ok(Err(join)) => Err(ClusterError::Client {
            context,
            source: Box::new(join),
        }),
        Err(_) => Err(ClusterError::Client {
            context,
            source: format!(
                "no client after {CLIENT_BUILD_TIMEOUT:?}: its credential plugin did not finish"
            )
            .into(),
        }),
    }
}

/// How long building a client (and running its credential plugin) may take.
const CLIENT_BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The API server's version (`GET /version`, which every authenticated user may read):
/// the cheapest request that proves the server answers and accepts the credentials.
pub async fn server_version(client: &Client) -> Result<String, ClusterError> {
    client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .map_err(api_err(Step::Version))
}
