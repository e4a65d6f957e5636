use std::collections::BTreeMap;

use super::*;
use crate::lifecycle::plan::{Action, Observed, ObservedObject, ObservedWorkload, plan};

const ID: &str = "0123456789abcdef0123456789abcdef";

fn swap() -> SessionRecord {
    SessionRecord::test()
        .swapping("web", 3)
        .original_uid(Some("uid-web"))
        .with_id(ID)
        .with_proxy(ProxyKind::Pod, "web-0123456789abcdef", "uid-proxy")
}

#[test]
fn facts_go_into_annotations_and_come_back_the_same() {
    let rec = swap();
    let f = Facts::of(&rec, "laptop-7", "dev").expect("facts of a recorded session");
    let a = f.to_annotations();
    assert!(a.keys().all(|k| k.starts_with(PREFIX)), "{a:?}");
    assert_eq!(a["telepolice.dev/original-replicas"], "3");
    assert_eq!(a["telepolice.dev/replicas-evidence"], "observed");
    assert_eq!(a["telepolice.dev/original-uid"], "uid-web");
    assert_eq!(a["telepolice.dev/owner-host"], "laptop-7");
    assert_eq!(Facts::from_annotations(&a), Ok(f.clone()));
    assert_eq!(f.anchor().map(|p| p.uid.as_str()), Some("uid-proxy"));
    // Every key's name part is within the API server's 63 characters.
    assert!(a.keys().all(|k| k.len() - PREFIX.len() <= 63));
}

#[test]
fn a_session_without_an_id_has_no_facts_yet() {
    assert_eq!(
        Facts::of(&SessionRecord::test().swapping("web", 3), "h", "u"),
        None
    );
}

#[test]
fn annotations_that_are_not_usable_facts_are_refused_with_the_reason() {
    let good = Facts::of(&swap(), "h", "u")
        .expect("facts")
        .to_annotations();
    assert_eq!(
        Facts::from_annotations(&BTreeMap::new()),
        Err(FactsError::Absent)
    );
    let with = |k: &str, v: &str| {
        let mut a = good.clone();
        a.insert(annotation(k), v.to_string());
        Facts::from_annotations(&a)
    };
    assert_eq!(with("schema", "2"), Err(FactsError::Newer(2)));
    for (k, v) in [
        ("schema", "x"),
        ("original-replicas", "-1"),
        ("original-replicas", "three"),
        ("replicas-evidence", "guess"),
        ("session-kind", "telepresence-3"),
        ("mode", "swap-deployment="),
        ("proxies", "pod/no-uid"),
        ("original-kind", "StatefulSet"),
    ] {
        let e = with(k, v).expect_err(&format!("{k}={v} is refused"));
        assert!(e.to_string().contains(&annotation(k)), "{e}");
    }
    let mut a = good.clone();
    a.remove("telepolice.dev/session");
    assert!(matches!(
        Facts::from_annotations(&a),
        Err(FactsError::Bad { key: "session", .. })
    ));
}

#[test]
fn a_sweeper_plans_from_the_facts_what_the_laptop_would() {
    let rec = swap();
    let from_facts = Facts::of(&rec, "h", "u").expect("facts").record();
    let mut labels = BTreeMap::new();
    labels.insert("telepresence".to_string(), ID.to_string());
    let obs = Observed {
        original: Some(ObservedWorkload {
            uid: "uid-web".into(),
            replicas: 0,
        }),
        objects: vec![ObservedObject {
            kind: ProxyKind::Pod,
            name: "web-0123456789abcdef".into(),
            uid: "uid-proxy".into(),
            labels,
            owned: false,
            deleting: false,
        }],
    };
    let p = plan(&from_facts, &obs);
    assert_eq!(p, plan(&rec, &obs), "the same plan as the laptop's");
    assert!(
        matches!(&p.actions[0], Action::Restore { replicas: 3, .. }),
        "{p:?}"
    );
    assert_eq!(p.actions.len(), 2);
    // A count the facts call uncertain is never restored.
    let mut f = Facts::of(&rec, "h", "u").expect("facts");
    if let Some(o) = f.original.as_mut() {
        o.source = ReplicaSource::Uncertain;
        o.replicas = None;
    }
    let p = plan(&f.record(), &obs);
    assert!(
        p.actions
            .iter()
            .all(|a| !matches!(a, Action::Restore { .. })),
        "{p:?}"
    );
    assert!(!p.attention.is_empty());
}

#[test]
fn lease_names_are_valid_object_names() {
    let n = lease_name(SessionKind::Tel2, "A1b2_C3/d4-".repeat(10).as_str());
    assert!(n.len() <= 63, "{n}");
    assert!(
        n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{n}"
    );
    assert_eq!(
        lease_name(SessionKind::Legacy, ID),
        format!("telepolice-{ID}")
    );
    assert!(is_sweeper("sweeper/pod-1") && !is_sweeper(&laptop_identity("h", "u", "k")));
}

#[test]
fn facts_found_elsewhere_or_without_the_originals_uid_are_not_acted_on() {
    let f = Facts::of(&swap(), "h", "u").expect("facts");
    assert_eq!(f.untrusted("ns"), None);
    let elsewhere = f.untrusted("kube-system").expect("refused");
    assert!(
        elsewhere.contains("\"ns\" but were found in \"kube-system\""),
        "{elsewhere}"
    );
    let mut no_uid = f.clone();
    if let Some(o) = no_uid.original.as_mut() {
        o.uid = None;
    }
    assert!(
        no_uid
            .untrusted("ns")
            .expect("refused")
            .contains("deployment/web's uid")
    );
    // 2.x facts name the session's namespace, not the Lease's: only a Depart follows.
    let mut tel2 = f;
    tel2.kind = SessionKind::Tel2;
    assert_eq!(tel2.untrusted("leases"), None);
}
