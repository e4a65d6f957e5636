//! The lifecycle, one table row per transition: a record in a state, an event, and what
//! must follow.

use super::*;
use crate::session::ReplicaSource;

const ID: &str = "9dc6d5a80acf4e6dae1045b22bfdd1ef";

fn proxy(kind: ProxyKind, name: &str, uid: &str) -> ProxyObject {
    ProxyObject {
        kind,
        name: name.into(),
        uid: uid.into(),
    }
}

fn labelled(kind: ProxyKind, name: &str, uid: &str) -> ObservedObject {
    ObservedObject {
        kind,
        name: name.into(),
        uid: uid.into(),
        labels: [("telepresence".to_string(), ID.to_string())].into(),
        owned: false,
        deleting: false,
    }
}

fn cluster_now(replicas: i32, objects: Vec<ObservedObject>) -> Observed {
    Observed {
        original: Some(ObservedWorkload {
            uid: SessionRecord::TEST_ORIGINAL_UID.into(),
            replicas,
        }),
        objects,
    }
}

fn now(event: Observed, twin: Option<(String, u32)>, dry_run: bool) -> Event {
    Event::ClusterNow {
        observed: event,
        twin,
        dry_run,
    }
}

/// One row: the behaviour, the record, the event, the state that follows (`None`: no
/// transition), and fragments of each history line the step writes.
struct Row {
    what: &'static str,
    rec: SessionRecord,
    event: Event,
    next: Option<State>,
    why: Vec<&'static str>,
    execute: usize,
}

