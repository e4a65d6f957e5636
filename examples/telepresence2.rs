//! A Telepresence 2 connector stand-in for telepolice-agent's tests, copied into a test's
//! own dir as `telepresence` and run as `telepresence connector-foreground [--name N]`,
//! the command line 2.x gives its user daemon.
//!
//! What it does is what the facts of 2.x say a connector does after `telepresence connect`
//! (Telepresence's `pkg/client/cli/connect` and `pkg/client/userd`, v2.20.2):
//! - `daemons/<id>.json` in the user's Telepresence cache (`$XDG_CACHE_HOME/telepresence`
//!   or `~/.cache/telepresence`), with the context and namespace, touched every 5 s (the
//!   real CLI writes it just before starting the connector; the stand-in writes it itself);
//! - the session a killed connector left resumed when its cache is for the same context and
//!   namespace and `Remain` answers; else `ArriveAsClient`; then the session cache: `sessions/<id>.json` (2.16+,
//!   `{"kubeContext","namespace","session"}`) or, for `TEL2_STANDIN_SHAPE=2.15`, one
//!   `sessions.json` (`{"Host","session"}`) and no daemon file (2.6.7-2.15 had none);
//!   `TEL2_STANDIN_SHAPE=2.5` writes no cache at all (before 2.6.7);
//! - `Remain` every 5 s; an intercept when asked (`TEL2_STANDIN_INTERCEPT=<workload>`);
//! - on SIGTERM or SIGINT (`telepresence quit`): `Depart`, then the session cache is
//!   deleted (only after the `Depart` succeeded), then the daemon file.
//!
//! `telepresence status --output json` says `user_daemon.manager_namespace`
//! (`TEL2_STANDIN_MANAGER_NAMESPACE`, else `ambassador`) while a connector runs.
//! `telepresence intercept NAME [flags] -- CMD...` (starting a connector as its child when
//! none runs, as 2.x connects on its own) makes the intercept in the connector's session, runs the command, then removes the intercept (a CLI killed meanwhile leaves it,
//! as 2.x's does); `telepresence leave NAME` removes it. Both fail unless a connector keeps
//! its daemon file fresh, and take the session from its cache.
//!
//! With `TEL2_STANDIN_SOCKET_DIR` it listens on `telepresence-connector.socket` there (the
//! real one's is in `/tmp`), removed on a quit and left behind by a kill.
//!
//! Not like the real one: it reaches the traffic-manager at `TEL2_STANDIN_MANAGER`
//! (`host:port`) directly instead of through a port-forward, and it has no root daemon,
//! no connector socket and no gRPC API of its own. It takes the context and namespace
//! `connect` would give it from `TEL2_STANDIN_CONTEXT` and `TEL2_STANDIN_NAMESPACE`.
//! When everything is written it prints `connected <session id>` on stdout.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use trafficmanager::manager::manager_client::ManagerClient;
use trafficmanager::proto::{
    ClientInfo, CreateInterceptRequest, InterceptSpec, RemainRequest, RemoveInterceptRequest2,
    SessionInfo,
};

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn cache_dir() -> PathBuf {
    match var("XDG_CACHE_HOME") {
        Some(d) => Path::new(&d).join("telepresence"),
        None => Path::new(&var("HOME").unwrap_or_else(|| "/".into())).join(".cache/telepresence"),
    }
}

/// The daemon id: `--name`, or `<context>-<namespace>` (the tests use names that need no
/// escaping).
fn daemon_id(name: Option<&str>, context: &str, namespace: &str) -> String {
    name.map_or_else(|| format!("{context}-{namespace}"), str::to_string)
}

fn write(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)?;
    std::fs::rename(&tmp, path)
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("connector-foreground") => connector(&args).await,
        Some("intercept") => intercept(&args).await,
        Some("leave") => leave(&args).await,
        Some("status") => status(),
        _ => {
            eprintln!("telepresence2 stand-in: {args:?} is not served");
            std::process::exit(1);
        }
    }
}

/// The connector's session as its cache names it, when the connector runs (its daemon
/// file fresh); what the CLI asks the connector for, here read directly.
async fn connected()
-> Result<(ManagerClient<tonic::transport::Channel>, SessionInfo), Box<dyn std::error::Error>> {
    let context = var("TEL2_STANDIN_CONTEXT").ok_or("TEL2_STANDIN_CONTEXT is not set")?;
    let namespace = var("TEL2_STANDIN_NAMESPACE").unwrap_or_else(|| "default".into());
    let manager = var("TEL2_STANDIN_MANAGER").ok_or("TEL2_STANDIN_MANAGER is not set")?;
    let id = daemon_id(None, &context, &namespace);
    let cache = cache_dir();
    let touched =
        std::fs::metadata(cache.join("daemons").join(format!("{id}.json")))?.modified()?;
    if SystemTime::now()
        .duration_since(touched)
        .unwrap_or_default()
        > Duration::from_millis(5_600)
    {
        return Err("not connected (no connector keeps its daemon file)".into());
    }
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(
        cache.join("sessions").join(format!("{id}.json")),
    )?)?;
    let s = &saved["session"];
    let session = SessionInfo {
        session_id: s["session_id"].as_str().unwrap_or_default().to_string(),
        cluster_id: s["cluster_id"].as_str().unwrap_or_default().to_string(),
        install_id: s["install_id"].as_str().map(str::to_string),
    };
    Ok((
        ManagerClient::connect(format!("http://{manager}")).await?,
        session,
    ))
}

