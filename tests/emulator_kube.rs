//! The emulator's fidelity, checked with kube-rs: the client telepolice-agent itself uses.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use testcluster::{Options, TestCluster};

use crate::util::{deployment, live_pods};

pub(crate) fn start() -> TestCluster {
    TestCluster::start(Options::default()).expect("the emulator starts")
}

pub(crate) async fn client(c: &TestCluster) -> Client {
    let kc = kube::config::Kubeconfig::from_yaml(&c.kubeconfig()).expect("a valid kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a client config");
    Client::try_from(config).expect("a client")
}

fn cm(name: &str, team: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"team": team}}, "data": {"k": "v"}}),
    )
    .expect("a config map")
}

#[tokio::test]
async fn a_watcher_with_a_label_selector_follows_changes_across_a_dropped_connection() {
    let cluster = start();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    api.create(&PostParams::default(), &cm("a-1", "a"))
        .await
        .expect("created");
    api.create(&PostParams::default(), &cm("b-1", "b"))
        .await
        .expect("created");
    // Drive the watcher in the background so that its watch request is really open.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default().labels("team=a")).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev
                && tx.send(o.metadata.name.unwrap_or_default()).is_err()
            {
                return;
            }
        }
    });
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an object within 20 s")
            .expect("the watcher goes on")
    };
    assert_eq!(next(&mut rx).await, "a-1");
    assert!(
        cluster.wait_until(Duration::from_secs(20), |c| c
            .audit()
            .iter()
            .any(|e| e.verb == "watch")),
        "the watcher opened its watch"
    );

    // The server drops every connection (the open watch included) and comes back.
    assert!(cluster.set_reachable(false));
    cluster
        .create(
            "configmaps",
            "default",
            &json!({"metadata": {"name": "a-2", "labels": {"team": "a"}}}),
        )
        .expect("created");
    cluster
        .create(
            "configmaps",
            "default",
            &json!({"metadata": {"name": "b-2", "labels": {"team": "b"}}}),
        )
        .expect("created");
    assert!(cluster.set_reachable(true));
    // kube's watcher backs off after the error, watches again from its last version, and
    // the change made meanwhile arrives; the other team's does not.
    assert_eq!(next(&mut rx).await, "a-2");
    cluster
        .create(
            "configmaps",
            "default",
            &json!({"metadata": {"name": "a-3", "labels": {"team": "a"}}}),
        )
        .expect("created");
    assert_eq!(next(&mut rx).await, "a-3");
    driver.abort();
    let audit = cluster.audit();
    let watches: Vec<_> = audit.iter().filter(|e| e.verb == "watch").collect();
    assert!(
        watches.len() >= 2,
        "the watch was re-established: {watches:#?}"
    );
    assert!(
        watches
            .iter()
            .all(|e| e.query.contains("labelSelector=team%3Da"))
    );
}

#[tokio::test]
async fn patch_scale_changes_the_replicas() {
    let cluster = start();
    let api: Api<Deployment> = Api::namespaced(client(&cluster).await, "default");
    cluster
        .create("deployments", "default", &deployment("web", 2))
        .expect("created");
    let scale = api.get_scale("web").await.expect("a scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    let patched = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scaled");
    // As on a real server, a Scale at 0 leaves `spec.replicas` out (omitempty).
    assert_eq!(patched.spec.and_then(|s| s.replicas), None);
    let d = api.get("web").await.expect("still there");
    assert_eq!(d.spec.replicas, Some(0));
    assert!(cluster.wait_until(Duration::from_secs(20), |c| {
        live_pods(c, "default", "web").is_empty()
    }));
}

