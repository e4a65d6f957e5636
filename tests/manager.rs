//! The agent's way to Telepresence 2's traffic-manager (`effects::manager`): through the
//! emulator's `pods/portforward` to the stand-in, found as Telepresence's connector finds it
//! (`svc/traffic-manager`'s `api` port, a running pod its selector picks), then `Depart` and
//! `WatchIntercepts` over gRPC. And what a person is told when it cannot be reached.

use std::time::Duration;

use serde_json::json;
use telepolice_agent::effects::cluster::ClusterError;
use telepolice_agent::effects::manager::{Manager, ManagerError};
use testcluster::TestCluster;
use trafficmanager::{Options, TrafficManager};

use crate::emulator_kube::{client, start};

pub(crate) const POD: &str = "traffic-manager-6c4b8f9d7-x2x9z";

/// What `telepresence helm install` leaves in `namespace`, as far as reaching the manager
/// goes: its Service (`api` port, named target port) and a pod its selector picks, whose
/// `api` port the emulator forwards to the stand-in. Returns once the pod runs.
pub(crate) fn install(c: &TestCluster, namespace: &str, tm: &TrafficManager) -> anyhow::Result<()> {
    if c.get("namespaces", "", namespace).is_none() {
        c.create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let labels = json!({"app": "traffic-manager", "telepresence": "manager"});
    c.create(
        "services",
        namespace,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "traffic-manager", "namespace": namespace, "labels": labels},
            "spec": {"clusterIP": "None", "selector": labels,
                     "ports": [{"name": "api", "port": 8081, "targetPort": "api"}]},
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.create(
        "pods",
        namespace,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": POD, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "traffic-manager", "image": "ghcr.io/telepresenceio/tel2:2.20.2",
                     "ports": [{"name": "api", "containerPort": 8081}, {"name": "https", "containerPort": 8443}]}]},
        }),
    ).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.forward(namespace, POD, 8081, tm.addr());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let phase = c
            .get("pods", namespace, POD)
            .map(|p| p["status"]["phase"].clone());
        if phase == Some(json!("Running")) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the manager pod never ran: {phase:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_session_is_seen_and_departed_through_a_port_forward() -> anyhow::Result<()> {
    let c = start();
    let tm = TrafficManager::start(Options::default())?;
    install(&c, "ambassador", &tm)?;
    let session = tm.arrive("dev@laptop", "default");
    let kube = client(&c).await;

    let m = Manager::connect(&kube, "ambassador").await?;
    assert_eq!(m.pod, POD);
    assert_eq!(m.version().await?.version, "2.20.2");
    assert_eq!(
        m.session_intercepts(&session.session_id).await?,
        Some(vec![])
    );
    m.depart(&session.session_id).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tm.sessions().is_empty() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "not departed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.session_intercepts(&session.session_id).await?, None);
    // Nothing kept it alive on the way.
    assert!(
        tm.calls().iter().all(|call| call.method != "Remain"),
        "{:?}",
        tm.calls()
    );
    // The port-forward was asked of the manager's pod, at its container port.
    assert!(
        c.audit().iter().any(|a| a
            .path
            .ends_with(&format!("/namespaces/ambassador/pods/{POD}/portforward"))),
        "no port-forward in the audit log"
    );
    Ok(())
}

#[tokio::test]
async fn without_a_manager_or_the_right_to_forward_the_error_says_which() -> anyhow::Result<()> {
    let c = start();
    let kube = client(&c).await;
    let none = Manager::connect(&kube, "ambassador").await.err();
    match &none {
        Some(
            e @ ManagerError::NoManager {
                transient: false, ..
            },
        ) => assert_eq!(
            e.to_string(),
            "no traffic-manager to reach in namespace ambassador: no service/traffic-manager"
        ),
        other => panic!("{other:?}"),
    }

    let tm = TrafficManager::start(Options::default())?;
    install(&c, "ambassador", &tm)?;
    c.deny("get", "pods/portforward");
    let refused = Manager::connect(&kube, "ambassador").await.err();
    match &refused {
        Some(e @ ManagerError::Cluster(ClusterError::Api { .. })) => {
            assert!(!e.is_transient());
            let said = e.to_string();
            assert!(
                said.starts_with(&format!(
                    "forwarding to port 8081 of pod {POD} in ambassador: "
                )),
                "{said}"
            );
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}
