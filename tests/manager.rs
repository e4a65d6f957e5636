//! The agent's way to Telepresence 2's traffic-manager (`effects::manager`): through the
//! emulator's `pods/portforward` to the stand-in, found as Telepresence's connector finds it
//! (`svc/traffic-manager`'s `api` port, a running pod its selector picks), then `Depart` and
//! `WatchIntercepts` over gRPC. And what a person is told when it cannot be reached.

use std::time::Duration;

use telepolice_agent::effects::cluster::ClusterError;
use telepolice_agent::effects::manager::{Manager, ManagerError};
use trafficmanager::{Options, TrafficManager};

use crate::emulator_kube::{client, start};
use crate::util::{TRAFFIC_MANAGER_POD as POD, install_traffic_manager as install};

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