#[tokio::test]
async fn a_delete_with_a_stale_uid_precondition_is_a_conflict() {
    let cluster = start();
    let api: Api<Deployment> = Api::namespaced(client(&cluster).await, "default");
    let first = cluster
        .create("deployments", "default", &deployment("web", 1))
        .expect("created");
    let stale_uid = first["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.delete("web", &DeleteParams::background())
        .await
        .expect("deleted");
    cluster
        .create("deployments", "default", &deployment("web", 1))
        .expect("re-created");
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(stale_uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    let err = api
        .delete("web", &dp)
        .await
        .expect_err("the uid does not match");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
            assert!(
                s.message
                    .contains("Precondition failed: UID in precondition"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    assert!(
        api.get_opt("web").await.expect("get").is_some(),
        "the new object survived"
    );
}

#[tokio::test]
async fn a_json_patch_whose_test_fails_changes_nothing() {
    let cluster = start();
    let api: Api<Deployment> = Api::namespaced(client(&cluster).await, "default");
    let created = cluster
        .create("deployments", "default", &deployment("web", 3))
        .expect("created");
    let uid = created["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let before = api.get("web").await.expect("there");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": "/spec/replicas", "value": 0},
        {"op": "replace", "path": "/spec/replicas", "value": 5},
    ]))
    .expect("a patch");
    let err = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(patch.clone()),
        )
        .await
        .expect_err("replicas are 3, not 0");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );
    let err = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .expect_err("replicas are 3, not 0");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "{err:?}"
    );
    let after = api.get("web").await.expect("there");
    // The controllers may update the status meanwhile; the spec is what a patch would change.
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(after.spec, before.spec);
    assert_eq!(after.spec.replicas, Some(3));

    // The same pinned patch succeeds once its tests hold.
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .expect("scaled to 0");
    let ok: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": "/spec/replicas", "value": 0},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
    ]))
    .expect("a patch");
    // On the Scale the `test` of replicas 0 cannot pass: the field is absent at 0.
    let on_scale = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(ok.clone()),
        )
        .await;
    assert!(
        matches!(&on_scale, Err(kube::Error::Api(s)) if s.code == 422),
        "{on_scale:?}"
    );
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(ok))
        .await
        .expect("the tests hold on the Deployment");
    assert_eq!(d.spec.replicas, Some(3));
}

