//! `$setElementOrder`, merge keys compared as JSON, type changes, whole-object directives
//! and JSON merge patch.

use serde_json::json;

use super::*;

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
