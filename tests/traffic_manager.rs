//! The traffic-manager stand-in's rules, through its gRPC API with tonic's client: what the
//! agent's 2.x tests rely on (sessions, `Remain`, the TTL sweep, an idempotent `Depart`
//! taking the intercepts with it, the conflict rule, `WatchIntercepts`).

use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use trafficmanager::manager::manager_client::ManagerClient;
use trafficmanager::proto::{
    ClientInfo, CreateInterceptRequest, InterceptSpec, RemainRequest, RemoveInterceptRequest2,
    SessionInfo,
};
use trafficmanager::{Disposition, Options, TrafficManager};

async fn client(tm: &TrafficManager) -> anyhow::Result<ManagerClient<Channel>> {
    Ok(ManagerClient::connect(format!("http://{}", tm.addr())).await?)
}

async fn arrive(c: &mut ManagerClient<Channel>, name: &str) -> anyhow::Result<SessionInfo> {
    let info = ClientInfo {
        name: name.to_string(),
        namespace: "default".to_string(),
        install_id: format!("install-{name}"),
        product: "telepresence".to_string(),
        version: "2.20.2".to_string(),
        api_key: String::new(),
    };
    Ok(c.arrive_as_client(info).await?.into_inner())
}

/// `telepresence intercept echo --port 8080` as the connector asks for it.
fn intercept(session: &SessionInfo, name: &str) -> CreateInterceptRequest {
    CreateInterceptRequest {
        session: Some(session.clone()),
        intercept_spec: Some(InterceptSpec {
            name: name.to_string(),
            client: "dev@laptop".to_string(),
            agent: "echo".to_string(),
            namespace: "default".to_string(),
            mechanism: "tcp".to_string(),
            target_host: "127.0.0.1".to_string(),
            target_port: 8080,
            port_identifier: "http".to_string(),
            workload_kind: "Deployment".to_string(),
            ..Default::default()
        }),
        api_key: String::new(),
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn depart_ends_the_session_and_its_intercepts_and_is_idempotent() -> anyhow::Result<()> {
    let tm = TrafficManager::start(Options::default())?;
    let mut c = client(&tm).await?;
    let s = arrive(&mut c, "dev@laptop").await?;
    assert_eq!(s.cluster_id, Options::default().cluster_id);
    let made = c
        .create_intercept(intercept(&s, "echo"))
        .await?
        .into_inner();
    assert_eq!(made.id, format!("{}:echo", s.session_id));
    assert_eq!(made.disposition, Disposition::Active as i32);

    c.depart(s.clone()).await?;
    wait_until("the session to go", || tm.sessions().is_empty()).await?;
    assert!(tm.intercepts().is_empty(), "{:?}", tm.intercepts());
    // Again, and an id it never knew: both answer Empty.
    c.depart(s.clone()).await?;
    c.depart(SessionInfo {
        session_id: "no-such".into(),
        ..Default::default()
    })
    .await?;
    assert_eq!(tm.calls_of("Depart", &s.session_id).len(), 2);
    let remain = RemainRequest {
        session: Some(s),
        api_key: String::new(),
    };
    assert_eq!(
        c.remain(remain).await.err().map(|e| e.code()),
        Some(Code::NotFound)
    );
    Ok(())
}

#[tokio::test]
async fn a_second_client_conflicts_until_the_first_session_departs() -> anyhow::Result<()> {
    let tm = TrafficManager::start(Options::default())?;
    let mut c = client(&tm).await?;
    let gone = arrive(&mut c, "gone@laptop").await?;
    let colleague = arrive(&mut c, "colleague@desk").await?;
    c.create_intercept(intercept(&gone, "echo")).await?;

    let refused = c
        .create_intercept(intercept(&colleague, "echo"))
        .await?
        .into_inner();
    assert_eq!(refused.disposition, Disposition::AgentError as i32);
    assert_eq!(
        refused.message,
        format!(
            "Conflicts with the currently-served intercept \"{}:echo\"",
            gone.session_id
        )
    );
    // Its own name again is refused outright until it removes the failed one.
    let again = c
        .create_intercept(intercept(&colleague, "echo"))
        .await
        .err();
    assert_eq!(again.map(|e| e.code()), Some(Code::AlreadyExists));
    c.remove_intercept(RemoveInterceptRequest2 {
        session: Some(colleague.clone()),
        name: "echo".into(),
    })
    .await?;

    c.depart(gone).await?;
    wait_until("the departed session's intercept to go", || {
        tm.intercepts().is_empty()
    })
    .await?;
    let served = c
        .create_intercept(intercept(&colleague, "echo"))
        .await?
        .into_inner();
    assert_eq!(
        served.disposition,
        Disposition::Active as i32,
        "{}",
        served.message
    );
    Ok(())
}

#[tokio::test]
async fn sessions_expire_after_the_ttl_unless_they_remain() -> anyhow::Result<()> {
    let tm = TrafficManager::start(Options {
        ttl: Duration::from_secs(60),
        ..Options::default()
    })?;
    let mut c = client(&tm).await?;
    let kept = arrive(&mut c, "kept@laptop").await?;
    let dead = arrive(&mut c, "dead@laptop").await?;
    c.create_intercept(intercept(&dead, "echo")).await?;

    tm.advance(Duration::from_secs(40));
    c.remain(RemainRequest {
        session: Some(kept.clone()),
        api_key: String::new(),
    })
    .await?;
    tm.advance(Duration::from_secs(40));
    // The manager's own sweep, every 5 s, sees the clock moved.
    wait_until("the sweep", || tm.sessions().len() == 1).await?;
    assert_eq!(tm.sessions(), vec![kept.session_id.clone()]);
    assert!(tm.intercepts().is_empty());

    tm.advance(Duration::from_secs(61));
    tm.sweep();
    assert!(tm.sessions().is_empty());
    Ok(())
}

#[tokio::test]
async fn watch_intercepts_lists_all_or_one_sessions_and_ends_with_it() -> anyhow::Result<()> {
    let tm = TrafficManager::start(Options::default())?;
    let mut c = client(&tm).await?;
    let a = arrive(&mut c, "a@laptop").await?;
    let b = arrive(&mut c, "b@laptop").await?;
    c.create_intercept(intercept(&a, "echo")).await?;
    let mut other = intercept(&b, "web");
    if let Some(spec) = other.intercept_spec.as_mut() {
        spec.agent = "web".into();
    }
    c.create_intercept(other).await?;

    let mut all = c
        .watch_intercepts(SessionInfo::default())
        .await?
        .into_inner();
    let first = all.message().await?.map(|s| s.intercepts.len());
    assert_eq!(first, Some(2));

    let mut mine = c.watch_intercepts(a.clone()).await?.into_inner();
    let ids: Vec<String> = mine
        .message()
        .await?
        .map(|s| s.intercepts.into_iter().map(|i| i.id).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![format!("{}:echo", a.session_id)]);
    c.depart(a.clone()).await?;
    // The stream ends when the session does (perhaps after one last snapshot).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while mine.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    })
    .await;
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");

    let unknown = c.watch_intercepts(a).await.err().map(|e| e.code());
    assert_eq!(unknown, Some(Code::NotFound));
    Ok(())
}