#[tokio::test]
async fn a_watch_from_a_forgotten_version_gets_410_and_the_watcher_relists() {
    let cluster = start();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    api.create(&PostParams::default(), &cm("old", "a"))
        .await
        .expect("created");
    let list = api.list(&Default::default()).await.expect("listed");
    let rv = list.metadata.resource_version.clone().unwrap_or_default();

    // A plain watch from a version the server has forgotten ends in a 410.
    api.create(&PostParams::default(), &cm("new", "a"))
        .await
        .expect("created");
    cluster.compact();
    let mut raw = api
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .expect("the watch is accepted")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(20), raw.try_next()).await {
        Ok(Ok(Some(kube::api::WatchEvent::Error(e)))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // kube's watcher, resuming from a forgotten version after a reconnect, relists.
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await {
            Ok(Ok(Some(watcher::Event::InitApply(o)))) => {
                initial.push(o.metadata.name.unwrap_or_default())
            }
            Ok(Ok(Some(watcher::Event::InitDone))) => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["new", "old"]);
    assert!(cluster.set_reachable(false));
    cluster.compact();
    cluster
        .create(
            "configmaps",
            "default",
            &json!({"metadata": {"name": "newest"}}),
        )
        .expect("created");
    cluster.compact();
    assert!(cluster.set_reachable(true));
    let mut relisted = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
            Ok(Some(Ok(watcher::Event::Init))) => relisted.clear(),
            Ok(Some(Ok(watcher::Event::InitApply(o)))) => {
                relisted.push(o.metadata.name.unwrap_or_default())
            }
            Ok(Some(Ok(watcher::Event::InitDone))) => break,
            Ok(Some(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    relisted.sort();
    assert_eq!(relisted, ["new", "newest", "old"]);
    let audit = cluster.audit();
    let expired_watch = audit
        .iter()
        .position(|e| e.verb == "watch" && e.query.contains(&format!("resourceVersion={rv}")));
    assert!(expired_watch.is_some());
    let lists = audit.iter().filter(|e| e.verb == "list").count();
    assert!(
        lists >= 3,
        "the watcher listed again after the 410 ({lists} lists)"
    );
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_a_conflict() {
    let cluster = start();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    let first = api
        .create(&PostParams::default(), &cm("c", "a"))
        .await
        .expect("created");
    let mut changed = first.clone();
    changed.data = Some([("k".to_string(), "new".to_string())].into());
    api.replace("c", &PostParams::default(), &changed)
        .await
        .expect("a fresh version is accepted");
    let err = api
        .replace("c", &PostParams::default(), &first)
        .await
        .expect_err("the version is stale");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let now = api.get("c").await.expect("there");
    assert_eq!(
        now.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("new")
    );
}

#[tokio::test]
async fn delete_collection_takes_a_label_selector() {
    let cluster = start();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    for (n, t) in [("a-1", "a"), ("a-2", "a"), ("b-1", "b")] {
        api.create(&PostParams::default(), &cm(n, t))
            .await
            .expect("created");
    }
    let lp = kube::api::ListParams::default().labels("team=a");
    api.delete_collection(&DeleteParams::default(), &lp)
        .await
        .expect("deleted");
    let left: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["b-1"]);
    assert!(
        cluster
            .audit()
            .iter()
            .any(|e| e.verb == "deletecollection" && e.query.contains("labelSelector=team%3Da"))
    );
}

#[tokio::test]
async fn watches_send_bookmarks_when_asked_and_end_at_their_timeout() {
    let cluster = TestCluster::start(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .expect("the emulator starts");
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    let rv = api
        .list(&Default::default())
        .await
        .expect("listed")
        .metadata
        .resource_version
        .unwrap_or_default();
    let wp = kube::api::WatchParams::default().timeout(2);
    let mut stream = api.watch(&wp, &rv).await.expect("watching").boxed();
    api.create(&PostParams::default(), &cm("during", "a"))
        .await
        .expect("created");
    let (mut added, mut bookmarks) = (0, 0);
    // The stream must end by itself (the timeout); 30 s is only a guard.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.expect("no error") {
            match ev {
                kube::api::WatchEvent::Added(_) => added += 1,
                kube::api::WatchEvent::Bookmark(b) => {
                    assert!(!b.metadata.resource_version.is_empty());
                    bookmarks += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch ended at its timeoutSeconds");
    assert_eq!(added, 1);
    assert!(bookmarks >= 1, "bookmarks were sent");

    let mut quiet = api
        .watch(
            &kube::api::WatchParams::default()
                .timeout(1)
                .disable_bookmarks(),
            &rv,
        )
        .await
        .expect("watching")
        .boxed();
    while let Some(ev) = quiet.try_next().await.expect("no error") {
        assert!(
            matches!(ev, kube::api::WatchEvent::Added(_)),
            "no bookmarks unless asked: {ev:?}"
        );
    }
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_the_initial_state_then_changes() {
    let cluster = start();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    api.create(&PostParams::default(), &cm("before", "a"))
        .await
        .expect("created");
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await {
            Ok(Ok(Some(watcher::Event::InitApply(o)))) => {
                initial.push(o.metadata.name.unwrap_or_default())
            }
            Ok(Ok(Some(watcher::Event::InitDone))) => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["before"]);
    api.create(&PostParams::default(), &cm("after", "a"))
        .await
        .expect("created");
    match tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await {
        Ok(Ok(Some(watcher::Event::Apply(o)))) => {
            assert_eq!(o.metadata.name.as_deref(), Some("after"))
        }
        other => panic!("unexpected {other:?}"),
    }
    let audit = cluster.audit();
    assert!(
        audit.iter().all(|e| e.verb != "list"),
        "no list: the watch streamed the state"
    );
    assert!(
        audit
            .iter()
            .any(|e| e.verb == "watch" && e.query.contains("sendInitialEvents=true"))
    );
}

#[tokio::test]
async fn unreachable_after_carries_out_the_request_and_drops_its_answer() {
    let cluster = start();
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    api.create(&PostParams::default(), &cm("doomed", "a"))
        .await
        .expect("created");
    cluster.unreachable_after("delete", "configmaps");
    let answer = api.delete("doomed", &DeleteParams::default()).await;
    assert!(
        !matches!(answer, Ok(_) | Err(kube::Error::Api(_))),
        "the connection drops without an answer: {answer:?}"
    );
    assert!(!cluster.is_reachable());
    assert!(
        cluster.get("configmaps", "default", "doomed").is_none(),
        "the delete was carried out"
    );
    let deletes: Vec<u16> = cluster
        .audit()
        .iter()
        .filter(|e| e.verb == "delete")
        .map(|e| e.status)
        .collect();
    assert_eq!(deletes, [200], "audited with the status it would have had");
    assert!(cluster.set_reachable(true));
    // The rule was used up: the next delete is answered.
    api.create(&PostParams::default(), &cm("next", "a"))
        .await
        .expect("created once the server is back");
    api.delete("next", &DeleteParams::default())
        .await
        .expect("answered");
    assert!(cluster.is_reachable());
}
