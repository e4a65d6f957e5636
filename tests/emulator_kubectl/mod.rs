//! The emulator's fidelity, checked with the real `kubectl`: what passes here would pass
//! against a real API server.
//!
//! - here: reading, watching, applying, scaling, patching, labelling, deleting, lists;
//! - `controls`: the token, faults and latency a test injects, the reported version,
//!   field selectors, cascades, rollouts, namespaces and access reviews.

mod controls;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Env, live_pods, text};

#[test]
fn get_prints_the_usual_columns_and_json() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 2);
    env.wait("two pods run", |c| {
        live_pods(c, "default", "web")
            .iter()
            .filter(|p| text(p, "/status/phase") == "Running")
            .count()
            == 2
    });
    let table = env.kubectl_ok(&["get", "deployments"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("2/2")),
        "{table}"
    );
    let pods = env.kubectl_ok(&["get", "pods"]);
    assert!(pods.starts_with("NAME"), "{pods}");
    assert_eq!(pods.matches("Running").count(), 2, "{pods}");
    let list = env.get_json(&["get", "pods", "-l", "app=web"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let one = env.get_json(&["get", "deployment", "web"]);
    assert_eq!(one["kind"], "Deployment");
    assert_eq!(one["status"]["readyReplicas"], 2);
    let missing = env.kubectl(&["get", "deployment", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("deployments.apps \"nope\" not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn get_watch_receives_a_change() {
    let Some(env) = Env::new() else { return };
    env.cluster
        .create(
            "configmaps",
            "default",
            &serde_json::json!({"metadata": {"name": "first"}, "data": {"a": "1"}}),
        )
        .expect("created");
    let mut child = env
        .kubectl_cmd(&["get", "configmaps", "-w", "--request-timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut seen = Vec::new();
    // Header and the existing object first.
    while let Some(Ok(l)) = lines.next() {
        seen.push(l.clone());
        if l.starts_with("first") {
            break;
        }
    }
    env.kubectl_ok(&["create", "configmap", "second", "--from-literal=b=2"]);
    let mut got_change = false;
    for l in lines.by_ref() {
        let Ok(l) = l else { break };
        seen.push(l.clone());
        if l.starts_with("second") {
            got_change = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(got_change, "the watch printed: {seen:#?}");
    assert!(seen[0].starts_with("NAME"), "{seen:#?}");
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: example/api:TAG
        ports: [{containerPort: 8080}]
      - name: sidecar
        image: example/sidecar:1
"#;

#[test]
fn apply_creates_then_updates_an_object() {
    let Some(env) = Env::new() else { return };
    let v1 = APP.replace("REPLICAS", "2").replace("TAG", "1");
    let out = env.kubectl_stdin_ok(&["apply", "-f", "-"], &v1);
    assert!(out.contains("deployment.apps/api created"), "{out}");
    let created = env.get_json(&["get", "deployment", "api"]);
    let uid = text(&created, "/metadata/uid");
    assert!(
        created
            .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
            .is_some()
    );

    let v2 = APP.replace("REPLICAS", "4").replace("TAG", "2");
    let out = env.kubectl_stdin_ok(&["apply", "-f", "-"], &v2);
    assert!(out.contains("deployment.apps/api configured"), "{out}");
    let updated = env.get_json(&["get", "deployment", "api"]);
    assert_eq!(
        text(&updated, "/metadata/uid"),
        uid,
        "apply updated in place"
    );
    assert_eq!(updated["spec"]["replicas"], 4);
    let containers = &updated["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "example/api:2");
    assert_eq!(
        containers[1]["image"], "example/sidecar:1",
        "the other container is kept"
    );
    assert_eq!(updated["metadata"]["generation"], 2);

    let unchanged = env.kubectl_stdin_ok(&["apply", "-f", "-"], &v2);
    assert!(unchanged.contains("unchanged"), "{unchanged}");

    let ss = env.kubectl_stdin_ok(
        &["apply", "--server-side", "-f", "-"],
        &APP.replace("REPLICAS", "1").replace("TAG", "3"),
    );
    assert!(ss.contains("serverside-applied"), "{ss}");
    let after = env.get_json(&["get", "deployment", "api"]);
    assert_eq!(after["spec"]["replicas"], 1);
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/api:3"
    );
}

#[test]
fn scale_to_zero_deletes_the_pods_and_back_to_three_runs_three() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 2);
    env.wait("two pods", |c| live_pods(c, "default", "web").len() == 2);
    env.kubectl_ok(&["scale", "deployment", "web", "--replicas=0"]);
    env.wait("no pods left", |c| {
        c.list("pods", Some("default")).is_empty()
    });
    env.kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    env.wait("three running, ready pods", |c| {
        let pods = live_pods(c, "default", "web");
        pods.len() == 3
            && pods.iter().all(|p| {
                text(p, "/status/phase") == "Running"
                    && text(p, "/status/containerStatuses/0/ready") == "true"
            })
    });
    env.wait("the deployment reports 3 available", |c| {
        c.get("deployments", "default", "web")
            .is_some_and(|d| d["status"]["availableReplicas"] == 3)
    });
    let audit = env.cluster.audit();
    let scale_patches: Vec<_> = audit
        .iter()
        .filter(|e| e.verb == "patch" && e.resource == "deployments/scale")
        .collect();
    assert_eq!(
        scale_patches.len(),
        2,
        "kubectl scale patches the scale subresource"
    );
    assert!(
        scale_patches
            .iter()
            .all(|e| e.content_type.starts_with("application/merge-patch+json"))
    );
}

#[test]
fn patch_merge_json_and_strategic() {
    let Some(env) = Env::new() else { return };
    env.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &APP.replace("REPLICAS", "1").replace("TAG", "1"),
    );
    env.kubectl_ok(&[
        "patch",
        "deployment",
        "api",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"backend"}}}"#,
    ]);
    env.kubectl_ok(&[
        "patch", "deployment", "api", "--type", "json", "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    let failed = env.kubectl(&[
        "patch", "deployment", "api", "--type", "json", "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":7},{"op":"replace","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(
        !failed.status.success(),
        "a failing test op rejects the patch"
    );
    env.kubectl_ok(&[
        "patch", "deployment", "api", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"example/sidecar:2"}]}}}}"#,
    ]);
    let d = env.get_json(&["get", "deployment", "api"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "backend");
    assert_eq!(d["spec"]["replicas"], 2, "the failed patch changed nothing");
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(cs.len(), 2, "strategic merge kept both containers: {cs:?}");
    let image = |n: &str| {
        cs.iter()
            .find(|c| c["name"] == n)
            .map(|c| c["image"].clone())
    };
    assert_eq!(image("sidecar"), Some(Value::from("example/sidecar:2")));
    assert_eq!(image("api"), Some(Value::from("example/api:1")));
}

