//! The token, injected faults and latency, the reported version, field selectors, delete
//! cascades, rollouts, namespace deletion and access reviews, through the real `kubectl`.

use super::*;

#[test]
fn the_token_is_required() {
    let Some(env) = Env::new() else { return };
    let bad = std::fs::read_to_string(&env.kubeconfig)
        .expect("kubeconfig")
        .replace(env.cluster.token(), "wrong-token");
    let bad_path = env.path("bad-kubeconfig");
    std::fs::write(&bad_path, bad).expect("written");
    let out = env
        .kubectl_cmd(&[
            "get",
            "pods",
            "--kubeconfig",
            bad_path.to_str().unwrap_or(""),
        ])
        .output()
        .expect("kubectl runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthorized") || err.contains("provide credentials"),
        "{err}"
    );
    assert!(env.cluster.audit().iter().any(|e| e.status == 401));
}

#[test]
fn unreachable_refuses_connections_until_reachable_again() {
    let Some(env) = Env::new() else { return };
    env.kubectl_ok(&["get", "namespaces"]);
    assert!(env.cluster.set_reachable(false));
    let out = env.kubectl(&["get", "namespaces", "--request-timeout=5s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
    assert!(env.cluster.set_reachable(true));
    let ns = env.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(ns.contains("namespace/default"), "{ns}");
}

#[test]
fn injected_errors_and_the_audit_log() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 1);
    env.cluster
        .control("fail 403 patch deployments/scale")
        .expect("a valid control");
    let out = env.kubectl(&["scale", "deployment", "web", "--replicas=3"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Other verbs and resources are untouched.
    env.kubectl_ok(&["get", "deployment", "web"]);
    env.cluster.control("clear").expect("a valid control");
    env.kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    assert!(env.cluster.control("fail 700 get pods").is_err());
    assert!(env.cluster.control("explode").is_err());

    let audit = env.cluster.audit();
    let scales: Vec<_> = audit
        .iter()
        .filter(|e| e.resource == "deployments/scale")
        .collect();
    assert_eq!(
        scales.iter().map(|e| e.status).collect::<Vec<_>>(),
        [403, 200]
    );
    assert!(
        scales.iter().all(|e| e.user_agent.starts_with("kubectl")),
        "{scales:?}"
    );
    assert!(
        scales
            .iter()
            .all(|e| e.namespace.as_deref() == Some("default") && e.name.as_deref() == Some("web"))
    );
}

#[test]
fn latency_is_added_to_every_answer() {
    let Some(env) = Env::new() else { return };
    env.kubectl_ok(&["get", "namespaces"]);
    env.cluster.control("latency 300").expect("a valid control");
    let start = std::time::Instant::now();
    env.kubectl_ok(&["get", "namespace", "default"]);
    // kubectl makes at least one request; each waits at least the latency.
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn the_reported_version_picks_kubectl() {
    let Some(env) = Env::with(testcluster::Options {
        minor: 29,
        ..Default::default()
    }) else {
        return;
    };
    let v = env.get_json(&["version"]);
    assert_eq!(v["serverVersion"]["minor"], "29");
    env.kubectl_ok(&["create", "deployment", "gen", "--image=example/gen:1"]);
    assert!(env.cluster.get("deployments", "default", "gen").is_some());
}

#[test]
fn field_selectors_filter_and_unknown_fields_are_refused() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 2);
    env.wait("two running pods", |c| {
        live_pods(c, "default", "web")
            .iter()
            .filter(|p| text(p, "/status/phase") == "Running")
            .count()
            == 2
    });
    let running = env.kubectl_ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ]);
    assert_eq!(running.lines().count(), 2, "{running}");
    let pending = env.kubectl_ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase!=Running",
        "-o",
        "name",
    ]);
    assert_eq!(pending.trim(), "");
    let web = env.kubectl_ok(&[
        "get",
        "deployments",
        "--field-selector",
        "metadata.name=web",
        "-o",
        "name",
    ]);
    assert_eq!(web.trim(), "deployment.apps/web");
    let all = env.kubectl_ok(&["get", "pods", "--all-namespaces", "-o", "name"]);
    assert_eq!(all.lines().count(), 2, "{all}");
    let bad = env.kubectl(&["get", "pods", "--field-selector", "spec.bogus=x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("field label not supported: spec.bogus"));
}

#[test]
fn cascade_orphan_keeps_the_replica_set_and_foreground_waits_for_the_pods() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "kept", 1);
    env.wait("a pod", |c| live_pods(c, "default", "kept").len() == 1);
    env.kubectl_ok(&["delete", "deployment", "kept", "--cascade=orphan"]);
    env.wait("the deployment is gone", |c| {
        c.get("deployments", "default", "kept").is_none()
    });
    let rs = env.cluster.list("replicasets", Some("default"));
    assert_eq!(rs.len(), 1, "the replica set is orphaned, not deleted");
    assert!(
        rs[0].pointer("/metadata/ownerReferences").is_none(),
        "{}",
        rs[0]["metadata"]
    );
    assert_eq!(live_pods(&env.cluster, "default", "kept").len(), 1);

    env.deployment("default", "fg", 2);
    env.wait("two pods", |c| live_pods(c, "default", "fg").len() == 2);
    env.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    env.wait(
        "the deployment, its replica set and its pods are all gone",
        |c| {
            c.get("deployments", "default", "fg").is_none()
                && c.list("pods", Some("default"))
                    .iter()
                    .all(|p| text(p, "/metadata/labels/app") != "fg")
        },
    );
    let deletes: Vec<_> = env
        .cluster
        .audit()
        .into_iter()
        .filter(|e| e.verb == "delete")
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
}

