use super::*;
use crate::session::{ProxyKind::*, State};
use crate::telepresence::swap_proxy_name;

/// The session's Telepresence id, and another session's.
const ID: &str = "9dc6d5a80acf4e6dae1045b22bfdd1ef";
const OTHER_ID: &str = "0123456789abcdef0123456789abcdef";
const ORIG_UID: &str = SessionRecord::TEST_ORIGINAL_UID;
/// What a person would run to put `app` back at 2 replicas in the fixture's cluster.
const SCALE_APP_TO_2: &str =
    "kubectl --context dev --namespace ns scale deployment app --replicas=2";

fn proxy() -> String {
    swap_proxy_name("app", ID)
}

/// The original as observed now.
fn original(uid: &str, replicas: i32) -> Option<ObservedWorkload> {
    Some(ObservedWorkload {
        uid: uid.into(),
        replicas,
    })
}

/// An object carrying `telepresence=<label>`, owned by nothing.
fn labelled_with(label: &str, kind: ProxyKind, name: &str, uid: &str) -> ObservedObject {
    ObservedObject {
        kind,
        name: name.into(),
        uid: uid.into(),
        labels: [
            ("app".to_string(), "app".to_string()),
            ("telepresence".to_string(), label.to_string()),
        ]
        .into(),
        owned: false,
        deleting: false,
    }
}

/// An object carrying this session's label, owned by nothing.
fn labelled(kind: ProxyKind, name: &str, uid: &str) -> ObservedObject {
    labelled_with(ID, kind, name, uid)
}

/// An object without any `telepresence` label.
fn unlabelled(kind: ProxyKind, name: &str, uid: &str) -> ObservedObject {
    let mut o = labelled(kind, name, uid);
    o.labels.remove("telepresence");
    o
}

fn owned(mut o: ObservedObject) -> ObservedObject {
    o.owned = true;
    o
}

fn restore(replicas: i32, uid: &str) -> Action {
    Action::Restore {
        name: "app".into(),
        uid: uid.into(),
        replicas,
    }
}

fn delete(kind: ProxyKind, name: &str, uid: &str) -> Action {
    Action::Delete {
        kind,
        name: name.into(),
        uid: uid.into(),
    }
}

/// Asserts that `p` has exactly `actions`, and one attention line per entry of
/// `attention`, each containing every fragment of its entry.
#[track_caller]
fn assert_plan(what: &str, p: &Plan, actions: &[Action], attention: &[&[&str]]) {
    assert_eq!(p.actions, actions, "{what}: actions (plan: {p:#?})");
    assert_eq!(
        p.attention.len(),
        attention.len(),
        "{what}: number of attention lines (plan: {p:#?})"
    );
    for (reason, fragments) in p.attention.iter().zip(attention) {
        let line = reason.to_string();
        for f in *fragments {
            assert!(
                line.contains(f),
                "{what}: attention line {line:?} should contain {f:?}"
            );
        }
    }
}

/// One row of [`original_workload_table`].
struct Case {
    /// The behaviour checked.
    what: &'static str,
    rec: SessionRecord,
    /// The original as observed now.
    now: Option<ObservedWorkload>,
    actions: Vec<Action>,
    /// The fragments each attention line must contain, one entry per line.
    attention: Vec<&'static [&'static str]>,
}

