//! Unit tests of strategic merge patch and JSON merge patch: list merge keys, directives,
//! element order and the errors the real server gives.

use serde_json::json;

use super::*;

mod kinds;
mod order;

fn smp(original: Value, patch: Value) -> Value {
    match apply(&original, &patch) {
        Ok(v) => v,
        Err(e) => panic!("patch {patch} failed: {e}"),
    }
}

fn smp_err(original: Value, patch: Value) -> String {
    match apply(&original, &patch) {
        Ok(v) => panic!("patch {patch} unexpectedly gave {v}"),
        Err(e) => e,
    }
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|v| match &v[key] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "finalizers": ["a/one", "b/two"]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "web:1",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                        },
                        {"name": "sidecar", "image": "side:1"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "x", "operator": "Exists"}]
                }
            }
        },
        "status": {
            "conditions": [
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "True"}
            ]
        }
    })
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "containers": [{"name": "app", "image": "web:1"}],
            "initContainers": [{"name": "init", "image": "busybox"}]
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "podIPs": [{"ip": "10.0.0.1"}]
        }
    })
}

#[test]
fn patch_must_be_an_object() {
    assert!(apply(&pod(), &json!([1])).is_err());
    assert!(apply(&pod(), &json!("x")).is_err());
    assert!(apply(&pod(), &json!(null)).is_err());
    assert!(apply(&json!([]), &json!({})).is_err());
    assert_eq!(smp(pod(), json!({})), pod());
}

#[test]
fn maps_merge_and_null_deletes() {
    let out = smp(
        deployment(),
        json!({"metadata": {"labels": {"tier": "front", "app": null}, "annotations": {"x": "y"}},
               "spec": {"replicas": 5, "paused": null, "selector": null}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"tier": "front"}));
    assert_eq!(out["metadata"]["annotations"], json!({"x": "y"}));
    assert_eq!(out["spec"]["replicas"], json!(5));
    assert!(out["spec"].get("selector").is_none());
    assert!(out["spec"].get("paused").is_none());
    assert_eq!(out["metadata"]["name"], json!("web"));
}

#[test]
fn rollout_restart_patch() {
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        json!("2024-01-01T00:00:00Z")
    );
    assert_eq!(
        out["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(
        out["spec"]["template"]["spec"],
        deployment()["spec"]["template"]["spec"]
    );
}

#[test]
fn containers_merge_by_name() {
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["app", "sidecar"]);
    assert_eq!(cs[0]["image"], json!("web:2"));
    assert_eq!(
        cs[0]["env"],
        deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    );
    assert_eq!(cs[1]["image"], json!("side:1"));
}

#[test]
fn new_elements_go_in_front_without_set_element_order() {
    // As on a real server since 1.7: `kubectl patch` adding a container
    // gets it listed first.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["debug", "app", "sidecar"]);
    // With `$setElementOrder` (what `kubectl apply` sends) it goes where
    // the order says.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}, {"name": "debug"}],
            "containers": [{"name": "debug", "image": "busybox"}]
        }}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["app", "sidecar", "debug"]);
    // A server-only element stays in front of a patched element it
    // preceded.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["app", "sidecar"]);
}

#[test]
fn patch_order_wins_for_named_elements() {
    // The real server puts the patch's elements in the patch's order and
    // keeps server-only ones in front of what they preceded.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "new", "image": "n"},
            {"name": "app", "image": "web:3"}
        ]}}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["new", "app", "sidecar"]);

    let p = json!({"kind": "Pod", "spec": {"containers": [
        {"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    let out = smp(
        p,
        json!({"spec": {"containers": [{"name": "c", "x": 1}, {"name": "a", "x": 2}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"], "name"), ["b", "c", "a"]);
}

#[test]
fn nested_container_lists_merge_by_their_keys() {
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "app",
            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
            "ports": [{"containerPort": 9090, "name": "metrics"}, {"containerPort": 8080, "name": "http"}],
            "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
            "args": ["--c"]
        }]}}}}),
    );
    let app = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        app["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(names(&app["ports"], "containerPort"), ["9090", "8080"]);
    assert_eq!(
        app["ports"][1],
        json!({"containerPort": 8080, "protocol": "TCP", "name": "http"})
    );
    assert_eq!(
        app["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data", "readOnly": true}])
    );
    // args has no merge strategy: replaced.
    assert_eq!(app["args"], json!(["--c"]));
}

#[test]
fn unmerged_lists_are_replaced() {
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"tolerations": [{"key": "y", "operator": "Exists"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["tolerations"],
        json!([{"key": "y", "operator": "Exists"}])
    );
    // A ConfigMap or Event has no merged lists at all.
    let cm =
        json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}, "list": [1, 2]});
    let out = smp(cm, json!({"data": {"b": "2"}, "list": [3]}));
    assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(out["list"], json!([3]));
}

#[test]
fn delete_directive_in_list() {
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "delete", "name": "sidecar"},
            {"name": "app", "env": [{"$patch": "delete", "name": "A"}]}
        ]}}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["app"]);
    assert_eq!(cs[0]["env"], json!([{"name": "B", "value": "2"}]));
    // Deleting an absent element is fine.
    let out = smp(
        pod(),
        json!({"spec": {"containers": [{"$patch": "delete", "name": "nope"}]}}),
    );
    assert_eq!(out["spec"]["containers"], pod()["spec"]["containers"]);
    // The merge key is required.
    let e = smp_err(
        pod(),
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
    );
    assert!(
        e.contains("does not contain declared merge key: name"),
        "{e}"
    );
}

