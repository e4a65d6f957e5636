//! Unit tests of strategic merge patch and JSON merge patch: list merge keys, directives,
//! element order and the errors the real server gives.

use serde_json::json;

use super::*;

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

#[test]
fn pod_spec_lists_merge_by_their_keys() {
    let o = json!({"kind": "Pod", "spec": {
        "containers": [{"name": "app"}],
        "volumes": [{"name": "a", "emptyDir": {}}],
        "imagePullSecrets": [{"name": "reg"}],
        "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a"]}],
        "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}],
        "ephemeralContainers": [{"name": "dbg", "image": "busybox"}],
        "readinessGates": [{"conditionType": "x"}]
    }});
    let out = smp(
        o,
        json!({"spec": {
            "volumes": [{"name": "b", "secret": {"secretName": "s"}}],
            "imagePullSecrets": [{"name": "reg2"}],
            "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["b"]}],
            "topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}],
            "ephemeralContainers": [{"name": "dbg2", "image": "busybox", "env": [{"name": "X", "value": "1"}]}],
            "readinessGates": [{"conditionType": "y"}]
        }}),
    );
    let spec = &out["spec"];
    assert_eq!(names(&spec["volumes"], "name"), ["b", "a"]);
    assert_eq!(names(&spec["imagePullSecrets"], "name"), ["reg2", "reg"]);
    assert_eq!(
        spec["hostAliases"],
        json!([{"ip": "1.2.3.4", "hostnames": ["b"]}])
    );
    assert_eq!(
        spec["topologySpreadConstraints"],
        json!([{"topologyKey": "zone", "maxSkew": 2}])
    );
    assert_eq!(names(&spec["ephemeralContainers"], "name"), ["dbg2", "dbg"]);
    assert_eq!(spec["readinessGates"], json!([{"conditionType": "y"}]));
    assert_eq!(spec["containers"], json!([{"name": "app"}]));
}

#[test]
fn templates_of_other_workloads_are_pod_specs() {
    for kind in [
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "ReplicationController",
    ] {
        let o = json!({"kind": kind, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}]}}}});
        let out = smp(
            o,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}),
        );
        assert_eq!(
            names(&out["spec"]["template"]["spec"]["containers"], "name"),
            ["b", "a"],
            "{kind}"
        );
    }
    let cj = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a"}]}}}}}});
    let out = smp(
        cj,
        json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}}}),
    );
    assert_eq!(
        names(
            &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            "name"
        ),
        ["b", "a"]
    );
    let pt = json!({"kind": "PodTemplate", "template": {"spec": {"containers": [{"name": "a"}]}}});
    let out = smp(
        pt,
        json!({"template": {"spec": {"containers": [{"name": "b"}]}}}),
    );
    assert_eq!(
        names(&out["template"]["spec"]["containers"], "name"),
        ["b", "a"]
    );
    // Without a kind nothing is known: the list is replaced.
    let bare = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
    let out = smp(
        bare.clone(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}),
    );
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"], "name"),
        ["b"]
    );
    // ... unless the caller names it.
    let out = apply_for_kind(
        "Deployment",
        &bare,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}),
    );
    assert_eq!(
        out.map(|o| names(&o["spec"]["template"]["spec"]["containers"], "name")),
        Ok(vec!["b".to_string(), "a".to_string()])
    );
}

#[test]
fn kind_comes_from_the_patch_when_the_original_lacks_it() {
    let out = smp(
        json!({"spec": {"containers": [{"name": "a"}]}}),
        json!({"kind": "Pod", "spec": {"containers": [{"name": "b"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"], "name"), ["b", "a"]);
}

#[test]
fn merged_list_created_when_absent_without_directives() {
    let o = json!({"kind": "Pod", "spec": {"containers": [{"name": "app"}]}});
    let out = smp(
        o,
        json!({"metadata": {"finalizers": ["x"], "ownerReferences": [{"uid": "u", "name": "n"}]},
        "spec": {
            "containers": [{"name": "app", "env": [{"name": "A", "value": "1"}, {"$patch": "delete", "name": "Z"}]}],
            "volumes": [{"$patch": "delete", "name": "gone"}, {"name": "v", "emptyDir": {}, "x": null}],
            "initContainers": [{"name": "i"}, {"$patch": "replace"}]
        }}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"uid": "u", "name": "n"}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}])
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "v", "emptyDir": {}}])
    );
    assert_eq!(out["spec"]["initContainers"], json!([{"name": "i"}]));
    // A new map is cleaned of nulls and directives too.
    let out = smp(
        pod(),
        json!({"spec": {"securityContext": {"runAsUser": 1, "fsGroup": null}}}),
    );
    assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1}));
}

