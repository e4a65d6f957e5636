//! An `intercept NAME -- CMD` whose CLI died while its connector lives: `telepresence
//! leave NAME`, once proven due.

#[allow(clippy::wildcard_imports)]
use super::*;

/// After an `intercept NAME -- CMD` CLI died: when its connector still runs and the
/// traffic-manager still has the intercept in the connector's session (and no other
/// `intercept NAME` CLI runs), `telepresence leave NAME`, as the CLI would have; the
/// connector is alive, so `leave` starts nothing and needs no sudo.
pub(super) async fn leave_intercept(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    env: Option<&HashMap<String, String>>,
) {
    let name = tel2(rec).intercept.unwrap_or_default();
    let mut retry = Retry::new(FIRST_BACKOFF, MAX_BACKOFF, 300, ctx.probe.subscribe());
    loop {
        let tried = tokio::time::Instant::now();
        match leave_pass(ctx, rec, &name, env).await {
            Pass::Done => {
                ctx.board.done(&rec.key);
                return;
            }
            Pass::Wait(problem) => {
                ctx.board.failed(&rec.key, problem);
                retry.pause(tried, MAX_BACKOFF).await;
            }
        }
    }
}

/// Whether the traffic-manager lists intercept `name` in `session` (`None`: it has no such
/// session).
pub(super) async fn holds(
    rec: &SessionRecord,
    session: &str,
    name: &str,
) -> Result<bool, ManagerError> {
    let client = cluster::client_for(&rec.cluster).await?;
    let list = Manager::connect(&client, &tel2(rec).manager_namespace)
        .await?
        .session_intercepts(session)
        .await?;
    Ok(list.is_some_and(|l| l.iter().any(|i| i.name == name)))
}

/// One look, and the `leave` when it is due.
pub(super) async fn leave_pass(
    ctx: &Ctx,
    rec: &mut SessionRecord,
    name: &str,
    env: Option<&HashMap<String, String>>,
) -> Pass {
    let ended = |rec: &mut SessionRecord, why: &str| {
        rec.transition(State::Ended, why.to_string());
        ctx.save(rec);
        info!(session = %rec.key, "intercept {name}: {why}");
        Pass::Done
    };
    let Some(session) = tel2(rec).session_id else {
        return ended(rec, "no connector session was seen while its command ran");
    };
    if !connector_alive(rec) {
        return ended(
            rec,
            "its connector is gone too: ending the connector's session ends the intercept",
        );
    }
    if cached_now(rec).as_deref() != Some(session.as_str()) {
        return ended(rec, "the connector holds another session now");
    }
    let unsure = |rec: &mut SessionRecord, e: ManagerError| {
        if e.is_transient() {
            Pass::Wait(format!(
                "cannot reach the traffic-manager yet ({e}); trying again"
            ))
        } else {
            attention(
                ctx,
                rec,
                &format!("cannot tell whether intercept {name} is left behind: {e}"),
            );
            Pass::Done
        }
    };
    match holds(rec, &session, name).await {
        Ok(true) => {}
        Ok(false) => return ended(rec, "the intercept is gone: its CLI left it"),
        Err(e) => return unsure(rec, e),
    }
    if other_intercept_cli(rec, name) {
        return ended(
            rec,
            "another `telepresence intercept` of the same name runs: it holds the intercept now",
        );
    }
    let command = format!("telepresence leave {name}");
    let why = format!("leaving intercept {name}: its command's CLI died while the connector runs");
    if let Some(pass) = begin(ctx, rec, command.clone(), why) {
        return pass;
    }
    let said = run_leave(rec, name, env).await;
    match holds(rec, &session, name).await {
        Ok(false) => {
            rec.act(&command, "done");
            rec.transition(State::Cleaned, format!("left intercept {name}"));
            ctx.save(rec);
            info!(session = %rec.key, "left intercept {name}: its command's CLI had died");
            Pass::Done
        }
        Ok(true) => {
            rec.act(&command, format!("failed: {said}"));
            attention(
                ctx,
                rec,
                &format!("`{command}` did not remove intercept {name} ({said}); run it yourself"),
            );
            Pass::Done
        }
        Err(e) => unsure(rec, e),
    }
}

/// Runs `<telepresence> leave NAME` with the CLI's environment (what it was when the agent
/// found it, else the record's), for at most 30 s; what it said.
pub(super) async fn run_leave(
    rec: &SessionRecord,
    name: &str,
    env: Option<&HashMap<String, String>>,
) -> String {
    let t = tel2(rec);
    let program = t
        .program
        .clone()
        .unwrap_or_else(|| PathBuf::from(rec.argv.first().cloned().unwrap_or_default()));
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(["leave", name])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(cwd) = &rec.cwd {
        cmd.current_dir(cwd);
    }
    match env {
        Some(env) => {
            cmd.env_clear().envs(env);
        }
        None => {
            cmd.envs(rec.cluster.exec_env.iter().cloned());
            if let Some(cache_home) = t.cache_dir.parent() {
                cmd.env("XDG_CACHE_HOME", cache_home);
            }
            if let Ok(k) = std::env::join_paths(&rec.cluster.kubeconfig) {
                cmd.env("KUBECONFIG", k);
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let text = if text.is_empty() {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            } else {
                text
            };
            format!("{}: {}", out.status, text)
        }
        Ok(Err(e)) => format!("{} could not run: {e}", program.display()),
        Err(_) => "no answer within 30 s".to_string(),
    }
}
