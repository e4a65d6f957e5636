//! Leader election on a Lease, the rule client-go's `leaderelection` package follows, and
//! the same staleness judgement for session heartbeats.
//!
//! A Lease is only ever judged by when *this* process saw its record change, on its own
//! monotonic clock, never by comparing the `renewTime` written by another machine with the
//! local clock: clocks of laptops and nodes disagree, a sweeper's observations do not.
//!
//! - A candidate takes the Lease when nobody holds it, or when the record has not changed
//!   for the record's own `leaseDurationSeconds` since the candidate first saw it as it is.
//! - Writes are updates carrying the `resourceVersion` read, so of two candidates only one
//!   succeeds (the other gets a conflict and has not acquired).
//! - A leader renews every retry period; one that has not renewed for the renew deadline
//!   has lost the lead and stops acting at once, before any other candidate can take it
//!   (renew deadline < lease duration).

use std::time::Duration;

use jiff::Timestamp;

/// client-go's defaults (`LeaseDuration` 15 s, `RenewDeadline` 10 s, `RetryPeriod` 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a non-leader waits after the record last changed before taking it.
    pub lease_duration: Duration,
    /// How long a leader keeps acting without a successful renew.
    pub renew_deadline: Duration,
    /// How often candidates try, and leaders renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A Lease's spec as far as election reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// `holderIdentity`; empty when released.
    pub holder: String,
    /// `leaseDurationSeconds`.
    pub duration_secs: i32,
    /// `acquireTime`.
    pub acquire: Option<Timestamp>,
    /// `renewTime`.
    pub renew: Option<Timestamp>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, holding it.
    Create(Record),
    /// Write this record (renewing, or taking over), with the read `resourceVersion`.
    Update(Record),
    /// Someone else holds it and it is fresh: do nothing.
    Wait {
        /// Who holds it.
        holder: String,
    },
}

/// When a Lease's record was last seen to change, on the observer's own clock.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    last: Option<Record>,
    at: Option<tokio::time::Instant>,
}

impl Observer {
    /// Notes the record read at `now`; returns when it was first seen as it is now.
    pub fn see(
        &mut self,
        record: Option<&Record>,
        now: tokio::time::Instant,
    ) -> tokio::time::Instant {
        if self.last.as_ref() != record || self.at.is_none() {
            self.last = record.cloned();
            self.at = Some(now);
        }
        self.at.unwrap_or(now)
    }

    /// When the record was first seen as it is now (`None`: never seen).
    pub fn since(&self) -> Option<tokio::time::Instant> {
        self.at
    }

    /// How long the record has stayed as it is, at `now`.
    pub fn unchanged_for(&self, now: tokio::time::Instant) -> Duration {
        self.at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
    }
}

/// The election rule: what `me` does with `current` (`None`: no Lease), seen unchanged
/// since `seen_since` (own clock), at `now` (own clock) and `wall` (written as times).
pub fn decide(
    current: Option<&Record>,
    me: &str,
    seen_unchanged_for: Duration,
    wall: Timestamp,
    timing: &Timing,
) -> Decision {
    let duration_secs = i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(cur) = current else {
        return Decision::Create(Record {
            holder: me.to_string(),
            duration_secs,
            acquire: Some(wall),
            renew: Some(wall),
            transitions: 0,
        });
    };
    let held_by_other = !cur.holder.is_empty() && cur.holder != me;
    let expiry = Duration::from_secs(u64::try_from(cur.duration_secs.max(0)).unwrap_or(0));
    if held_by_other && seen_unchanged_for < expiry {
        return Decision::Wait {
            holder: cur.holder.clone(),
        };
    }
    let mine = cur.holder == me;
    Decision::Update(Record {
        holder: me.to_string(),
        duration_secs,
        acquire: if mine {
            cur.acquire.or(Some(wall))
        } else {
            Some(wall)
        },
        renew: Some(wall),
        transitions: if mine {
            cur.transitions
        } else {
            cur.transitions.saturating_add(1)
        },
    })
}