/// The original workload alone (an id but no proxies): when it is put back, when it is left
/// alone and when a person is asked to look.
#[test]
fn original_workload_table() {
    let swap = || SessionRecord::test().swapping("app", 2).with_id(ID);
    let cases = [
        Case {
            what: "at 0, recorded 2: restored to 2, pinned to its uid",
            rec: swap(),
            now: original(ORIG_UID, 0),
            actions: vec![restore(2, ORIG_UID)],
            attention: vec![],
        },
        Case {
            what: "already back at 2 (Telepresence's cleanup or a person): nothing to do",
            rec: swap(),
            now: original(ORIG_UID, 2),
            actions: vec![],
            attention: vec![],
        },
        Case {
            what: "rescaled to 5 during the session: left as is, a person gets the command",
            rec: swap(),
            now: original(ORIG_UID, 5),
            actions: vec![],
            attention: vec![&["deployment/app", "5 replicas", SCALE_APP_TO_2]],
        },
        Case {
            what: "replaced (another uid) at 0: not restored, a person gets the command",
            rec: swap(),
            now: original("uid-redeployed", 0),
            actions: vec![],
            attention: vec![&["replaced", ORIG_UID, "uid-redeployed", SCALE_APP_TO_2]],
        },
        Case {
            what: "replaced (another uid) even at the recorded count: reported",
            rec: swap(),
            now: original("uid-redeployed", 2),
            actions: vec![],
            attention: vec![&["replaced", "uid-redeployed"]],
        },
        Case {
            what: "gone: nothing to scale, reported",
            rec: swap(),
            now: None,
            actions: vec![],
            attention: vec![&["deployment/app", "no longer exists"]],
        },
        Case {
            what: "count uncertain, at 0: not guessed, a person gets a scale command",
            rec: swap().replicas_from(ReplicaSource::Uncertain, None),
            now: original(ORIG_UID, 0),
            actions: vec![],
            attention: vec![&[
                "unknown",
                "kubectl --context dev --namespace ns scale deployment app --replicas=<replicas>",
            ]],
        },
        Case {
            what: "count uncertain but running again at 3: nothing to do",
            rec: swap().replicas_from(ReplicaSource::Uncertain, None),
            now: original(ORIG_UID, 3),
            actions: vec![],
            attention: vec![],
        },
        Case {
            what: "count uncertain, a value present anyway: still not used",
            rec: swap().replicas_from(ReplicaSource::Uncertain, Some(4)),
            now: original(ORIG_UID, 0),
            actions: vec![],
            attention: vec![&["unknown", "--replicas=<replicas>"]],
        },
        Case {
            what: "count given by a person (Manual): honoured",
            rec: swap().replicas_from(ReplicaSource::Manual, Some(3)),
            now: original(ORIG_UID, 0),
            actions: vec![restore(3, ORIG_UID)],
            attention: vec![],
        },
        Case {
            what: "count from telepresence.log: restored",
            rec: swap().replicas_from(ReplicaSource::Log, Some(4)),
            now: original(ORIG_UID, 0),
            actions: vec![restore(4, ORIG_UID)],
            attention: vec![],
        },
        Case {
            what: "count from last-applied-configuration: restored",
            rec: swap().replicas_from(ReplicaSource::LastApplied, Some(1)),
            now: original(ORIG_UID, 0),
            actions: vec![restore(1, ORIG_UID)],
            attention: vec![],
        },
        Case {
            what: "uid never recorded, count given by a person: restored, pinned to the uid seen now",
            rec: swap()
                .original_uid(None)
                .replicas_from(ReplicaSource::Manual, Some(2)),
            now: original("uid-now", 0),
            actions: vec![restore(2, "uid-now")],
            attention: vec![],
        },
        Case {
            what: "originally at 0 and still at 0: nothing to do",
            rec: swap().replicas_from(ReplicaSource::Log, Some(0)),
            now: original(ORIG_UID, 0),
            actions: vec![],
            attention: vec![],
        },
    ];
    for c in cases {
        let obs = Observed {
            original: c.now,
            objects: vec![],
        };
        assert_plan(c.what, &plan(&c.rec, &obs), &c.actions, &c.attention);
    }
}

#[test]
fn dead_swap_restores_the_original_then_deletes_its_proxy_pod() {
    let rec = SessionRecord::test()
        .swapping("app", 2)
        .with_id(ID)
        .with_proxy(Pod, &proxy(), "uid-1");
    let obs = Observed {
        original: original(ORIG_UID, 0),
        objects: vec![labelled(Pod, &proxy(), "uid-1")],
    };
    assert_plan(
        "swap",
        &plan(&rec, &obs),
        &[restore(2, ORIG_UID), delete(Pod, &proxy(), "uid-1")],
        &[],
    );
}

/// A restarted agent finds the pod it deleted before it died still `Terminating` (a
/// pod's grace period is 30 s by default): it is not deleted again.
#[test]
fn objects_being_deleted_are_not_deleted_again() {
    let rec = SessionRecord::test()
        .creating("dev")
        .with_id(ID)
        .with_proxy(Pod, "dev", "uid-1")
        .with_proxy(Service, "dev", "uid-2");
    let mut terminating = labelled(Pod, "dev", "uid-1");
    terminating.deleting = true;
    let obs = Observed {
        original: None,
        objects: vec![terminating, labelled(Service, "dev", "uid-2")],
    };
    assert_plan(
        "pod terminating, service left",
        &plan(&rec, &obs),
        &[delete(Service, "dev", "uid-2")],
        &[],
    );
}

