//! Ending a dead connector's session: the verdict on what is left, then `Depart` through a
//! port-forward and the cache file, each journaled; retried while the cluster cannot be
//! reached, and once by hand (`telepolice-agent repair`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// After the grace: passes at ending the session until one reaches a final state, retrying
/// while the cluster or the traffic-manager cannot be reached.
pub(super) async fn end_session(ctx: &Ctx, rec: &mut SessionRecord, died_at: SystemTime) {
    // The 0.x repair's schedule: a dead session's end waits, and must follow within a
    // second or two of the cluster answering again.
    let mut retry = Retry::new(FIRST_BACKOFF, MAX_BACKOFF, 300, ctx.probe.subscribe());
    let mut last_problem = String::new();
    loop {
        let tried = tokio::time::Instant::now();
        match pass(ctx, rec, died_at).await {
            Pass::Done => {
                ctx.board.done(&rec.key);
                return;
            }
            Pass::Wait(problem) => {
                ctx.board.failed(&rec.key, problem.clone());
                if problem != last_problem {
                    warn!(session = %rec.key, "{problem}");
                    last_problem = problem;
                }
                retry.pause(tried, MAX_BACKOFF).await;
            }
        }
    }
}

/// `telepolice-agent repair` of a 2.x session (its connector dead, no daemon following
/// it): one pass, the same decision and the same steps as the daemon's.
pub(in crate::daemon) async fn hand_repair(ctx: &Ctx, rec: &mut SessionRecord) {
    rec.transition(rec.state, "repair asked by hand");
    ctx.save(rec);
    let died_at = orphaned_at(rec).unwrap_or_else(SystemTime::now);
    if let Pass::Wait(problem) = pass(ctx, rec, died_at).await {
        attention(ctx, rec, &problem);
    }
}

/// The decision on the session now, and, when it is to end it, the steps: `CleaningUp`
/// journaled durably, then [`depart`].
pub(super) async fn pass(ctx: &Ctx, rec: &mut SessionRecord, died_at: SystemTime) -> Pass {
    loop {
        let t = tel2(rec);
        let cache_now = cached_now(rec);
        let leftover = Leftover {
            recorded: t.session_id.as_deref(),
            cache_now: cache_now.as_deref(),
            connector_running: connector_running(rec, died_at),
            departed: rec
                .actions
                .iter()
                .any(|a| a.action.starts_with(DEPART) && a.outcome.starts_with("done")),
            daemon_info_seen: t.daemon_id.is_some(),
        };
        let (id, departing) = match verdict::decide(leftover) {
            Verdict::Ended(why) => {
                rec.transition(State::Ended, why.to_string());
                ctx.save(rec);
                info!(session = %rec.key, "Telepresence 2 session ended: {why}");
                return Pass::Done;
            }
            Verdict::Attention(why) => {
                attention(ctx, rec, &why.to_string());
                return Pass::Done;
            }
            Verdict::Depart(id) => (id, true),
            Verdict::Finish(id) => (id, false),
        };
        if let crate::daemon::heartbeat::Fence::Taken(holder) = ctx.heartbeats.fence(&rec.key).await
        {
            let why = crate::lifecycle::Why::TakenOver { holder };
            warn!(session = %rec.key, "{why}");
            rec.transition(State::Ended, why.to_string());
            ctx.save(rec);
            return Pass::Done;
        }
        let action = format!(
            "{DEPART} {id} in the traffic-manager in {}",
            t.manager_namespace
        );
        let why = format!("ending session {id}: the connector died and no connector resumed it");
        if let Some(pass) = begin(ctx, rec, action, why) {
            return pass;
        }
        failpoint::hit("tel2.cleaning");
        match depart(ctx, rec, &id, departing, died_at).await {
            Ok(Departed::Yes) => {
                rec.transition(
                    State::Cleaned,
                    format!("ended session {id}: {}", rec.repair_summary()),
                );
                ctx.save(rec);
                info!(session = %rec.key, "Telepresence 2 session {id} ended: {}", rec.repair_summary());
                return Pass::Done;
            }
            // Something changed since the decision: decide again.
            Ok(Departed::Changed) => continue,
            Ok(Departed::NotHeld(ns)) => {
                let why = format!(
                    "the traffic-manager in {ns} does not have session {id} (it expired, or was ended elsewhere): nothing to end; its cache file is left for Telepresence"
                );
                rec.transition(State::Ended, why);
                ctx.save(rec);
                return Pass::Done;
            }
            Err(e) if e.is_transient() => {
                return Pass::Wait(format!(
                    "cannot reach the traffic-manager yet ({e}); trying again"
                ));
            }
            Err(e) => {
                attention(ctx, rec, &format!("cannot end session {id}: {e}"));
                return Pass::Done;
            }
        }
    }
}