#[test]
fn label_and_annotate() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 1);
    env.kubectl_ok(&["label", "deployment", "web", "owner=team-a"]);
    env.kubectl_ok(&["annotate", "deployment", "web", "note=hello world"]);
    let d = env.get_json(&["get", "deployment", "web"]);
    assert_eq!(d["metadata"]["labels"]["owner"], "team-a");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello world");
    env.kubectl_ok(&["label", "deployment", "web", "owner-"]);
    let d = env.get_json(&["get", "deployment", "web"]);
    assert!(
        d["metadata"]["labels"].get("owner").is_none(),
        "{}",
        d["metadata"]
    );
    let selected = env.kubectl_ok(&[
        "get",
        "deployments",
        "-l",
        "owner!=team-a,app in (web,other)",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "deployment.apps/web");
}

#[test]
fn delete_removes_the_object_and_garbage_collects_its_pods() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 2);
    env.wait("two pods", |c| live_pods(c, "default", "web").len() == 2);
    let out = env.kubectl_ok(&["delete", "deployment", "web"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(env.cluster.get("deployments", "default", "web").is_none());
    env.wait("replica sets and pods collected", |c| {
        c.list("replicasets", Some("default")).is_empty()
            && c.list("pods", Some("default")).is_empty()
    });
    let del = env
        .cluster
        .audit()
        .into_iter()
        .find(|e| e.verb == "delete" && e.resource == "deployments")
        .expect("the delete was audited");
    assert_eq!(del.status, 200);
}

#[test]
fn create_a_list_of_objects() {
    let Some(env) = Env::new() else { return };
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings, labels: {part: demo}}
  data: {mode: fast}
- apiVersion: v1
  kind: Service
  metadata: {name: web, labels: {part: demo}}
  spec:
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
- apiVersion: v1
  kind: Pod
  metadata: {name: solo, labels: {part: demo}}
  spec:
    containers: [{name: c, image: example/solo:1}]
"#;
    let out = env.kubectl_stdin_ok(&["create", "-f", "-"], list);
    for o in [
        "configmap/settings created",
        "service/web created",
        "pod/solo created",
    ] {
        assert!(out.contains(o), "{out}");
    }
    let svc = env.get_json(&["get", "service", "web"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(!text(&svc, "/spec/clusterIP").is_empty());
    let names = env.kubectl_ok(&[
        "get",
        "pods,services,configmaps",
        "-l",
        "part=demo",
        "-o",
        "name",
    ]);
    assert_eq!(names.lines().count(), 3, "{names}");
    let again = env.kubectl_stdin(&["create", "-f", "-"], list);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("AlreadyExists")
            || String::from_utf8_lossy(&again.stderr).contains("already exists")
    );
}
