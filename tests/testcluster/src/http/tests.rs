use super::*;

#[test]
fn routes_cover_namespaced_cluster_and_subresources() {
    let r = route("/apis/apps/v1/namespaces/ns/deployments/app/scale", 31);
    let Route::Resource(t) = r else {
        panic!("not a resource: {r:?}")
    };
    assert_eq!(
        (
            t.rt.plural,
            t.namespace.as_deref(),
            t.name.as_deref(),
            t.sub.as_deref()
        ),
        ("deployments", Some("ns"), Some("app"), Some("scale"))
    );
    let Route::Resource(t) = route("/api/v1/pods", 31) else {
        panic!()
    };
    assert_eq!((t.rt.plural, t.namespace, t.name), ("pods", None, None));
    let Route::Resource(t) = route("/api/v1/namespaces/dev", 31) else {
        panic!()
    };
    assert_eq!(
        (t.rt.plural, t.name.as_deref()),
        ("namespaces", Some("dev"))
    );
    assert_eq!(route("/apis/batch/v1/jobs", 31), Route::NotFound);
    assert_eq!(route("/api/v1/namespaces/ns/widgets", 31), Route::NotFound);
    assert!(matches!(route("/version", 31), Route::Document(_)));
}

#[test]
fn queries_decode_and_tolerate_empty_fields() {
    let q = parse_query("&labelSelector=app+in+%28a%2Cb%29&&watch=1&x");
    assert_eq!(
        q,
        vec![
            ("labelSelector".to_string(), "app in (a,b)".to_string()),
            ("watch".to_string(), "1".to_string()),
            ("x".to_string(), String::new()),
        ]
    );
    assert_eq!(percent_decode("100%"), "100%");
}
