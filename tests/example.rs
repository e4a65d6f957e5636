//! The standalone emulator (`cargo run --example testcluster`), driven as a script would.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::util::{examples_dir, kubectl_binary};

#[test]
fn the_example_serves_and_takes_fault_controls_on_stdin() {
    let Some(kubectl) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Command::new(examples_dir().join("testcluster"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example starts (cargo test builds examples)");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut next = move || lines.next().expect("a line").expect("readable");
    let ready = next();
    assert!(ready.starts_with("ready https://127.0.0.1:"), "{ready}");

    let kubectl_run = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBECACHEDIR", dir.path().join("cache"))
            .output()
            .expect("kubectl runs")
    };
    let ns = kubectl_run(&["get", "namespace", "default", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&ns.stdout).trim(),
        "namespace/default"
    );
    let config =
        String::from_utf8_lossy(&kubectl_run(&["config", "current-context"]).stdout).into_owned();
    assert_eq!(config.trim(), "testcluster");

    let mut say = |line: &str| {
        writeln!(stdin, "{line}").expect("the example reads stdin");
        stdin.flush().expect("flushed");
        next()
    };
    assert_eq!(say("unreachable"), "ok");
    let refused = kubectl_run(&["get", "namespaces", "--request-timeout=5s"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"));
    assert_eq!(say("reachable"), "ok");
    assert_eq!(say("fail 403 get namespaces"), "ok");
    let forbidden = kubectl_run(&["get", "namespace", "default"]);
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("forbidden"));
    assert_eq!(say("latency 10"), "ok");
    assert_eq!(say("clear"), "ok");
    assert!(
        kubectl_run(&["get", "namespace", "default"])
            .status
            .success()
    );
    assert!(say("fail abc get pods").starts_with("error: "));
    assert!(say("nonsense").starts_with("error: unknown command"));

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let status = child.wait().expect("the example exits");
    assert!(status.success(), "{status}");
}
