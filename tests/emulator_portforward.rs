//! The emulator's `pods/portforward`, driven by kube-rs's own port-forward (WebSocket,
//! `v4.channel.k8s.io`): what a test registers as a pod's port is reached both ways, a port
//! nothing listens on is reported on its error channel, and a missing pod or an RBAC
//! refusal (`get`; from 1.35 `create` too) is the API server's 404 or 403 before any upgrade.
//! And with the real `kubectl port-forward`, over SPDY/3.1 tunnelled in WebSocket and plain.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::emulator_kube::{client, start};

/// A pod `p` in `default` (stored as is: nothing runs it, as nothing runs any pod here).
fn with_pod(c: &testcluster::TestCluster) {
    c.create(
        "pods",
        "default",
        &json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }),
    )
    .expect("the pod is created");
}

/// A listener that answers each read with the same bytes upper-cased, once per connection.
async fn upper_caser() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = l.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let up = buf[..n].to_ascii_uppercase();
                    if s.write_all(&up).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn kube_rs_port_forward_reaches_the_registered_port_both_ways() {
    let c = start();
    with_pod(&c);
    c.forward("default", "p", 8081, upper_caser().await);
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let mut pf = pods.portforward("p", &[8081]).await.expect("upgraded");
    let mut stream = pf.take_stream(8081).expect("the port's stream");
    for word in [&b"ping"[..], b"second message"] {
        stream.write_all(word).await.expect("written");
        let mut got = vec![0u8; word.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_exact(&mut got),
        )
        .await
        .expect("an answer in time")
        .expect("read");
        assert_eq!(
            got,
            word.to_ascii_uppercase(),
            "the listener's answer comes back"
        );
    }
    drop(stream);
    pf.abort();
    let audit = c.audit();
    assert!(
        audit
            .iter()
            .any(|e| e.resource == "pods/portforward" && e.verb == "get" && e.status == 101),
        "audited as a get of pods/portforward, switched to WebSocket: {audit:#?}"
    );
}

#[tokio::test]
async fn a_port_nothing_listens_on_is_reported_on_its_error_channel() {
    let c = start();
    with_pod(&c);
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let mut pf = pods.portforward("p", &[9999]).await.expect("upgraded");
    let error = pf.take_error(9999).expect("the port's error channel");
    let said = tokio::time::timeout(std::time::Duration::from_secs(10), error)
        .await
        .expect("an error in time");
    let said = said.expect("an error message");
    assert!(
        said.starts_with("error forwarding port 9999 to pod default/p"),
        "{said}"
    );
    pf.abort();
}

#[tokio::test]
async fn a_missing_pod_is_404_and_a_refused_forward_403_before_any_upgrade() {
    let c = start();
    with_pod(&c);
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let code = |r: Result<kube::api::Portforwarder, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("not an API refusal: {e}"),
        Ok(_) => panic!("upgraded"),
    };
    assert_eq!(code(pods.portforward("gone", &[8081]).await), 404);
    c.deny("get", "pods/portforward");
    assert_eq!(code(pods.portforward("p", &[8081]).await), 403);
}

#[tokio::test]
async fn from_1_35_the_upgrade_also_needs_create() {
    for (minor, refused) in [(31, false), (35, true)] {
        let c = testcluster::TestCluster::start(testcluster::Options {
            minor,
            ..Default::default()
        })
        .expect("the emulator starts");
        with_pod(&c);
        c.forward("default", "p", 8081, upper_caser().await);
        c.deny("create", "pods/portforward");
        let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
        match pods.portforward("p", &[8081]).await {
            Err(kube::Error::Api(s)) => {
                assert!(refused, "1.{minor}: refused: {s:?}");
                assert_eq!(s.code, 403);
            }
            Err(e) => panic!("1.{minor}: not an API refusal: {e}"),
            Ok(pf) => {
                assert!(
                    !refused,
                    "1.{minor}: a create denial must refuse the upgrade"
                );
                pf.abort();
            }
        }
    }
}

/// The same upper-caser, on a thread of its own (for tests without a runtime).
fn upper_caser_thread() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
    let addr = l.local_addr().expect("an address");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The real `kubectl port-forward` reaches what the test registered, both ways, for several
/// connections, and a port nothing listens on is reported by kubectl as the kubelet's error:
/// over the SPDY it tunnels in WebSocket (its first choice from 1.31, a GET), and over plain
/// SPDY/3.1 (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, a POST: `create`).
#[test]
fn the_real_kubectl_port_forward_reaches_the_registered_port() {
    for (websockets, verb) in [("true", "get"), ("false", "create")] {
        let Some(env) = crate::util::Env::new() else {
            return;
        };
        with_pod(&env.cluster);
        env.cluster
            .forward("default", "p", 8081, upper_caser_thread());
        kubectl_port_forward(&env, websockets);
        let upgrades: Vec<(String, u16)> = env
            .cluster
            .audit()
            .into_iter()
            .filter(|a| a.resource == "pods/portforward")
            .map(|a| (a.verb, a.status))
            .collect();
        assert_eq!(
            upgrades,
            [(verb.to_string(), 101)],
            "websockets={websockets}"
        );
    }
}

fn kubectl_port_forward(env: &crate::util::Env, websockets: &str) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut kubectl = env
        .kubectl_cmd(&[
            "port-forward",
            "--address",
            "127.0.0.1",
            "pod/p",
            ":8081",
            ":9999",
        ])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut out = BufReader::new(kubectl.stdout.take().expect("stdout"));
    let mut local = |remote: u16| {
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("kubectl says where it forwards");
        // "Forwarding from 127.0.0.1:43567 -> 8081"
        let at = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.split_once(" -> "))
            .filter(|(_, to)| to.trim() == remote.to_string())
            .and_then(|(port, _)| port.parse::<u16>().ok());
        at.unwrap_or_else(|| panic!("not a forwarding line: {line:?}"))
    };
    let (first, second) = (local(8081), local(9999));
    for round in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", first)).expect("connected");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout set");
        for word in [format!("ping {round}"), "second message".to_string()] {
            s.write_all(word.as_bytes()).expect("written");
            let mut got = vec![0u8; word.len()];
            s.read_exact(&mut got).expect("the upper-cased answer");
            assert_eq!(got, word.to_ascii_uppercase().into_bytes());
        }
    }
    // Nothing listens on 9999: the connection is closed, and kubectl prints the error.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", second)).expect("connected");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout set");
    let _ = s.write_all(b"x");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let _ = kubectl.kill();
    let _ = kubectl.wait();
    let mut err = String::new();
    let _ = kubectl
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(
        err.contains("error forwarding port 9999 to pod default/p"),
        "kubectl's stderr: {err}"
    );
}