#[test]
fn set_element_order_for_keyed_lists() {
    // As kubectl apply sends it.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "web:9"}]
        }}}}),
    );
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["sidecar", "app"]);
    assert_eq!(cs[1]["image"], json!("web:9"));
    assert_eq!(
        cs[1]["env"],
        deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    );

    // Order only, no content change.
    let out = smp(
        deployment(),
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}}}),
    );
    assert_eq!(
        names(&out["spec"]["template"]["spec"]["containers"], "name"),
        ["sidecar", "app"]
    );

    // With deletions and additions; a server-only element keeps its place
    // in front of the elements it preceded.
    let o = json!({"kind": "Pod", "spec": {"containers": [
        {"name": "a"}, {"name": "srv"}, {"name": "b"}, {"name": "c"}]}});
    let out = smp(
        o,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "d"}, {"name": "b"}, {"name": "a"}],
            "containers": [{"name": "d"}, {"$patch": "delete", "name": "c"}]
        }}),
    );
    assert_eq!(
        names(&out["spec"]["containers"], "name"),
        ["d", "srv", "b", "a"]
    );
    // Directive keys never reach the result.
    assert!(
        out["spec"]
            .as_object()
            .is_some_and(|m| m.keys().all(|k| !k.starts_with('$')))
    );
}

#[test]
fn set_element_order_when_the_original_lacks_the_list() {
    let out = smp(
        json!({"kind": "Pod", "spec": {}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "b"}, {"name": "a"}, {"$patch": "delete", "name": "x"}]
        }}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "b"}, {"name": "a"}])
    );
    // Neither side has the list: nothing is created.
    let out = smp(
        json!({"kind": "Pod", "spec": {}}),
        json!({"spec": {"$setElementOrder/volumes": [{"name": "v"}]}}),
    );
    assert_eq!(out["spec"], json!({}));
}

#[test]
fn set_element_order_for_scalar_lists() {
    let out = smp(
        deployment(),
        json!({"metadata": {
            "$setElementOrder/finalizers": ["c/three", "b/two"],
            "finalizers": ["c/three"],
            "$deleteFromPrimitiveList/finalizers": ["a/one"]
        }}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["c/three", "b/two"]));
    let out = smp(
        deployment(),
        json!({"metadata": {"$setElementOrder/finalizers": ["b/two", "a/one"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b/two", "a/one"]));
}

#[test]
fn set_element_order_errors() {
    let e = smp_err(
        deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar"}, {"name": "app"}]
        }}}}),
    );
    assert!(e.starts_with("The order in patch list:"), "{e}");
    let e = smp_err(
        deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "other"}]
        }}}}),
    );
    assert!(e.starts_with("The order in patch list:"), "{e}");
    let e = smp_err(
        deployment(),
        json!({"metadata": {"$setElementOrder/finalizers": "x"}}),
    );
    assert_eq!(e, "invalid patch format of setElementOrder list");
    let e = smp_err(
        deployment(),
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"image": "x"}]}}}}),
    );
    assert!(
        e.contains("does not contain declared merge key: name"),
        "{e}"
    );
}

#[test]
fn kubectl_apply_style_patch() {
    // What `kubectl apply` sends after removing env B, adding C, changing
    // the image and dropping the sidecar from the last-applied config.
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [
                {
                    "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                    "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                    "image": "web:2",
                    "name": "app"
                },
                {"$patch": "delete", "name": "sidecar"}
            ]
        }}}
    });
    let out = smp(deployment(), patch);
    let cs = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(cs, "name"), ["app"]);
    assert_eq!(cs[0]["image"], json!("web:2"));
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
    );
    assert!(cs[0].get("$setElementOrder/env").is_none());
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        json!("{}")
    );
}

