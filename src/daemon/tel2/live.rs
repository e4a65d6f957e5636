//! A live connector, read every 100 ms until its session is recorded, then every second:
//! its daemon and cluster, its session, once where the traffic-manager is and which
//! intercepts the session holds.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One read of a live connector's files: learns its daemon id, cluster and session as they
/// appear or change. False when the session is not the agent's business (out of scope),
/// and forgotten. `since`: (about) when the process started.
pub(super) async fn read_live(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: &HashMap<String, String>,
    since: SystemTime,
) -> bool {
    let t = tel2(rec);
    if t.daemon_id.is_none() && rec.cluster.server.is_empty() {
        if !bind(ctx, rec, env, since) {
            return true;
        }
        if !ctx
            .cfg()
            .in_scope(&rec.cluster.context, &rec.cluster.namespace)
        {
            pass_over_out_of_scope(ctx, rec.process, &rec.argv, &rec.cluster);
            let _ = ctx.journal.remove(&rec.key);
            return false;
        }
    }
    let t = tel2(rec);
    let Some((path, saved)) = session_cache(&t.cache_dir, t.daemon_id.as_deref()) else {
        return true;
    };
    let saved = match saved {
        Ok(s) => s,
        Err(e) => {
            warn!(session = %rec.key, "{}: {e}", path.display());
            return true;
        }
    };
    if !same_cluster(&saved.scope, &rec.cluster) {
        return true;
    }
    let id = saved.session.session_id.clone();
    if t.session_id.as_deref() == Some(id.as_str()) {
        return true;
    }
    let first = t.session_id.is_none();
    let t = tel2_mut(rec);
    t.session_id = Some(id.clone());
    t.cluster_id = Some(saved.session.cluster_id.clone());
    t.session_file = Some(path.clone());
    let why = if first {
        format!(
            "session {id} in the traffic-manager (cluster id {}), cached in {}",
            saved.session.cluster_id,
            path.display()
        )
    } else {
        format!(
            "now session {id} (the connector arrived again), cached in {}",
            path.display()
        )
    };
    rec.transition(State::Recorded, why);
    ctx.save(rec);
    failpoint::hit("tel2.recorded");
    if first {
        learn_manager_namespace(ctx, rec, env).await;
    }
    learn_intercepts(ctx, rec, &id).await;
    start_heartbeat(ctx, rec).await;
    true
}

/// Team mode: the session's heartbeat Lease, in the configured namespace (a connector only:
/// an intercept CLI holds no session of its own).
pub(super) async fn start_heartbeat(ctx: &Ctx, rec: &SessionRecord) {
    let cfg = ctx.cfg();
    if !cfg.team_writes()
        || tel2(rec).intercept.is_some()
        || ctx.heartbeats.beat(&rec.key).is_some()
    {
        return;
    }
    if let Ok(client) = cluster::client_for(&rec.cluster).await {
        ctx.heartbeats
            .start(rec, &client, cfg.team_lease_namespace.as_deref());
    }
}

/// Asks the user's Telepresence where its traffic-manager is: `telepresence status --output
/// json` (which never starts a daemon nor asks for sudo), run with the connector's own
/// program and environment, says `user_daemon.manager_namespace`. Without an answer the
/// configured `telepresence2_manager_namespace` stays.
pub(super) async fn learn_manager_namespace(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: &HashMap<String, String>,
) {
    let Some(program) = tel2(rec).program else {
        return;
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(["status", "--output", "json"])
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(cwd) = &rec.cwd {
        cmd.current_dir(cwd);
    }
    let said = match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => out.stdout,
        Ok(Ok(out)) => {
            info!(session = %rec.key, "`telepresence status --output json` failed ({}): the manager namespace stays {}", out.status, tel2(rec).manager_namespace);
            return;
        }
        Ok(Err(e)) => {
            info!(session = %rec.key, "cannot run {}: {e}", program.display());
            return;
        }
        Err(_) => {
            info!(session = %rec.key, "`telepresence status --output json` gave no answer within 10 s");
            return;
        }
    };
    let ns = tp2::status_manager_namespace(&said);
    match ns {
        Some(ns) if ns != tel2(rec).manager_namespace => {
            let why = format!("the traffic-manager is in namespace {ns} (telepresence status)");
            tel2_mut(rec).manager_namespace = ns;
            rec.transition(rec.state, why);
            ctx.save(rec);
        }
        _ => {}
    }
}