/// `intercept NAME [--port P] -- CMD...`: the intercept, the command, then `leave`, as
/// 2.x's `RunAndLeave`; a CLI killed while the command runs leaves the intercept in place.
async fn intercept(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let dash = args.iter().position(|a| a == "--").ok_or("no -- CMD")?;
    let name = args[1..dash]
        .iter()
        .find(|a| !a.starts_with('-') && a.parse::<u32>().is_err())
        .ok_or("no intercept name")?
        .clone();
    // Not connected yet: the CLI connects on its own, starting the connector as its child.
    let (mut client, session) = match connected().await {
        Ok(c) => c,
        Err(_) => {
            let mut connector = std::process::Command::new(std::env::current_exe()?)
                .arg("connector-foreground")
                .env_remove("TEL2_STANDIN_INTERCEPT")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(connector.stdout.take().ok_or("no stdout")?),
                &mut line,
            )?;
            connected().await?
        }
    };
    client
        .create_intercept(intercept_request(&session, &name, &namespace()))
        .await?;
    let status = tokio::process::Command::new(&args[dash + 1])
        .args(&args[dash + 2..])
        .status()
        .await?;
    client
        .remove_intercept(RemoveInterceptRequest2 {
            session: Some(session),
            name,
        })
        .await?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `status --output json`: what the user daemon says of its connection (the manager
/// namespace from `TEL2_STANDIN_MANAGER_NAMESPACE`, else `ambassador`), or three empty
/// objects when no connector runs.
fn status() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let context = var("TEL2_STANDIN_CONTEXT").unwrap_or_default();
    let id = daemon_id(None, &context, &namespace());
    let running = std::fs::metadata(cache_dir().join("daemons").join(format!("{id}.json")))
        .and_then(|m| m.modified())
        .is_ok_and(|t| {
            SystemTime::now().duration_since(t).unwrap_or_default() < Duration::from_millis(5_600)
        });
    let doc = if running {
        serde_json::json!({
            "user_daemon": {
                "running": true, "name": id, "version": "v2.20.2",
                "kubernetes_context": context, "namespace": namespace(),
                "manager_namespace": var("TEL2_STANDIN_MANAGER_NAMESPACE").unwrap_or_else(|| "ambassador".into()),
                "intercepts": [],
            },
            "root_daemon": {"running": true},
            "traffic_manager": {"name": "traffic-manager", "version": "v2.20.2"},
        })
    } else {
        serde_json::json!({"user_daemon": {}, "root_daemon": {}, "traffic_manager": {}})
    };
    writeln!(std::io::stdout().lock(), "{doc}")?;
    Ok(())
}

/// `leave NAME`: the connector removes the intercept (here, the manager is asked directly).
async fn leave(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let name = args.get(1).ok_or("leave: no name")?.clone();
    let (mut client, session) = connected().await?;
    client
        .remove_intercept(RemoveInterceptRequest2 {
            session: Some(session),
            name,
        })
        .await?;
    Ok(())
}

