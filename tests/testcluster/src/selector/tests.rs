//! Unit tests of label and field selectors: matching, the real server's error messages,
//! canonical text forms and the conversion of a `metav1.LabelSelector`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("parse {s:?}: {e}"))
}

fn err(s: &str) -> String {
    match LabelSelector::parse(s) {
        Ok(v) => panic!("{s:?} parsed as {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn empty_selector_matches_everything() {
    for s in ["", "   ", "\t\n"] {
        let l = sel(s);
        assert!(l.is_empty());
        assert!(l.matches(&labels(&[])));
        assert!(l.matches(&labels(&[("a", "b")])));
    }
    assert!(LabelSelector::default().matches(&labels(&[("x", "y")])));
}

#[test]
fn equality_operators() {
    let app_web = labels(&[("app", "web"), ("tier", "front")]);
    let app_db = labels(&[("app", "db")]);
    let none = labels(&[]);
    for s in ["app=web", "app==web", " app = web ", "app == web"] {
        let l = sel(s);
        assert!(l.matches(&app_web), "{s}");
        assert!(!l.matches(&app_db), "{s}");
        assert!(!l.matches(&none), "{s}");
    }
    let l = sel("app!=web");
    assert!(!l.matches(&app_web));
    assert!(l.matches(&app_db));
    assert!(l.matches(&none), "!= matches when the key is absent");
}

#[test]
fn set_operators() {
    let l = sel("env in (prod, staging)");
    assert!(l.matches(&labels(&[("env", "prod")])));
    assert!(l.matches(&labels(&[("env", "staging")])));
    assert!(!l.matches(&labels(&[("env", "dev")])));
    assert!(!l.matches(&labels(&[])));

    let l = sel("env notin (prod,staging)");
    assert!(!l.matches(&labels(&[("env", "prod")])));
    assert!(l.matches(&labels(&[("env", "dev")])));
    assert!(
        l.matches(&labels(&[])),
        "notin matches when the key is absent"
    );

    let l = sel("env in(prod)");
    assert!(l.matches(&labels(&[("env", "prod")])));
}

#[test]
fn exists_and_does_not_exist() {
    let l = sel("app");
    assert!(l.matches(&labels(&[("app", "")])));
    assert!(!l.matches(&labels(&[("other", "x")])));
    let l = sel("!app");
    assert!(!l.matches(&labels(&[("app", "x")])));
    assert!(l.matches(&labels(&[])));
    let l = sel("! app , tier");
    assert!(l.matches(&labels(&[("tier", "x")])));
    assert!(!l.matches(&labels(&[("tier", "x"), ("app", "y")])));
}

#[test]
fn conjunction_of_requirements() {
    let l = sel("app=web,tier in (front,back),!canary,release");
    assert!(l.matches(&labels(&[
        ("app", "web"),
        ("tier", "back"),
        ("release", "1")
    ])));
    assert!(!l.matches(&labels(&[("app", "web"), ("tier", "back")])));
    assert!(!l.matches(&labels(&[
        ("app", "web"),
        ("tier", "back"),
        ("release", "1"),
        ("canary", "true")
    ])));
}

#[test]
fn greater_and_less_than() {
    let l = sel("gen>5");
    assert!(l.matches(&labels(&[("gen", "6")])));
    assert!(!l.matches(&labels(&[("gen", "5")])));
    assert!(!l.matches(&labels(&[("gen", "x")])));
    assert!(!l.matches(&labels(&[])));
    let l = sel("gen < 5");
    assert!(l.matches(&labels(&[("gen", "-1")])));
    assert!(!l.matches(&labels(&[("gen", "5")])));
    assert!(err("gen>x").contains("must be an integer"));
}

#[test]
fn prefixed_keys_and_odd_values() {
    let l = sel("app.kubernetes.io/name=web,example.com/tier in (a.b,c_d,E-9)");
    assert!(l.matches(&labels(&[
        ("app.kubernetes.io/name", "web"),
        ("example.com/tier", "c_d")
    ])));
    let l = sel("telepresence.io/workload-name");
    assert!(l.matches(&labels(&[("telepresence.io/workload-name", "x")])));
}

#[test]
fn empty_values() {
    let l = sel("k=");
    assert!(l.matches(&labels(&[("k", "")])));
    assert!(!l.matches(&labels(&[("k", "v")])));
    assert!(!l.matches(&labels(&[])));
    let l = sel("k=,j!=");
    assert!(l.matches(&labels(&[("k", ""), ("j", "x")])));
    let l = sel("k in ()");
    assert!(l.matches(&labels(&[("k", "")])));
    let l = sel("k in (a,)");
    assert!(l.matches(&labels(&[("k", "")])));
    assert!(l.matches(&labels(&[("k", "a")])));
    let l = sel("k in (,a)");
    assert!(l.matches(&labels(&[("k", "")])));
    let l = sel("k notin (a,,b)");
    assert!(!l.matches(&labels(&[("k", "")])));
    assert!(l.matches(&labels(&[("k", "c")])));
}

#[test]
fn keywords_are_identifiers_outside_operator_position() {
    let l = sel("in=notin");
    assert!(l.matches(&labels(&[("in", "notin")])));
    let l = sel("notin in (in)");
    assert!(l.matches(&labels(&[("notin", "in")])));
    let l = sel("in");
    assert!(l.matches(&labels(&[("in", "")])));
}

#[test]
fn parse_errors_read_like_the_real_server() {
    let e = err("a in b");
    assert!(e.starts_with("unable to parse requirement: "), "{e}");
    assert!(e.contains("found 'b' expected: '('"), "{e}");

    let e = err("a in (b");
    assert!(e.contains("found '', expected: ',' or ')'"), "{e}");

    let e = err("a,");
    assert_eq!(e, "found '', expected: identifier after ','");

    let e = err(",a");
    assert_eq!(e, "found ',', expected: !, identifier, or 'end of string'");

    let e = err("a=b c");
    assert_eq!(e, "found 'c', expected: ',' or 'end of string'");

    let e = err("a=b=c");
    assert_eq!(e, "found '=', expected: ',' or 'end of string'");

    let e = err("!a=b");
    assert_eq!(e, "found '=', expected: ',' or 'end of string'");

    let e = err("a!");
    assert!(
        e.contains("found '!', expected: in, notin, =, ==, !=, gt, lt"),
        "{e}"
    );

    let e = err("a=(b)");
    assert!(e.contains("found '(', expected: identifier"), "{e}");

    let e = err("!!a");
    assert!(e.contains("found '!', expected: identifier"), "{e}");

    let e = err("a in (b c)");
    assert!(e.contains("found 'c', expected: ',' or ')'"), "{e}");

    let e = err("a in (=)");
    assert!(
        e.contains("found '=', expected: ',', ')' or identifier"),
        "{e}"
    );
}

#[test]
fn invalid_keys_and_values() {
    let e = err("-bad=x");
    assert!(
        e.starts_with("unable to parse requirement: key: Invalid value: \"-bad\""),
        "{e}"
    );
    assert!(err("Example.com/x=y").contains("prefix part"));
    assert!(err("/x=y").contains("prefix part must be non-empty"));
    assert!(err("a/=y").contains("name part must be non-empty"));
    assert!(err("a/b/c=y").contains("qualified name"));
    let long = "k".repeat(64);
    assert!(err(&format!("{long}=v")).contains("no more than 63 characters"));
    assert!(err(&format!("k={long}")).contains("no more than 63 characters"));
    let e = err("k=-v");
    assert!(e.contains("values[0]: Invalid value: \"-v\""), "{e}");
    assert!(err("k in (a,b$)").contains("a valid label must be an empty string"));
    // 63 characters are fine.
    let ok = "k".repeat(63);
    sel(&format!("{ok}={ok}"));
}

#[test]
fn display_is_canonical() {
    let l = sel("tier in (b, a),app=web ,!x, y, z!=1, g>3, h==2");
    assert_eq!(l.to_string(), "app=web,g>3,h==2,tier in (a,b),!x,y,z!=1");
    assert_eq!(sel(&l.to_string()), l);
    assert_eq!("a=b".parse::<LabelSelector>(), Ok(sel("a=b")));
}

#[test]
fn from_k8s_label_selector() {
    let empty = metav1::LabelSelector::default();
    assert!(LabelSelector::from_label_selector(&empty).matches(&labels(&[])));
    assert!(LabelSelector::from_label_selector(&empty).is_empty());

    let ks = metav1::LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![
            metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["front".into(), "back".into()]),
            },
            metav1::LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            },
            metav1::LabelSelectorRequirement {
                key: "owner".into(),
                operator: "Exists".into(),
                values: None,
            },
            metav1::LabelSelectorRequirement {
                key: "canary".into(),
                operator: "DoesNotExist".into(),
                values: Some(vec![]),
            },
        ]),
    };
    let l = LabelSelector::from_label_selector(&ks);
    assert!(l.matches(&labels(&[
        ("app", "web"),
        ("tier", "front"),
        ("owner", "me")
    ])));
    assert!(!l.matches(&labels(&[("app", "web"), ("tier", "front")])));
    assert!(!l.matches(&labels(&[
        ("app", "web"),
        ("tier", "front"),
        ("owner", "me"),
        ("env", "prod")
    ])));
    assert!(!l.matches(&labels(&[
        ("app", "web"),
        ("tier", "front"),
        ("owner", "me"),
        ("canary", "1")
    ])));
    assert!(!l.matches(&labels(&[
        ("app", "db"),
        ("tier", "front"),
        ("owner", "me")
    ])));
    assert_eq!(
        l.to_string(),
        "app=web,!canary,env notin (prod),owner,tier in (back,front)"
    );
}