#[test]
fn rollout_restart_makes_a_new_replica_set() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 1);
    env.wait("a replica set", |c| {
        c.list("replicasets", Some("default")).len() == 1
    });
    env.kubectl_ok(&["rollout", "restart", "deployment", "web"]);
    env.wait("a second replica set, the first scaled to 0", |c| {
        let rs = c.list("replicasets", Some("default"));
        rs.len() == 2 && rs.iter().filter(|r| r["spec"]["replicas"] == 0).count() == 1
    });
    env.wait("one live pod", |c| {
        live_pods(c, "default", "web").len() == 1
    });
    let out = env.kubectl_ok(&["rollout", "status", "deployment", "web", "--timeout=20s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn deleting_a_namespace_deletes_what_it_holds() {
    let Some(env) = Env::new() else { return };
    env.kubectl_ok(&["create", "namespace", "team"]);
    env.deployment("team", "web", 1);
    env.wait("a pod in team", |c| live_pods(c, "team", "web").len() == 1);
    let out = env.kubectl_ok(&["delete", "namespace", "team"]);
    assert!(out.contains("namespace \"team\" deleted"), "{out}");
    assert!(env.cluster.get("namespaces", "", "team").is_none());
    assert!(env.cluster.list("pods", Some("team")).is_empty());
    assert!(env.cluster.list("deployments", Some("team")).is_empty());
    let gone = env.kubectl(&["create", "configmap", "x", "-n", "team"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("namespaces \"team\" not found"));
}

#[test]
fn auth_can_i_follows_denials_and_the_requests_agree() {
    let Some(env) = Env::new() else { return };
    env.deployment("default", "web", 1);
    let can_i = |args: &[&str]| {
        let mut a = vec!["auth", "can-i"];
        a.extend(args);
        let out = env.kubectl(&a);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, said, err) = can_i(&["patch", "deployments"]);
    assert!(ok && said == "yes", "{said}\n{err}");

    env.cluster.deny("patch", "deployments");
    let (ok, said, err) = can_i(&["patch", "deployments"]);
    assert!(!ok, "kubectl auth can-i exits 1 for no: {said}\n{err}");
    assert!(
        said.starts_with("no") && said.contains("denied"),
        "kubectl prints no and the reason: {said}\n{err}"
    );
    // Other verbs, resources and namespaces are as before.
    let (ok, said, _) = can_i(&["get", "deployments"]);
    assert!(ok && said == "yes", "{said}");
    let (ok, said, _) = can_i(&["delete", "pods", "--namespace", "kube-system"]);
    assert!(ok && said == "yes", "{said}");
    // The request itself gets RBAC's 403, as the review said.
    let out = env.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot patch resource \"deployments\" in API group \"apps\""),
        "{err}"
    );

    // An injected 403 reads the same way in a review.
    env.cluster.fail(403, "delete", "services");
    let (ok, said, _) = can_i(&["delete", "services"]);
    assert!(!ok && said.starts_with("no"), "{said}");

    // A cluster that refuses the review itself answers as RBAC does for that API.
    env.cluster.fail(403, "create", "selfsubjectaccessreviews");
    let (ok, said, err) = can_i(&["get", "pods"]);
    assert!(!ok, "{said}");
    assert!(
        err.contains("cannot create resource \"selfsubjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope"),
        "{err}"
    );

    env.cluster.clear_faults();
    let (ok, said, _) = can_i(&["patch", "deployments"]);
    assert!(ok && said == "yes", "{said}");
    let reviews = env
        .cluster
        .audit()
        .into_iter()
        .filter(|e| e.resource == "selfsubjectaccessreviews")
        .map(|e| (e.verb, e.status))
        .collect::<Vec<_>>();
    assert_eq!(
        reviews,
        [201, 201, 201, 201, 201, 403, 201].map(|s| ("create".to_string(), s))
    );
}