fn row(
    what: &'static str,
    rec: SessionRecord,
    event: Event,
    next: Option<State>,
    why: &[&'static str],
) -> Row {
    Row {
        what,
        rec,
        event,
        next,
        why: why.to_vec(),
        execute: 0,
    }
}

#[test]
fn every_transition_of_a_sessions_life() {
    use State::*;
    let seen = SessionRecord::test().in_state(Seen, "found");
    let swap = SessionRecord::test().swapping("app", 2).with_id(ID);
    let recorded = swap.clone().in_state(Recorded, "recorded");
    let orphaned = swap
        .clone()
        .with_proxy(ProxyKind::Pod, "app-x", "uid-pod")
        .in_state(Orphaned, "exited");
    let planned_before = orphaned
        .clone()
        .in_state(CleaningUp, "1 repair action(s) planned");
    let bound = ClusterBinding {
        server: "https://10.0.0.1:6443".into(),
        context: "prod".into(),
        ..seen.cluster.clone()
    };
    let rows = vec![
        row(
            "found, half-blind, cluster unknown",
            seen.clone(),
            Event::Found {
                pid: 77,
                blind: vec!["cannot read its environment".into()],
                cluster_problem: Some("no kubeconfig".into()),
            },
            Some(Seen),
            &[
                "Telepresence process 77 found",
                "cannot read its environment",
                "cannot tell which cluster the session uses yet: no kubeconfig; will look again",
            ],
        ),
        row(
            "the cluster appears",
            seen.clone(),
            Event::ClusterFound {
                binding: bound.clone(),
                in_scope: true,
            },
            Some(Seen),
            &["cluster https://10.0.0.1:6443 (context prod) found"],
        ),
        row(
            "the cluster appears, out of scope",
            seen.clone(),
            Event::ClusterFound {
                binding: bound,
                in_scope: false,
            },
            Some(Ended),
            &["out of the configured scope"],
        ),
        row(
            "it ended before its cluster was known",
            seen.clone(),
            Event::EndedBeforeCluster("no kubeconfig".into()),
            Some(NeedsAttention),
            &["the session ended before its cluster could be known: no kubeconfig"],
        ),
        row(
            "no client, for good",
            seen.clone(),
            Event::NoClient("bad certificate".into()),
            Some(NeedsAttention),
            &["cannot talk to the session's cluster: bad certificate"],
        ),
        row(
            "the workload cannot be read, for good",
            seen.clone(),
            Event::WorkloadUnreadable("403".into()),
            Some(NeedsAttention),
            &["cannot read the session's workload: 403"],
        ),
        row(
            "a mode that swaps nothing",
            seen.clone(),
            Event::NoWorkload,
            Some(Recorded),
            &["no workload to record in this mode"],
        ),
        row(
            "the original observed in time",
            seen.clone(),
            Event::Workload {
                name: "app".into(),
                now: Some(WorkloadNow {
                    uid: "u1".into(),
                    replicas: 3,
                    last_applied: None,
                    selector: Default::default(),
                }),
                fallbacks: Fallbacks::default(),
            },
            Some(Recorded),
            &["deployment/app has 3 replicas (observed)"],
        ),
        row(
            "the original gone",
            seen.clone(),
            Event::Workload {
                name: "app".into(),
                now: None,
                fallbacks: Fallbacks::default(),
            },
            Some(Recorded),
            &["the original replica count of deployment/app is unknown"],
        ),
        row(
            "the id proven",
            recorded.clone(),
            Event::IdProven {
                id: ID.into(),
                because: "its proxy".into(),
            },
            Some(Recorded),
            &["Telepresence session id 9dc6d5a80acf4e6dae1045b22bfdd1ef (its proxy)"],
        ),
        row(
            "its shell died",
            recorded.clone(),
            Event::ShellDied,
            Some(Recorded),
            &["the session's shell died"],
        ),
        row(
            "a proxy",
            recorded.clone(),
            Event::ProxySeen {
                proxy: proxy(ProxyKind::Pod, "app-x", "uid-pod"),
                owned: false,
            },
            Some(Active),
            &["proxy pod/app-x (uid uid-pod)"],
        ),
        row(
            "a proxy already recorded",
            orphaned.clone(),
            Event::ProxySeen {
                proxy: proxy(ProxyKind::Pod, "app-x", "uid-pod"),
                owned: false,
            },
            None,
            &[],
        ),
        row(
            "a pod of a proxy Deployment is the Deployment's",
            recorded.clone(),
            Event::ProxySeen {
                proxy: proxy(ProxyKind::Pod, "app-x-abc", "uid-p2"),
                owned: true,
            },
            None,
            &[],
        ),
        row(
            "an owned Deployment (a 0.105 proxy copies ownerReferences) is recorded",
            recorded.clone(),
            Event::ProxySeen {
                proxy: proxy(ProxyKind::Deployment, "app-x", "uid-d"),
                owned: true,
            },
            Some(Active),
            &["proxy deployment/app-x (uid uid-d)"],
        ),
        row(
            "its process exited",
            recorded.clone(),
            Event::Exited,
            Some(Orphaned),
            &["the Telepresence process exited"],
        ),
        row(
            "exited again (resumed from the journal)",
            orphaned.clone(),
            Event::Exited,
            None,
            &[],
        ),
        row(
            "exited while the repair was under way",
            planned_before.clone(),
            Event::Exited,
            None,
            &[],
        ),
        row(
            "the repair waits for the cluster",
            orphaned.clone(),
            Event::Unreachable("cluster unreachable: connection refused".into()),
            Some(Orphaned),
            &["cluster unreachable: connection refused; will retry"],
        ),
        row(
            "the repair refused (RBAC)",
            orphaned.clone(),
            Event::Refused {
                problem: "forbidden".into(),
                code: Some(403),
            },
            Some(NeedsAttention),
            &[
                "the cluster refused (RBAC): forbidden; once that is fixed, run: telepolice-agent repair 4242-1000",
            ],
        ),
        row(
            "a live twin",
            orphaned.clone(),
            now(cluster_now(0, vec![]), Some(("99-1".into(), 99)), false),
            Some(NeedsAttention),
            &["session 99-1 (pid 99) is alive and uses the same Telepresence session or workload"],
        ),
        row(
            "Telepresence cleaned up itself",
            orphaned.clone(),
            now(cluster_now(2, vec![]), None, false),
            Some(Ended),
            &["Telepresence's own cleanup left nothing to repair"],
        ),
        row(
            "a repair begun earlier had finished",
            planned_before.clone(),
            now(cluster_now(2, vec![]), None, false),
            Some(Cleaned),
            &["nothing left to repair: the repair begun earlier is complete"],
        ),
        row(
            "a dry run",
            orphaned.clone(),
            now(cluster_now(0, vec![]), None, true),
            Some(NeedsAttention),
            &[
                "dry run: repairs planned but not done (to carry them out: telepolice-agent repair 4242-1000)",
            ],
        ),
        Row {
            execute: 2,
            ..row(
                "planned: journaled first",
                orphaned.clone(),
                now(
                    cluster_now(0, vec![labelled(ProxyKind::Pod, "app-x", "uid-pod")]),
                    None,
                    false,
                ),
                Some(CleaningUp),
                &["2 repair action(s) planned"],
            )
        },
        row(
            "only attention: a person, nothing carried out",
            orphaned.clone(),
            now(cluster_now(5, vec![]), None, false),
            Some(NeedsAttention),
            &["deployment/app has 5 replicas, neither 0 nor the original 2"],
        ),
        row(
            "carried out",
            planned_before.clone(),
            Event::Carried { attention: vec![] },
            Some(Cleaned),
            &["repaired what the session left"],
        ),
        row(
            "carried out, some refused",
            planned_before.clone(),
            Event::Carried {
                attention: vec![Attention::RestoreConflict { name: "app".into() }],
            },
            Some(NeedsAttention),
            &["deployment/app changed while being restored"],
        ),
        row(
            "a repair by hand",
            orphaned.clone(),
            Event::HandRepair,
            Some(Orphaned),
            &["repair by hand requested"],
        ),
        row(
            "taken over by a sweeper",
            orphaned.clone(),
            Event::TakenOver {
                holder: "sweeper/s-1".into(),
            },
            Some(Ended),
            &["the in-cluster sweeper sweeper/s-1 took the session's heartbeat Lease"],
        ),
        row(
            "a repair by hand failed",
            orphaned,
            Event::HandRepairFailed("journal full".into()),
            Some(NeedsAttention),
            &["repair by hand failed: journal full"],
        ),
    ];
    assert!(rows.len() >= 24, "one row per transition");
    for r in rows {
        let s = step(&r.rec, r.event);
        let lines: Vec<String> = s.why.iter().map(ToString::to_string).collect();
        let next = if lines.is_empty() { None } else { s.next };
        assert_eq!(next, r.next, "{}: the next state ({lines:?})", r.what);
        assert_eq!(lines.len(), r.why.len(), "{}: {lines:?}", r.what);
        for (line, want) in lines.iter().zip(&r.why) {
            assert!(
                line.contains(want),
                "{}: {line:?} should say {want:?}",
                r.what
            );
        }
        assert_eq!(
            s.execute.len(),
            r.execute,
            "{}: actions to carry out",
            r.what
        );
        // What is carried out is journaled as planned first.
        assert!(
            s.execute.is_empty() || s.acts.iter().all(|(_, o)| *o == "planned"),
            "{}",
            r.what
        );
    }
}

#[test]
fn applying_a_step_records_what_it_learnt_and_why() {
    let mut rec = SessionRecord::test().in_state(State::Seen, "found");
    let s = step(
        &rec,
        Event::Workload {
            name: "app".into(),
            now: Some(WorkloadNow {
                uid: "u1".into(),
                replicas: 0,
                last_applied: Some(4),
                selector: Default::default(),
            }),
            fallbacks: Fallbacks::default(),
        },
    );
    apply(&mut rec, &s);
    let o = rec.original.clone().expect("recorded");
    assert_eq!(
        (o.replicas, o.source),
        (Some(4), ReplicaSource::LastApplied)
    );
    assert_eq!(rec.state, State::Recorded);
    assert_eq!(
        rec.history.last().map(|t| t.reason.as_str()),
        Some("deployment/app had 4 replicas (from last-applied-configuration; the agent was late)")
    );
    let s = step(
        &rec,
        Event::IdProven {
            id: ID.into(),
            because: "x".into(),
        },
    );
    apply(&mut rec, &s);
    assert_eq!(rec.telepresence_id.as_deref(), Some(ID));
    let p = proxy(ProxyKind::Service, "app-x", "uid-s");
    let s = step(
        &rec,
        Event::ProxySeen {
            proxy: p.clone(),
            owned: false,
        },
    );
    apply(&mut rec, &s);
    assert_eq!(rec.proxies, [p]);
    assert_eq!(rec.state, State::Active);
}

#[test]
fn a_planned_repair_keeps_the_plans_attention_for_after() {
    let rec = SessionRecord::test()
        .swapping("app", 2)
        .with_id(ID)
        .in_state(State::Orphaned, "exited");
    // The original rescaled by someone, and a proxy to delete.
    let s = step(
        &rec,
        now(
            cluster_now(5, vec![labelled(ProxyKind::Pod, "app-x", "uid-pod")]),
            None,
            false,
        ),
    );
    assert_eq!(s.next, Some(State::CleaningUp));
    assert_eq!(s.execute.len(), 1);
    assert!(matches!(
        s.then_attention[..],
        [Attention::Rescaled {
            now: 5,
            want: 2,
            ..
        }]
    ));
    assert_eq!(
        s.acts,
        [("delete pod/app-x (uid uid-pod)".to_string(), "planned")]
    );
}

#[test]
fn a_refusal_reads_as_what_happened_and_what_to_run() {
    let restore = Action::Restore {
        name: "app".into(),
        uid: "u".into(),
        replicas: 2,
    };
    let delete = Action::Delete {
        kind: ProxyKind::Pod,
        name: "app-x".into(),
        uid: "u".into(),
    };
    let cases = [
        (
            &restore,
            Some(409),
            "deployment/app changed while being restored (uid or replicas no longer as recorded); left as is",
        ),
        (
            &restore,
            Some(422),
            "deployment/app changed while being restored",
        ),
        (
            &delete,
            Some(409),
            "pod/app-x was replaced by another object; not deleted",
        ),
        (
            &delete,
            Some(422),
            "boom; once that is fixed, run: telepolice-agent repair k",
        ),
        (
            &restore,
            Some(403),
            "the cluster refused (RBAC): boom; once that is fixed, run: telepolice-agent repair k",
        ),
        (
            &delete,
            None,
            "boom; once that is fixed, run: telepolice-agent repair k",
        ),
    ];
    for (action, code, want) in cases {
        let said = refused_action(action, "boom".into(), code, "k").to_string();
        assert!(said.starts_with(want), "{action} {code:?}: {said}");
    }
    assert_eq!(
        waiting_problem(Wait::Answered(503), "unavailable"),
        "the API server answered 503: unavailable"
    );
    assert_eq!(
        waiting_problem(Wait::Unreachable, "refused"),
        "cluster unreachable: refused"
    );
    assert!(waiting_problem(Wait::NoClient, "x").contains("log in again"));
    assert_eq!(waiting_problem(Wait::Journal, "disk full"), "disk full");
}

#[test]
fn a_dying_shell_ends_the_session_only_when_configured_and_for_real() {
    use OnShellDeath::*;
    assert!(terminate_on_shell_death(Terminate, false, true));
    assert!(!terminate_on_shell_death(Terminate, true, true), "dry run");
    assert!(
        !terminate_on_shell_death(Terminate, false, false),
        "already gone"
    );
    assert!(
        !terminate_on_shell_death(Ignore, false, true),
        "configured to leave it"
    );
}

#[test]
fn a_repair_is_under_way_from_its_plan_until_a_final_state() {
    let orphaned = SessionRecord::test().in_state(State::Orphaned, "the process exited");
    assert!(!repair_under_way(&orphaned), "nothing planned yet");
    let planned = orphaned
        .clone()
        .in_state(State::CleaningUp, "2 repair action(s) planned");
    assert!(repair_under_way(&planned), "killed while repairing");
    let retrying = planned
        .clone()
        .in_state(State::Orphaned, "cluster unreachable, will retry");
    assert!(
        repair_under_way(&retrying),
        "the cluster was lost while repairing"
    );
    let refused = retrying.in_state(State::NeedsAttention, "refused");
    assert!(!repair_under_way(&refused), "a final state ends it");
}