#[test]
fn merge_key_values_compare_as_json_numbers() {
    let o = json!({"kind": "Service", "spec": {"ports": [{"port": 80, "name": "http"}]}});
    let out = smp(
        o,
        json!({"spec": {"ports": [{"port": 80.0, "targetPort": 1}]}}),
    );
    assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(1));
    assert_eq!(out["spec"]["ports"][0]["targetPort"], json!(1));
}

#[test]
fn merge_key_missing_is_an_error() {
    let e = smp_err(pod(), json!({"spec": {"containers": [{"image": "x"}]}}));
    assert!(
        e.contains("does not contain declared merge key: name"),
        "{e}"
    );
    let e = smp_err(pod(), json!({"spec": {"containers": ["x"]}}));
    assert!(
        e.contains("not identical") || e.contains("not objects"),
        "{e}"
    );
}

#[test]
fn type_changes_replace() {
    let out = smp(pod(), json!({"spec": {"containers": {"not": "a list"}}}));
    assert_eq!(out["spec"]["containers"], json!({"not": "a list"}));
    let out = smp(pod(), json!({"status": "x"}));
    assert_eq!(out["status"], json!("x"));
    let out = smp(
        pod(),
        json!({"status": {"phase": {"nested": {"x": null, "y": 1}}}}),
    );
    assert_eq!(out["status"]["phase"], json!({"nested": {"y": 1}}));
}

#[test]
fn empty_patch_list_leaves_merged_list_alone() {
    let out = smp(pod(), json!({"spec": {"containers": []}}));
    assert_eq!(out["spec"]["containers"], pod()["spec"]["containers"]);
}

#[test]
fn scale_and_lease_patches() {
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2}, "status": {"replicas": 2, "selector": "app=web"}});
    let out = smp(scale, json!({"spec": {"replicas": 5}}));
    assert_eq!(out["spec"]["replicas"], json!(5));
    assert_eq!(out["status"]["selector"], json!("app=web"));

    let lease = json!({"kind": "Lease", "metadata": {"name": "l"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    let out = smp(
        lease,
        json!({"spec": {"holderIdentity": "b", "renewTime": "2024-01-01T00:00:00.000000Z"}}),
    );
    assert_eq!(out["spec"]["holderIdentity"], json!("b"));
    assert_eq!(out["spec"]["leaseDurationSeconds"], json!(15));
}

#[test]
fn namespace_finalizers_in_spec_are_replaced() {
    let ns = json!({"kind": "Namespace", "metadata": {"name": "n", "finalizers": ["x"]},
        "spec": {"finalizers": ["kubernetes"]}});
    let out = smp(
        ns,
        json!({"spec": {"finalizers": ["other"]}, "metadata": {"finalizers": ["y"]}}),
    );
    assert_eq!(out["spec"]["finalizers"], json!(["other"]));
    assert_eq!(out["metadata"]["finalizers"], json!(["y", "x"]));
}

#[test]
fn whole_object_directives() {
    let out = smp(
        pod(),
        json!({"$patch": "replace", "kind": "Pod", "metadata": {"name": "q"}}),
    );
    assert_eq!(out, json!({"kind": "Pod", "metadata": {"name": "q"}}));
    let out = smp(pod(), json!({"$patch": "delete"}));
    assert_eq!(out, json!({}));
}

#[test]
fn json_merge_patch() {
    let out = merge_patch(
        &deployment(),
        &json!({"metadata": {"labels": {"app": null, "x": "y"}},
                "spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"x": "y"}));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only"}])
    );
    assert_eq!(out["spec"]["replicas"], json!(2));
    assert_eq!(merge_patch(&json!({"a": 1}), &json!([1])), json!([1]));
    assert_eq!(
        merge_patch(&json!({"a": 1}), &json!({"a": null})),
        json!({})
    );
}