#[test]
fn invalid_k8s_label_selector_matches_nothing() {
    let bad_op = metav1::LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "a".into(),
            operator: "Gt".into(),
            values: Some(vec!["1".into()]),
        }]),
    };
    let in_without_values = metav1::LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "a".into(),
            operator: "In".into(),
            values: None,
        }]),
    };
    let exists_with_values = metav1::LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![metav1::LabelSelectorRequirement {
            key: "a".into(),
            operator: "Exists".into(),
            values: Some(vec!["x".into()]),
        }]),
    };
    let bad_label = metav1::LabelSelector {
        match_labels: Some(labels(&[("bad key", "v")])),
        match_expressions: None,
    };
    for ks in [bad_op, in_without_values, exists_with_values, bad_label] {
        let l = LabelSelector::from_label_selector(&ks);
        assert!(!l.is_empty());
        assert!(!l.matches(&labels(&[("a", "1")])), "{ks:?}");
        assert!(!l.matches(&labels(&[])), "{ks:?}");
    }
    assert!(!LabelSelector::nothing().matches(&labels(&[])));
}

// --- field selectors ---------------------------------------------------

fn pod() -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIP": "10.0.0.7"}
    })
}

fn fsel(s: &str, resource: &str) -> FieldSelector {
    FieldSelector::parse(s, resource).unwrap_or_else(|e| panic!("parse {s:?}: {e}"))
}