/// `connector-foreground [--name N]`.
async fn connector(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let name = args
        .iter()
        .position(|a| a == "--name")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let context = var("TEL2_STANDIN_CONTEXT").ok_or("TEL2_STANDIN_CONTEXT is not set")?;
    let namespace = var("TEL2_STANDIN_NAMESPACE").unwrap_or_else(|| "default".into());
    let manager = var("TEL2_STANDIN_MANAGER").ok_or("TEL2_STANDIN_MANAGER is not set")?;
    let shape = var("TEL2_STANDIN_SHAPE").unwrap_or_else(|| "2.20".into());
    let modern_cache = shape != "2.15" && shape != "2.5";

    // The connector's socket (Telepresence's is /tmp/telepresence-connector.socket): a
    // killed connector leaves the file behind, and the CLI removes it when nothing answers
    // on it before it starts the next connector (`pkg/client/cli/connect/connector.go`).
    let socket =
        var("TEL2_STANDIN_SOCKET_DIR").map(|d| Path::new(&d).join("telepresence-connector.socket"));
    let _listener = match &socket {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            Some(std::os::unix::net::UnixListener::bind(path)?)
        }
        None => None,
    };
    let cache = cache_dir();
    let id = daemon_id(name.as_deref(), &context, &namespace);
    let daemon_file = cache.join("daemons").join(format!("{id}.json"));
    if modern_cache {
        write(
            &daemon_file,
            &serde_json::json!({
                "options": {}, "in_docker": false, "name": name.clone().unwrap_or_default(),
                "kube_context": context, "namespace": namespace, "daemon_port": 0,
                "exposed_ports": null, "hostname": "",
            }),
        )?;
    }

    let mut client = ManagerClient::connect(format!("http://{manager}")).await?;
    let install_id = format!("install-{}", std::process::id());
    let per_daemon = cache.join("sessions").join(format!("{id}.json"));
    let session = match resume(&mut client, &per_daemon, &context, &namespace).await {
        Some(s) => s,
        None => client
            .arrive_as_client(ClientInfo {
                name: "dev@laptop".into(),
                install_id: install_id.clone(),
                product: "telepresence".into(),
                version: "2.20.2".into(),
                api_key: String::new(),
                namespace: namespace.clone(),
            })
            .await?
            .into_inner(),
    };
    let saved = serde_json::json!({
        "session_id": session.session_id, "cluster_id": session.cluster_id,
        "install_id": session.install_id.clone().unwrap_or(install_id),
    });
    let session_file = match shape.as_str() {
        "2.5" => None,
        "2.15" => {
            let host = var("TEL2_STANDIN_HOST").ok_or("TEL2_STANDIN_HOST is not set")?;
            let f = cache.join("sessions.json");
            write(&f, &serde_json::json!({"Host": host, "session": saved}))?;
            Some(f)
        }
        _ => {
            write(
                &per_daemon,
                &serde_json::json!({"kubeContext": context, "namespace": namespace, "session": saved}),
            )?;
            Some(per_daemon)
        }
    };
    if let Some(workload) = var("TEL2_STANDIN_INTERCEPT") {
        let made = client
            .create_intercept(intercept_request(&session, &workload, &namespace))
            .await;
        // A resumed session has its intercepts still.
        match made {
            Err(e) if e.code() != tonic::Code::AlreadyExists => return Err(e.into()),
            _ => {}
        }
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "connected {}", session.session_id)?;
        out.flush()?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = every.tick() => {
                touch(&daemon_file);
                let remain = RemainRequest { session: Some(session.clone()), api_key: String::new() };
                if let Err(e) = client.remain(remain).await {
                    eprintln!("remain: {e}");
                }
            }
        }
    }
    let quitting = quit(&mut client, &session, session_file.as_deref(), &daemon_file).await;
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
    }
    quitting
}

/// The session a killed connector left, if its cache is for this context and namespace and
/// the manager still has it (`Remain` answers): 2.x resumes it, intercepts and all.
async fn resume(
    client: &mut ManagerClient<tonic::transport::Channel>,
    cache: &Path,
    context: &str,
    namespace: &str,
) -> Option<SessionInfo> {
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(cache).ok()?).ok()?;
    if saved["kubeContext"] != context || saved["namespace"] != namespace {
        return None;
    }
    let s = &saved["session"];
    let session = SessionInfo {
        session_id: s["session_id"].as_str()?.to_string(),
        cluster_id: s["cluster_id"].as_str().unwrap_or_default().to_string(),
        install_id: s["install_id"].as_str().map(str::to_string),
    };
    let remain = RemainRequest {
        session: Some(session.clone()),
        api_key: String::new(),
    };
    client.remain(remain).await.ok()?;
    Some(session)
}

/// What `telepresence intercept NAME --port 8080` asks the manager for.
fn intercept_request(session: &SessionInfo, name: &str, namespace: &str) -> CreateInterceptRequest {
    CreateInterceptRequest {
        session: Some(session.clone()),
        intercept_spec: Some(InterceptSpec {
            name: name.to_string(),
            client: "dev@laptop".into(),
            agent: name.to_string(),
            namespace: namespace.to_string(),
            mechanism: "tcp".into(),
            target_host: "127.0.0.1".into(),
            target_port: 8080,
            port_identifier: "http".into(),
            workload_kind: "Deployment".into(),
            ..Default::default()
        }),
        api_key: String::new(),
    }
}

fn namespace() -> String {
    var("TEL2_STANDIN_NAMESPACE").unwrap_or_else(|| "default".into())
}

/// What the connector does when it is told to quit.
async fn quit(
    client: &mut ManagerClient<tonic::transport::Channel>,
    session: &SessionInfo,
    session_file: Option<&Path>,
    daemon_file: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    client.depart(session.clone()).await?;
    if let Some(f) = session_file {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(daemon_file);
    Ok(())
}
