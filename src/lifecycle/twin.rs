//! Whether another session is alive and holds what a dead session would repair: repairing
//! then would undo the live session's changes.

use crate::platform::ProcessId;
use crate::session::SessionRecord;
use crate::telepresence::Mode;

/// Another session of `others` whose process is `alive` and that has the same Telepresence
/// session id as `rec`, or swaps the same workload of the same cluster.
pub fn live_twin<'a>(
    rec: &SessionRecord,
    others: &'a [SessionRecord],
    alive: impl Fn(ProcessId) -> bool,
) -> Option<&'a SessionRecord> {
    let swapped = |r: &SessionRecord| match &r.invocation.mode {
        Mode::Swap { deployment, .. } => Some((
            r.cluster.server.clone(),
            r.cluster.namespace.clone(),
            deployment.clone(),
        )),
        _ => None,
    };
    let mine = swapped(rec);
    others.iter().find(|o| {
        o.key != rec.key
            && ((o.telepresence_id.is_some() && o.telepresence_id == rec.telepresence_id)
                || (mine.is_some() && swapped(o) == mine))
            && alive(o.process)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9dc6d5a80acf4e6dae1045b22bfdd1ef";

    #[test]
    fn a_twin_is_alive_and_shares_the_session_id_or_the_swapped_workload() {
        let dead = SessionRecord::test()
            .with_process(1, 1)
            .swapping("app", 2)
            .with_id(ID);
        let same_id = SessionRecord::test().with_process(2, 1).with_id(ID);
        let same_swap = SessionRecord::test().with_process(3, 1).swapping("app", 2);
        let other_swap = SessionRecord::test().with_process(4, 1).swapping("web", 2);
        let alive = |pids: &'static [u32]| move |p: ProcessId| pids.contains(&p.pid);
        type Case = (
            &'static str,
            Vec<SessionRecord>,
            &'static [u32],
            Option<u32>,
        );
        let cases: Vec<Case> = vec![
            ("no other session", vec![], &[], None),
            (
                "itself, alive, is not a twin",
                vec![dead.clone()],
                &[1],
                None,
            ),
            ("same id, alive", vec![same_id.clone()], &[2], Some(2)),
            ("same id, dead", vec![same_id.clone()], &[], None),
            (
                "same workload, alive",
                vec![same_swap.clone()],
                &[3],
                Some(3),
            ),
            (
                "another workload, alive",
                vec![other_swap.clone()],
                &[4],
                None,
            ),
            (
                "the first live twin",
                vec![other_swap, same_swap, same_id],
                &[2, 3, 4],
                Some(3),
            ),
        ];
        for (what, others, live, want) in cases {
            let got = live_twin(&dead, &others, alive(live)).map(|r| r.process.pid);
            assert_eq!(got, want, "{what}");
        }
    }
}