/// Learns the connector's daemon and cluster: from its fresh `daemons/<id>.json` (2.16+),
/// else, for 2.6.7-2.15 (no daemon files), from a `sessions.json` written since the process
/// started, whose API server names the kubeconfig context. False while neither says.
pub(super) fn bind(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: &HashMap<String, String>,
    since: SystemTime,
) -> bool {
    let t = tel2(rec);
    if let Some(d) = own_daemon_file(&t) {
        let Some(id) = d.info.daemon_id() else {
            return false;
        };
        match cluster::resolve_binding(
            env,
            rec.cwd.as_deref(),
            Some(&d.info.kube_context),
            Some(&d.info.namespace),
        ) {
            Ok(b) => rec.cluster = b,
            Err(e) => {
                rec.cluster.context = d.info.kube_context.clone();
                rec.cluster.namespace = d.info.namespace.clone();
                warn!(session = %rec.key, "Telepresence 2 connector {id}: {e}");
            }
        }
        tel2_mut(rec).daemon_id = Some(id.clone());
        let why = format!(
            "daemon {id}: context {} namespace {} ({})",
            rec.cluster.context,
            rec.cluster.namespace,
            if rec.cluster.server.is_empty() {
                "API server unknown"
            } else {
                &rec.cluster.server
            }
        );
        rec.transition(State::Seen, why);
        ctx.save(rec);
        return true;
    }
    let legacy = t.cache_dir.join("sessions.json");
    let written_since = std::fs::metadata(&legacy)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at >= since);
    if !written_since {
        return false;
    }
    let Some(Ok(tp2::SavedSession {
        scope: Scope::Host(host),
        ..
    })) = std::fs::read(&legacy)
        .ok()
        .map(|b| tp2::parse_saved_session(&b))
    else {
        return false;
    };
    let Some(b) = cluster::binding_for_server(env, rec.cwd.as_deref(), &host) else {
        warn!(session = %rec.key, "{}: no kubeconfig context points at {host}", legacy.display());
        return false;
    };
    rec.cluster = b;
    let why = format!(
        "Telepresence 2.6.7-2.15 (no daemon file): context {} at {host}, the API server its sessions.json names",
        rec.cluster.context
    );
    rec.transition(State::Seen, why);
    ctx.save(rec);
    true
}

/// Whether a saved session is for the connector's cluster: its context and namespace
/// (2.16+), or its API server (`sessions.json`).
pub(super) fn same_cluster(scope: &Scope, b: &ClusterBinding) -> bool {
    match scope {
        Scope::Daemon { context, namespace } => *context == b.context && *namespace == b.namespace,
        Scope::Host(host) => {
            b.server.is_empty() || host.trim_end_matches('/') == b.server.trim_end_matches('/')
        }
    }
}

/// Asks the traffic-manager once which intercepts the session holds, for the record (a
/// failure is only logged: nothing depends on it while the connector lives).
pub(super) async fn learn_intercepts(ctx: &Ctx, rec: &mut SessionRecord, session_id: &str) {
    let ns = tel2(rec).manager_namespace;
    let read = async {
        let client = cluster::client_for(&rec.cluster)
            .await
            .map_err(ManagerError::from)?;
        Manager::connect(&client, &ns)
            .await?
            .session_intercepts(session_id)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(Some(list))) => {
            let names: Vec<String> = list
                .iter()
                .map(|i| format!("{}/{} ({})", i.namespace, i.workload, i.name))
                .collect();
            if names != tel2(rec).intercepts {
                tel2_mut(rec).intercepts = names;
                ctx.save(rec);
            }
        }
        Ok(Ok(None)) => {
            info!(session = %rec.key, "the traffic-manager does not list session {session_id} (yet)")
        }
        Ok(Err(e)) => {
            info!(session = %rec.key, "cannot list the intercepts of session {session_id}: {e}")
        }
        Err(_) => {
            info!(session = %rec.key, "listing the intercepts of session {session_id} timed out")
        }
    }
}