#[test]
fn field_selector_basics() {
    let p = pod();
    assert!(fsel("", "pods").matches(&p));
    assert!(fsel("", "pods").is_empty());
    assert!(fsel("metadata.name=web-1", "pods").matches(&p));
    assert!(fsel("metadata.name==web-1", "pods").matches(&p));
    assert!(!fsel("metadata.name!=web-1", "pods").matches(&p));
    assert!(fsel("metadata.name!=web-2", "pods").matches(&p));
    assert!(fsel("metadata.namespace=default,status.phase=Running", "pods").matches(&p));
    assert!(!fsel("metadata.namespace=default,status.phase=Pending", "pods").matches(&p));
    assert!(fsel("spec.nodeName=node-a,spec.restartPolicy=Always", "pods").matches(&p));
    assert!(fsel("status.podIP=10.0.0.7", "pods").matches(&p));
    assert!(fsel("metadata.name=web-1,", "pods").matches(&p));
}

#[test]
fn missing_field_reads_as_empty() {
    let pending = json!({"metadata": {"name": "p"}, "spec": {}});
    assert!(fsel("spec.nodeName=", "pods").matches(&pending));
    assert!(!fsel("spec.nodeName!=", "pods").matches(&pending));
    assert!(fsel("status.phase!=Running", "pods").matches(&pending));
    assert!(fsel("metadata.namespace=", "nodes").matches(&pending));
    // Boolean fields read as Go's zero value.
    assert!(fsel("spec.hostNetwork=false", "pods").matches(&pending));
    let host = json!({"spec": {"hostNetwork": true}});
    assert!(fsel("spec.hostNetwork=true", "pods").matches(&host));
    let rs = json!({"status": {"replicas": 3}});
    assert!(fsel("status.replicas=3", "replicasets").matches(&rs));
    assert!(fsel("status.replicas=0", "replicasets").matches(&json!({})));
}