/// What [`depart`] did.
pub(super) enum Departed {
    /// The session is gone from the traffic-manager, and its cache file too.
    Yes,
    /// Just before `Depart`, a connector for the daemon was running again, or the cache
    /// named another session: nothing was done.
    Changed,
    /// The traffic-manager in that namespace does not have the session: nothing was done.
    NotHeld(String),
}

/// `Depart` (unless done already), then the cache file, each journaled when done. Just
/// before `Depart` the proof is taken again (no connector of the daemon runs, the cache
/// still names the session), which narrows the window in which a `telepresence connect`
/// could resume the session under the agent's hands to the call itself.
pub(super) async fn depart(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    id: &str,
    departing: bool,
    died_at: SystemTime,
) -> Result<Departed, ManagerError> {
    let ns = tel2(rec).manager_namespace;
    if departing {
        let client = cluster::client_for(&rec.cluster).await?;
        let manager = Manager::connect(&client, &ns).await?;
        // Read first: a session the manager no longer has (expired, or departed before an
        // agent crash) is not departed again.
        let held = manager.session_intercepts(id).await?;
        let action = format!("{DEPART} {id} in the traffic-manager in {ns}");
        let started = rec
            .actions
            .iter()
            .any(|a| a.action == action && a.outcome == "started");
        match held {
            // Departed by this agent before it was stopped: the intent is journaled.
            None if started => rec.act(action, "done: the traffic-manager no longer had it"),
            // Expired, ended elsewhere, or this is not the session's traffic-manager: the
            // cache file is left for Telepresence (its next connect starts afresh).
            None => return Ok(Departed::NotHeld(ns)),
            Some(list) => {
                if connector_running(rec, died_at) || cached_now(rec).as_deref() != Some(id) {
                    return Ok(Departed::Changed);
                }
                // The intent, on disk before the call: a restarted agent that finds the
                // session gone knows it was this agent's doing.
                rec.act(&action, "started");
                if let Err(e) = ctx.save_durably(rec) {
                    return Err(ManagerError::Connect {
                        pod: manager.pod.clone(),
                        namespace: ns,
                        why: format!("not departing before the journal takes it: {e}"),
                    });
                }
                manager.depart(id).await?;
                failpoint::hit("tel2.departed");
                let names: Vec<String> = list
                    .iter()
                    .map(|i| format!("{}/{}", i.namespace, i.workload))
                    .collect();
                // "done" alone, so that the repair's summary lists it.
                let done = if names.is_empty() {
                    action
                } else {
                    format!("{action}, its intercepts of {} with it", names.join(", "))
                };
                rec.act(done, "done");
            }
        }
        ctx.save(rec);
        failpoint::hit("tel2.depart-saved");
    }
    remove_cache(ctx, rec, id);
    Ok(Departed::Yes)
}

/// Removes the session cache file if it still names `id` (what Telepresence does after a
/// successful `Depart`), so that the next `telepresence connect` starts afresh.
pub(super) fn remove_cache(ctx: &Ctx, rec: &mut SessionRecord, id: &str) {
    let t = tel2(rec);
    let Some((path, Ok(saved))) = session_cache(&t.cache_dir, t.daemon_id.as_deref()) else {
        return;
    };
    if saved.session.session_id != id {
        return;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => rec.act(format!("remove {}", path.display()), "done"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => rec.act(format!("remove {}", path.display()), format!("failed: {e}")),
    }
    ctx.save(rec);
}
