//! The shapes 2.x writes, as Go's `encoding/json` writes them (field order and `omitempty`
//! as in the structs of v2.6.8, v2.17.0 and v2.20.2).

use super::*;

const ID: &str = "3d6a8c06-1f55-4b4e-9b1c-2d2fd1f0a7e2";

#[test]
fn the_daemon_id_is_the_name_or_context_and_namespace_made_safe() {
    let cases = [
        (None, "kind-dev", "default", false, Some("kind-dev-default")),
        (
            Some(""),
            "kind-dev",
            "default",
            false,
            Some("kind-dev-default"),
        ),
        (Some("mine"), "kind-dev", "default", false, Some("mine")),
        (
            None,
            "kind-dev",
            "default",
            true,
            Some("kind-dev-default-cn"),
        ),
        (None, "", "team", false, Some("in-cluster-team")),
        // An EKS context: ARN punctuation becomes `_`.
        (
            None,
            "arn:aws:eks:eu-west-1:123:cluster/dev",
            "ns",
            false,
            Some("arn_aws_eks_eu-west-1_123_cluster_dev-ns"),
        ),
        // A first character that is not a letter or digit becomes `a`; later ones `_`,
        // one per character, whatever its UTF-8 length.
        (Some("_x.y-zé"), "", "ns", false, Some("ax.y-z_")),
        (None, "dev", "", false, None),
    ];
    for (name, context, namespace, containerized, want) in cases {
        assert_eq!(
            daemon_id(name, context, namespace, containerized).as_deref(),
            want,
            "{name:?} {context:?} {namespace:?} {containerized}"
        );
    }
}

#[test]
fn a_daemon_info_reads_as_written_and_names_its_id() {
    // v2.20.2 `daemon.Info`, every field omitempty.
    let written = br#"{"name":"kind-dev-default","kube_context":"kind-dev","namespace":"default","hostname":"laptop"}"#;
    let info = parse_daemon_info(written).expect("parses");
    assert_eq!(info.kube_context, "kind-dev");
    assert!(!info.in_docker);
    assert_eq!(info.daemon_id().as_deref(), Some("kind-dev-default"));
    // Extra fields (options, exposed_ports) and a containerized daemon.
    let docker = br#"{"options":{"a":"b"},"in_docker":true,"kube_context":"c","namespace":"n","daemon_port":50123,"exposed_ports":["8080"]}"#;
    let info = parse_daemon_info(docker).expect("parses");
    assert_eq!(
        (info.daemon_port, info.daemon_id().as_deref()),
        (50123, Some("c-n-cn"))
    );
    assert!(matches!(
        parse_daemon_info(b"{not json"),
        Err(CacheError::Malformed(_))
    ));
}

#[test]
fn both_shapes_of_the_session_cache_give_the_session() {
    // 2.16+ (`sessions/<id>.json`, v2.17.0 and v2.20.2 `SavedSession`).
    let daemon = format!(
        r#"{{"kubeContext":"kind-dev","namespace":"default","session":{{"session_id":"{ID}","cluster_id":"9b2c","install_id":"e1f0"}}}}"#
    );
    let s = parse_saved_session(daemon.as_bytes()).expect("parses");
    assert_eq!(
        s.scope,
        Scope::Daemon {
            context: "kind-dev".into(),
            namespace: "default".into()
        }
    );
    assert_eq!(s.session.session_id, ID);
    assert_eq!(s.session.install_id.as_deref(), Some("e1f0"));
    // 2.6.7-2.15 (`sessions.json`, v2.6.8 `SavedSession`: `Host` has no JSON tag).
    let host = format!(r#"{{"Host":"https://127.0.0.1:6443","session":{{"session_id":"{ID}"}}}}"#);
    let s = parse_saved_session(host.as_bytes()).expect("parses");
    assert_eq!(s.scope, Scope::Host("https://127.0.0.1:6443".into()));
    assert_eq!(
        (s.session.cluster_id.as_str(), s.session.install_id),
        ("", None)
    );
}

#[test]
fn a_cache_without_a_session_id_or_a_scope_is_no_session() {
    let no_session: [&[u8]; 2] = [
        br#"{"kubeContext":"c","namespace":"n","session":null}"#,
        br#"{"kubeContext":"c","namespace":"n","session":{}}"#,
    ];
    for bytes in no_session {
        assert_eq!(parse_saved_session(bytes), Err(CacheError::NoSession));
    }
    let malformed: [&[u8]; 3] = [br#"{"session":{"session_id":"x"}}"#, b"[]", b"{"];
    for bytes in malformed {
        assert!(
            matches!(parse_saved_session(bytes), Err(CacheError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn the_cache_dir_follows_xdg_then_home_and_macos_has_its_own() {
    let home = Path::new("/home/dev");
    assert_eq!(
        cache_dir(Some("/x/cache"), Some(home), false),
        Some(PathBuf::from("/x/cache/telepresence"))
    );
    assert_eq!(
        cache_dir(Some(""), Some(home), false),
        Some(PathBuf::from("/home/dev/.cache/telepresence"))
    );
    assert_eq!(
        cache_dir(None, Some(home), false),
        Some(PathBuf::from("/home/dev/.cache/telepresence"))
    );
    assert_eq!(
        cache_dir(Some("/x/cache"), Some(home), true),
        Some(PathBuf::from("/home/dev/Library/Caches/telepresence"))
    );
    assert_eq!(cache_dir(None, None, false), None);
    assert_eq!(DAEMON_INFO_STALE_AFTER, Duration::from_millis(5600));
}

#[test]
fn the_manager_namespace_comes_from_status_json() {
    let out = br#"{"user_daemon":{"running":true,"name":"dev-default","manager_namespace":"tel-mgr","intercepts":[]},"root_daemon":{"running":true},"traffic_manager":{"name":"traffic-manager"}}"#;
    assert_eq!(status_manager_namespace(out).as_deref(), Some("tel-mgr"));
    // Not connected: three empty objects.
    assert_eq!(
        status_manager_namespace(br#"{"user_daemon":{},"root_daemon":{},"traffic_manager":{}}"#),
        None
    );
    assert_eq!(
        status_manager_namespace(b"telepresence status: error: ..."),
        None
    );
}