#[test]
fn event_fields() {
    let ev = json!({
        "metadata": {"name": "web-1.17", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u-1"},
        "reason": "Killing",
        "type": "Normal",
        "source": {"component": "kubelet"}
    });
    let s = fsel(
        "involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u-1,reason=Killing,type=Normal",
        "events",
    );
    assert!(s.matches(&ev));
    assert!(fsel("source=kubelet", "events").matches(&ev));
    assert!(!fsel("type=Warning", "events").matches(&ev));
}

#[test]
fn unsupported_fields_are_refused_with_the_servers_message() {
    let e = FieldSelector::parse("spec.replicas=1", "deployments").err();
    assert_eq!(
        e.as_deref(),
        Some("field label not supported: spec.replicas")
    );
    let e = FieldSelector::parse("status.phase=Running", "services").err();
    assert_eq!(
        e.as_deref(),
        Some("field label not supported: status.phase")
    );
    let e = FieldSelector::parse("reason=x", "pods").err();
    assert_eq!(e.as_deref(), Some("field label not supported: reason"));
    let e = FieldSelector::parse("involvedObject.name=x", "pods").err();
    assert_eq!(
        e.as_deref(),
        Some("field label not supported: involvedObject.name")
    );
    let e = FieldSelector::parse("status.phase=Running", "events").err();
    assert_eq!(
        e.as_deref(),
        Some("field label not supported: status.phase")
    );
    // No trimming: a space is part of the field name, as on the real server.
    let e = FieldSelector::parse("metadata.name =x", "pods").err();
    assert_eq!(
        e.as_deref(),
        Some("field label not supported: metadata.name ")
    );
    // metadata fields work everywhere.
    for r in [
        "deployments",
        "configmaps",
        "leases",
        "namespaces",
        "services",
    ] {
        fsel("metadata.name=x,metadata.namespace=y", r);
    }
}

#[test]
fn field_selector_syntax_errors() {
    let e = FieldSelector::parse("metadata.name", "pods").err();
    assert_eq!(
        e.as_deref(),
        Some("invalid selector: 'metadata.name'; can't understand 'metadata.name'")
    );
    let e = FieldSelector::parse("metadata.name=a=b", "pods").err();
    assert_eq!(
        e.as_deref(),
        Some("invalid field selector: unescaped character in value: =")
    );
    let e = FieldSelector::parse("metadata.name=a\\b", "pods").err();
    assert_eq!(
        e.as_deref(),
        Some("invalid field selector: invalid escape sequence: \\b")
    );
    let e = FieldSelector::parse("metadata.name=a\\", "pods").err();
    assert!(e.is_some_and(|e| e.contains("invalid escape sequence")));
}

#[test]
fn field_selector_escapes() {
    let obj = json!({"metadata": {"name": "a,b=c\\d"}});
    let s = fsel("metadata.name=a\\,b\\=c\\\\d", "configmaps");
    assert!(s.matches(&obj));
    assert_eq!(s.to_string(), "metadata.name=a\\,b\\=c\\\\d");
    let s = fsel("metadata.name!=x,metadata.namespace=", "configmaps");
    assert_eq!(s.to_string(), "metadata.name!=x,metadata.namespace=");
    assert!(s.matches(&obj));
}