/// The record a leader writes when it steps down on shutdown (client-go's
/// `ReleaseOnCancel`): no holder, a 1 s duration, so that a candidate takes over at once.
pub fn released(cur: &Record, wall: Timestamp) -> Record {
    Record {
        holder: String::new(),
        duration_secs: 1,
        acquire: Some(wall),
        renew: Some(wall),
        transitions: cur.transitions,
    }
}

/// Whether a leader that last renewed `since_renewed` ago still leads.
pub fn still_leads(since_renewed: Duration, timing: &Timing) -> bool {
    since_renewed < timing.renew_deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, secs: i32, transitions: i32) -> Record {
        Record {
            holder: holder.into(),
            duration_secs: secs,
            acquire: Some(Timestamp::UNIX_EPOCH),
            renew: Some(Timestamp::UNIX_EPOCH),
            transitions,
        }
    }

    #[test]
    fn the_election_rule_as_client_go_has_it() {
        let t = Timing::default();
        let wall: Timestamp = "2026-12-04T12:00:00Z".parse().expect("time");
        let s = Duration::from_secs;
        // (current, seen unchanged for, expected)
        let rows: Vec<(Option<Record>, Duration, &str)> = vec![
            (None, s(0), "create"),
            (Some(rec("b", 15, 3)), s(0), "wait"),
            (Some(rec("b", 15, 3)), s(14), "wait"),
            (Some(rec("b", 15, 3)), s(15), "take"),
            // The record's own duration counts, not the candidate's.
            (Some(rec("b", 60, 3)), s(30), "wait"),
            (Some(rec("", 1, 3)), s(0), "take"),
            (Some(rec("me", 15, 3)), s(0), "renew"),
            (Some(rec("me", 15, 3)), s(100), "renew"),
        ];
        for (cur, seen, want) in rows {
            let d = decide(cur.as_ref(), "me", seen, wall, &t);
            let got = match &d {
                Decision::Create(r) => {
                    assert_eq!((r.holder.as_str(), r.transitions), ("me", 0));
                    "create"
                }
                Decision::Wait { holder } => {
                    assert_eq!(Some(holder), cur.as_ref().map(|c| &c.holder));
                    "wait"
                }
                Decision::Update(r) if cur.as_ref().is_some_and(|c| c.holder == "me") => {
                    assert_eq!(r.transitions, 3, "a renew is no transition");
                    assert_eq!(r.acquire, Some(Timestamp::UNIX_EPOCH), "acquire time kept");
                    assert_eq!(r.renew, Some(wall));
                    "renew"
                }
                Decision::Update(r) => {
                    assert_eq!(r.transitions, 4, "a take-over is a transition");
                    assert_eq!((r.acquire, r.holder.as_str()), (Some(wall), "me"));
                    "take"
                }
            };
            assert_eq!(got, want, "{cur:?} seen for {seen:?}");
        }
    }

    #[test]
    fn a_leader_stops_before_another_may_start() {
        let t = Timing::default();
        assert!(still_leads(Duration::from_millis(9_999), &t));
        assert!(!still_leads(t.renew_deadline, &t));
        assert!(t.renew_deadline < t.lease_duration);
        let r = released(&rec("me", 15, 2), Timestamp::UNIX_EPOCH);
        assert_eq!(
            (r.holder.as_str(), r.duration_secs, r.transitions),
            ("", 1, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn staleness_is_judged_by_the_observers_own_clock() {
        let mut o = Observer::default();
        let t0 = tokio::time::Instant::now();
        let a = rec("b", 15, 1);
        o.see(Some(&a), t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = tokio::time::Instant::now();
        assert_eq!(o.see(Some(&a), now), t0, "the same record: still since t0");
        assert_eq!(o.unchanged_for(now), Duration::from_secs(10));
        let mut b = a.clone();
        b.renew = Some("1999-01-01T00:00:00Z".parse().expect("time"));
        // A renew written with a clock far behind still counts as a change.
        assert_eq!(o.see(Some(&b), now), now);
        assert_eq!(o.unchanged_for(now), Duration::ZERO);
    }
}
