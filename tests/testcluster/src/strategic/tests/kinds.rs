//! What the merge keys of each kind's lists do: pod specs, the pod templates of other
//! workloads, the kind taken from the patch, lists created when absent.

use serde_json::json;

use super::*;

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