#[test]
fn replace_directive_in_list() {
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "o"},
            {"$patch": "replace"}
        ]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "o"}])
    );
    let e = smp_err(
        pod(),
        json!({"spec": {"containers": [{"$patch": "merge"}]}}),
    );
    assert_eq!(e, "merging lists cannot yet be specified in the patch");
    let e = smp_err(
        pod(),
        json!({"spec": {"containers": [{"$patch": "bogus", "name": "x"}]}}),
    );
    assert!(e.starts_with("unknown patch type: bogus"), "{e}");
}

#[test]
fn replace_directive_in_map() {
    let out = smp(
        deployment(),
        json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let out = smp(
        deployment(),
        json!({"metadata": {"labels": {"$patch": "replace", "new": "1", "gone": null}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));
}

#[test]
fn delete_directive_in_map_empties_it() {
    let out = smp(
        deployment(),
        json!({"spec": {"strategy": {"$patch": "delete"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({}));
    let out = smp(
        deployment(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({}));
    let e = smp_err(deployment(), json!({"spec": {"$patch": "merge"}}));
    assert!(e.starts_with("unknown patch type: merge in map:"), "{e}");
}

#[test]
fn retain_keys() {
    let out = smp(
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // Volumes: switching a volume's source drops the old one.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}}
        ]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}])
    );
    // A patched key missing from the list is an error.
    let e = smp_err(
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
    );
    assert_eq!(e, "invalid patch format of retainKeys");
    let e = smp_err(
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
    );
    assert_eq!(e, "invalid patch format of retainKeys");
    // Null values and directives need not be listed.
    let out = smp(
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "RollingUpdate"}));
}

#[test]
fn finalizers_merge_as_a_set() {
    let out = smp(
        deployment(),
        json!({"metadata": {"finalizers": ["b/two", "c/three"]}}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["a/one", "b/two", "c/three"])
    );
    let out = smp(
        deployment(),
        json!({"metadata": {"finalizers": ["c/three"]}}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["c/three", "a/one", "b/two"])
    );
    let out = smp(deployment(), json!({"metadata": {"finalizers": []}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["a/one", "b/two"]));
    let out = smp(deployment(), json!({"metadata": {"finalizers": null}}));
    assert!(out["metadata"].get("finalizers").is_none());
    let out = smp(
        deployment(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/one", "zzz"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b/two"]));
    // Deleting from an absent list leaves it absent.
    let out = smp(
        pod(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
    );
    assert!(out["metadata"].get("finalizers").is_none());
    let e = smp_err(
        pod(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}),
    );
    assert_eq!(e, "invalid patch format of primitive list");
    let e = smp_err(
        deployment(),
        json!({"metadata": {"finalizers": [{"a": 1}]}}),
    );
    assert!(e.contains("not identical"), "{e}");
}

#[test]
fn owner_references_merge_by_uid() {
    let o = json!({"kind": "ReplicaSet", "metadata": {"name": "rs", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u1", "controller": true}
    ]}});
    let out = smp(
        o.clone(),
        json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "blockOwnerDeletion": true},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u2"}
        ]}}),
    );
    let refs = &out["metadata"]["ownerReferences"];
    assert_eq!(names(refs, "uid"), ["u1", "u2"]);
    assert_eq!(refs[0]["blockOwnerDeletion"], json!(true));
    assert_eq!(refs[0]["controller"], json!(true));
    let out = smp(
        o,
        json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "u1"}]}}),
    );
    assert_eq!(out["metadata"]["ownerReferences"], json!([]));
}

#[test]
fn status_conditions_merge_by_type() {
    let out = smp(
        pod(),
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Gone"},
            {"type": "PodScheduled", "status": "True"}
        ], "podIPs": [{"ip": "fd00::1"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([
            {"type": "Ready", "status": "False", "reason": "Gone"},
            {"type": "PodScheduled", "status": "True"}
        ])
    );
    assert_eq!(
        names(&out["status"]["podIPs"], "ip"),
        ["fd00::1", "10.0.0.1"]
    );
    assert_eq!(out["status"]["phase"], json!("Running"));

    for kind in ["Deployment", "ReplicaSet", "Namespace", "Service"] {
        let o = json!({"kind": kind, "status": {"conditions": [{"type": "A", "status": "True"}]}});
        let out = smp(
            o,
            json!({"status": {"conditions": [{"type": "B", "status": "True"}]}}),
        );
        assert_eq!(
            names(&out["status"]["conditions"], "type"),
            ["B", "A"],
            "{kind}"
        );
    }
    // An Event's or Lease's lists are plain.
    let o = json!({"kind": "Lease", "status": {"conditions": [{"type": "A"}]}});
    let out = smp(o, json!({"status": {"conditions": [{"type": "B"}]}}));
    assert_eq!(names(&out["status"]["conditions"], "type"), ["B"]);
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443}]
    }});
    let out = smp(
        svc,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 81}], "selector": {"app": "api"}}}),
    );
    assert_eq!(names(&out["spec"]["ports"], "port"), ["80", "81", "443"]);
    assert_eq!(out["spec"]["ports"][0]["targetPort"], json!(9090));
    assert_eq!(out["spec"]["ports"][0]["name"], json!("http"));
    assert_eq!(out["spec"]["selector"], json!({"app": "api"}));
}