#[test]
fn new_deployment_mode_never_restores_anything() {
    // Even with an original in the record (which this mode never writes) at 0 replicas.
    let rec = SessionRecord::test()
        .swapping("app", 2)
        .creating("app")
        .with_id(ID)
        .with_proxy(Pod, "app", "uid-1");
    let obs = Observed {
        original: original(ORIG_UID, 0),
        objects: vec![labelled(Pod, "app", "uid-1")],
    };
    assert_plan(
        "new deployment",
        &plan(&rec, &obs),
        &[delete(Pod, "app", "uid-1")],
        &[],
    );
}

#[test]
fn recorded_object_without_the_session_label_is_reported_not_deleted() {
    let rec = SessionRecord::test()
        .creating("dev")
        .with_id(ID)
        .with_proxy(Pod, "dev", "uid-1")
        .with_proxy(Service, "dev", "uid-2");
    let obs = Observed {
        original: None,
        objects: vec![
            unlabelled(Pod, "dev", "uid-1"),
            labelled_with(OTHER_ID, Service, "dev", "uid-2"),
        ],
    };
    assert_plan(
        "label gone or changed",
        &plan(&rec, &obs),
        &[],
        &[
            &["pod/dev", "no longer carries", ID, "uid-1"],
            &["service/dev", "no longer carries", ID, "uid-2"],
        ],
    );
}

#[test]
fn unrecorded_object_without_the_session_label_is_ignored() {
    let rec = SessionRecord::test().creating("dev").with_id(ID);
    let obs = Observed {
        original: None,
        objects: vec![
            unlabelled(Pod, "someone-elses", "uid-9"),
            labelled_with(OTHER_ID, Deployment, "another-session", "uid-8"),
        ],
    };
    assert!(plan(&rec, &obs).is_empty());
}

#[test]
fn owned_objects_are_left_to_the_garbage_collector() {
    let rec = SessionRecord::test()
        .swapping("app", 2)
        .with_id(ID)
        .with_proxy(Deployment, &proxy(), "uid-d");
    let obs = Observed {
        original: original(ORIG_UID, 2),
        objects: vec![
            labelled(Deployment, &proxy(), "uid-d"),
            owned(labelled(Pod, &format!("{}-5d9f7-abcde", proxy()), "uid-p")),
        ],
    };
    assert_plan(
        "proxy deployment with its pod",
        &plan(&rec, &obs),
        &[delete(Deployment, &proxy(), "uid-d")],
        &[],
    );
}

/// `owned` is "has any ownerReference", but skipping is only right when the owner goes with
/// the session (the ReplicaSet of a proxy Deployment). No Telepresence object owns a
/// Deployment, so a labelled, owned Deployment will never be collected with the session:
/// a 0.105 swap proxy is a deep copy of the original's metadata and would inherit, say, an
/// operator's ownerReference. It is not recorded (the follower skips owned objects), not
/// deleted and not reported: the plan is empty and the session looks cleaned up.
#[test]
fn an_owned_proxy_deployment_is_not_skipped_silently() {
    let rec = SessionRecord::test().swapping("app", 2).with_id(ID);
    let obs = Observed {
        original: original(ORIG_UID, 2),
        objects: vec![owned(labelled(Deployment, &proxy(), "uid-d"))],
    };
    let p = plan(&rec, &obs);
    assert!(!p.is_empty(), "the proxy is neither deleted nor reported");
}

#[test]
fn recorded_proxy_whose_uid_changed_is_reported_not_deleted() {
    let rec = SessionRecord::test()
        .swapping("app", 2)
        .with_id(ID)
        .with_proxy(Pod, &proxy(), "uid-1");
    let obs = Observed {
        original: original(ORIG_UID, 2),
        objects: vec![labelled(Pod, &proxy(), "uid-other")],
    };
    assert_plan(
        "replaced proxy",
        &plan(&rec, &obs),
        &[],
        &[&["replaced", "uid-1", "uid-other"]],
    );
}

