//! Which evidence gives the original workload's replica count, in order of trust: the
//! cluster before Telepresence scaled it down, the agent's own earlier observation of the
//! same Deployment, Telepresence's log, `last-applied-configuration`. Never a guess.

use std::collections::BTreeMap;

use crate::session::{Original, ReplicaSource, SessionRecord};

/// The original Deployment as the cluster holds it when the session is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadNow {
    /// Its uid.
    pub uid: String,
    /// `spec.replicas` (a missing value means 1).
    pub replicas: i32,
    /// `spec.replicas` in its `kubectl.kubernetes.io/last-applied-configuration`.
    pub last_applied: Option<i32>,
    /// Its `spec.selector.matchLabels`.
    pub selector: BTreeMap<String, String>,
}

/// What the agent was late for: evidence read only when the cluster no longer shows the
/// count (see [`needs_fallbacks`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fallbacks {
    /// The agent's own earlier observation (see [`earlier_observation`]).
    pub earlier: Option<i32>,
    /// The count in Telepresence's log, and the uid the log gives the original.
    pub log: Option<(i32, Option<String>)>,
}

/// Whether the cluster no longer shows the original count (Telepresence already scaled it
/// down), so that the fallbacks must be read.
pub fn needs_fallbacks(now: &WorkloadNow) -> bool {
    now.replicas <= 0
}

/// The original of a swap of `name`, from the cluster now and the fallbacks.
pub fn original(name: &str, now: Option<WorkloadNow>, fallbacks: &Fallbacks) -> Original {
    let Some(w) = now else {
        return Original {
            name: name.to_string(),
            uid: None,
            replicas: None,
            source: ReplicaSource::Uncertain,
            selector: BTreeMap::new(),
        };
    };
    let (replicas, source) = if w.replicas > 0 {
        (Some(w.replicas), ReplicaSource::Observed)
    } else {
        match (fallbacks.earlier, &fallbacks.log, w.last_applied) {
            (Some(r), _, _) => (Some(r), ReplicaSource::Earlier),
            // The log's count only for the same object (a log that gives no uid is 0.105's,
            // taken as it is).
            (None, Some((r, uid)), _) if uid.as_ref().is_none_or(|u| *u == w.uid) => {
                (Some(*r), ReplicaSource::Log)
            }
            (None, _, Some(r)) => (Some(r), ReplicaSource::LastApplied),
            _ => (None, ReplicaSource::Uncertain),
        }
    };
    Original {
        name: name.to_string(),
        uid: Some(w.uid),
        replicas,
        source,
        selector: w.selector,
    }
}

/// The replica count the agent itself observed for the same Deployment (same cluster,
/// namespace, name and uid) in another session of `records` than `rec`: the newest such
/// observation.
pub fn earlier_observation(
    records: &[SessionRecord],
    rec: &SessionRecord,
    deployment: &str,
    uid: &str,
) -> Option<i32> {
    records
        .iter()
        .filter(|r| r.key != rec.key)
        .filter(|r| {
            r.cluster.server == rec.cluster.server && r.cluster.namespace == rec.cluster.namespace
        })
        .filter_map(|r| {
            let o = r.original.as_ref()?;
            let ok = o.name == deployment
                && o.uid.as_deref() == Some(uid)
                && o.source == ReplicaSource::Observed;
            Some((r.seen_at()?.to_string(), o.replicas?)).filter(|_| ok)
        })
        .max()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_zero(last_applied: Option<i32>) -> Option<WorkloadNow> {
        Some(WorkloadNow {
            uid: "u1".into(),
            replicas: 0,
            last_applied,
            selector: BTreeMap::new(),
        })
    }

    #[test]
    fn the_most_trusted_evidence_wins() {
        let log = |n, uid: Option<&str>| Some((n, uid.map(String::from)));
        type Case = (
            &'static str,
            Option<WorkloadNow>,
            Fallbacks,
            Option<i32>,
            ReplicaSource,
        );
        let cases: Vec<Case> = vec![
            (
                "gone",
                None,
                Fallbacks::default(),
                None,
                ReplicaSource::Uncertain,
            ),
            (
                "observed before the scale-down beats everything",
                Some(WorkloadNow {
                    replicas: 3,
                    ..at_zero(Some(9)).expect("some")
                }),
                Fallbacks {
                    earlier: Some(7),
                    log: log(8, None),
                },
                Some(3),
                ReplicaSource::Observed,
            ),
            (
                "late: the agent's own earlier observation first",
                at_zero(Some(9)),
                Fallbacks {
                    earlier: Some(7),
                    log: log(8, Some("u1")),
                },
                Some(7),
                ReplicaSource::Earlier,
            ),
            (
                "then the log, for the same uid",
                at_zero(Some(9)),
                Fallbacks {
                    earlier: None,
                    log: log(8, Some("u1")),
                },
                Some(8),
                ReplicaSource::Log,
            ),
            (
                "a log without a uid (0.105) counts",
                at_zero(None),
                Fallbacks {
                    earlier: None,
                    log: log(8, None),
                },
                Some(8),
                ReplicaSource::Log,
            ),
            (
                "a log about another object does not; last-applied then",
                at_zero(Some(9)),
                Fallbacks {
                    earlier: None,
                    log: log(8, Some("u-other")),
                },
                Some(9),
                ReplicaSource::LastApplied,
            ),
            (
                "nothing: unknown, never guessed",
                at_zero(None),
                Fallbacks {
                    earlier: None,
                    log: log(8, Some("u-other")),
                },
                None,
                ReplicaSource::Uncertain,
            ),
        ];
        for (what, now, fb, replicas, source) in cases {
            assert_eq!(
                now.as_ref().is_some_and(needs_fallbacks),
                now.as_ref().is_some_and(|w| w.replicas == 0),
                "{what}"
            );
            let o = original("app", now, &fb);
            assert_eq!((o.replicas, o.source), (replicas, source), "{what}");
        }
    }

    #[test]
    fn an_earlier_observation_is_of_the_same_object_in_the_same_cluster_and_the_newest() {
        let rec = SessionRecord::test().with_process(1, 1);
        let seen = |pid: u32, at: &str, uid: &str, n: i32, source: ReplicaSource| {
            let mut r = SessionRecord::test()
                .with_process(pid, 1)
                .in_state(crate::session::State::Cleaned, "old");
            r.history[0].at = at.to_string();
            r.original = Some(Original {
                name: "app".into(),
                uid: Some(uid.into()),
                replicas: Some(n),
                source,
                selector: BTreeMap::new(),
            });
            r
        };
        let records = vec![
            seen(2, "2026-01-01T00:00:00Z", "u1", 2, ReplicaSource::Observed),
            seen(3, "2026-02-01T00:00:00Z", "u1", 4, ReplicaSource::Observed),
            seen(4, "2026-03-01T00:00:00Z", "u1", 6, ReplicaSource::Log),
            seen(5, "2026-04-01T00:00:00Z", "u2", 8, ReplicaSource::Observed),
        ];
        assert_eq!(earlier_observation(&records, &rec, "app", "u1"), Some(4));
        assert_eq!(earlier_observation(&records, &rec, "app", "u3"), None);
        assert_eq!(earlier_observation(&records, &rec, "other", "u1"), None);
        // Its own record is not an earlier observation.
        let mine = seen(1, "2026-05-01T00:00:00Z", "u1", 9, ReplicaSource::Observed);
        assert_eq!(earlier_observation(&[mine], &rec, "app", "u1"), None);
    }
}