#[test]
fn unrecorded_object_with_the_session_label_is_deleted_with_its_observed_uid() {
    // The agent was late, or missed the `--expose` Service: the label proves it.
    let rec = SessionRecord::test()
        .creating("dev")
        .with_id(ID)
        .with_proxy(Pod, "dev", "uid-1");
    let obs = Observed {
        original: None,
        objects: vec![
            labelled(Pod, "dev", "uid-1"),
            labelled(Service, "dev", "uid-s"),
        ],
    };
    assert_plan(
        "unrecorded service",
        &plan(&rec, &obs),
        &[delete(Pod, "dev", "uid-1"), delete(Service, "dev", "uid-s")],
        &[],
    );
}

#[test]
fn without_a_telepresence_id_nothing_is_deleted() {
    let objects = vec![labelled(Pod, &proxy(), "uid-1")];
    let recorded = SessionRecord::test()
        .swapping("app", 2)
        .with_proxy(Pod, &proxy(), "uid-1");
    let obs = Observed {
        original: original(ORIG_UID, 0),
        objects: objects.clone(),
    };
    assert_plan(
        "proxies recorded",
        &plan(&recorded, &obs),
        &[restore(2, ORIG_UID)],
        &[&["session id is unknown", "not deleting"]],
    );

    let unrecorded = SessionRecord::test().creating("dev");
    let obs = Observed {
        original: None,
        objects,
    };
    // Objects with a telepresence label created during the session: reported only.
    assert_plan(
        "no proxies recorded, labelled objects seen",
        &plan(&unrecorded, &obs),
        &[],
        &[&["never learned", "not deleting"]],
    );
    let nothing = Observed {
        original: None,
        objects: Vec::new(),
    };
    assert_plan(
        "nothing recorded, nothing seen",
        &plan(&unrecorded, &nothing),
        &[],
        &[],
    );
}

#[test]
fn actions_are_ordered_restore_then_deployment_pod_service() {
    let rec = SessionRecord::test().swapping("app", 2).with_id(ID);
    let obs = Observed {
        original: original(ORIG_UID, 0),
        objects: vec![
            labelled(Service, "b-svc", "uid-s2"),
            labelled(Service, "a-svc", "uid-s1"),
            labelled(Pod, "pod", "uid-p"),
            labelled(Deployment, "dep", "uid-d"),
        ],
    };
    assert_plan(
        "order",
        &plan(&rec, &obs),
        &[
            restore(2, ORIG_UID),
            delete(Deployment, "dep", "uid-d"),
            delete(Pod, "pod", "uid-p"),
            delete(Service, "a-svc", "uid-s1"),
            delete(Service, "b-svc", "uid-s2"),
        ],
        &[],
    );
}

#[test]
fn an_object_observed_twice_is_deleted_once() {
    // Found by the label and again by its recorded name.
    let rec = SessionRecord::test()
        .creating("dev")
        .with_id(ID)
        .with_proxy(Pod, "dev", "uid-1");
    let obs = Observed {
        original: None,
        objects: vec![labelled(Pod, "dev", "uid-1"), labelled(Pod, "dev", "uid-1")],
    };
    assert_plan(
        "duplicate",
        &plan(&rec, &obs),
        &[delete(Pod, "dev", "uid-1")],
        &[],
    );
}

#[test]
fn a_session_telepresence_cleaned_up_after_plans_nothing() {
    let rec = SessionRecord::test()
        .swapping("app", 2)
        .with_id(ID)
        .with_proxy(Pod, &proxy(), "uid-1")
        .in_state(State::Orphaned, "process exited");
    let obs = Observed {
        original: original(ORIG_UID, 2),
        objects: vec![],
    };
    let p = plan(&rec, &obs);
    assert!(p.is_empty(), "{p:#?}");
    assert!(Plan::default().is_empty());
}

#[test]
fn a_plan_with_only_attention_is_not_empty() {
    let p = Plan {
        actions: vec![],
        attention: vec![Attention::ProxiesWithoutId],
    };
    assert!(!p.is_empty());
    let p = Plan {
        actions: vec![delete(Pod, "dev", "uid-1")],
        attention: vec![],
    };
    assert!(!p.is_empty());
}

#[test]
fn actions_display_as_the_log_shows_them() {
    assert_eq!(
        restore(2, "u1").to_string(),
        "scale deployment/app to 2 (uid u1, if still at 0)"
    );
    assert_eq!(
        delete(Service, "dev", "u2").to_string(),
        "delete service/dev (uid u2)"
    );
}
