//! Test support: a cluster with its own kubeconfig and kubectl cache in a temp dir, and
//! helpers to run `kubectl` against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use testcluster::{Options, TestCluster};

/// Whether the tests run in CI, where missing tools are failures rather than skips.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The `kubectl` to use, or `None` (outside CI) with the reason printed. In CI a missing
/// kubectl fails the test.
pub fn kubectl_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .chain([PathBuf::from("/usr/bin/kubectl")])
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None if in_ci() => {
            panic!("kubectl is required in CI but is neither on PATH nor at /usr/bin/kubectl")
        }
        None => {
            eprintln!("SKIPPED: kubectl not found on PATH or at /usr/bin/kubectl");
            None
        }
    }
}

/// Whether this runs as root with every file of `needed` present (and `extra` holds, with
/// its own words for the message). Outside CI a miss makes the caller skip, with a line
/// saying what `test` needs; in CI it fails the test, naming `install`.
pub fn root_with(test: &str, needed: &[&str], extra: (bool, &str), install: &str) -> bool {
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if missing.is_empty() && root && extra.0 {
        return true;
    }
    let why = format!(
        "{test} needs root and {needed:?}; missing: {missing:?}, root: {root}{}",
        if extra.0 {
            String::new()
        } else {
            format!(", {}", extra.1)
        }
    );
    assert!(!in_ci(), "{why} ({install})");
    eprintln!("SKIPPED: {why}");
    false
}

/// Whether `program --version` runs. Outside CI a missing tool makes the caller skip, with
/// a line saying so; in CI (which installs every tool the tests use) it fails the test.
pub fn tool_available(program: &str, needed_for: &str, debian_package: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !in_ci(),
            "{program} is required in CI for {needed_for} (Debian: apt-get install {debian_package})"
        );
        eprintln!("SKIPPED: {program} not found (Debian: apt-get install {debian_package})");
    }
    ok
}

/// Like [`kubectl_binary`], for `python3` (the Telepresence stand-in is a Python script).
pub fn python3_available() -> bool {
    tool_available("python3", "the Telepresence stand-in", "python3")
}

/// A running emulator with a kubeconfig and a kubectl cache of its own.
pub struct Env {
    pub cluster: TestCluster,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

impl Env {
    /// An emulator with default options, or `None` when kubectl is missing outside CI.
    pub fn new() -> Option<Self> {
        Self::with(Options::default())
    }

    /// An emulator with `opts`.
    pub fn with(opts: Options) -> Option<Self> {
        let kubectl = kubectl_binary()?;
        Some(Self::without_kubectl_check(opts, kubectl))
    }

    /// An emulator for tests that do not run kubectl.
    pub fn without_kubectl_check(opts: Options, kubectl: PathBuf) -> Self {
        let cluster = TestCluster::start(opts).expect("the emulator starts");
        let dir = tempfile::tempdir().expect("a temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        cluster
            .write_kubeconfig(&kubeconfig)
            .expect("the kubeconfig is written");
        std::fs::create_dir_all(dir.path().join("home")).expect("a home dir");
        Self {
            cluster,
            dir,
            kubeconfig,
            kubectl,
        }
    }

    /// The environment every child process gets: this cluster's kubeconfig, a private
    /// kubectl cache and home, and the mark that keeps this test's sessions to its own
    /// agents (`TELEPOLICE_TEST_ENV`, see `agent_envs`).
    pub fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("KUBECONFIG", self.kubeconfig.clone()),
            ("KUBECACHEDIR", self.dir.path().join("kubecache")),
            ("HOME", self.dir.path().join("home")),
            ("TELEPOLICE_TEST_ENV", self.dir.path().to_path_buf()),
        ]
    }

    /// A `kubectl` command for this cluster.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.args(args);
        for (k, v) in self.envs() {
            c.env(k, v);
        }
        c
    }

    /// Runs kubectl and returns its output whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("kubectl runs")
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .expect("kubectl reads stdin");
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Runs kubectl, fails the test (with kubectl's stderr) if it fails, returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(self.kubectl(args), args)
    }

    /// Like [`Self::kubectl_ok`] with stdin.
    pub fn kubectl_stdin_ok(&self, args: &[&str], input: &str) -> String {
        ok(self.kubectl_stdin(args, input), args)
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl prints JSON")
    }

    /// Creates a Deployment `name` in `ns` with `replicas` and label `app=<name>`.
    pub fn deployment(&self, ns: &str, name: &str, replicas: i64) -> Value {
        self.cluster
            .create("deployments", ns, &deployment(name, replicas))
            .expect("the deployment is created")
    }

    /// Waits (up to 20 s) until `check` holds, failing the test with `what` otherwise.
    pub fn wait(&self, what: &str, check: impl FnMut(&TestCluster) -> bool) {
        assert!(
            self.cluster.wait_until(Duration::from_secs(20), check),
            "timed out waiting until {what}"
        );
    }

    /// Path of a file in the test's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Deployment manifest with one container and label `app=<name>`.
pub fn deployment(name: &str, replicas: i64) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": format!("example/{name}:1"), "ports": [{"containerPort": 8080}]}]},
            },
        },
    })
}

/// Pods of `ns` whose label `app` is `app`, not being deleted.
pub fn live_pods(c: &TestCluster, ns: &str, app: &str) -> Vec<Value> {
    c.list("pods", Some(ns))
        .into_iter()
        .filter(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str) == Some(app))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

/// A field of a JSON value as text (`""` when absent).
pub fn text(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Where cargo put the example binaries of this build (`target/<profile>/examples`).
pub fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/tests-<hash>
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("examples"))
        .expect("the test binary lives in target/<profile>/deps")
}

/// Stops a child this test started: SIGTERM, up to 10 s to exit, then SIGKILL; reaped.
pub fn stop_child(mut c: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

pub const TRAFFIC_MANAGER_POD: &str = "traffic-manager-6c4b8f9d7-x2x9z";

/// What `telepresence helm install` leaves in `namespace`, as far as reaching the manager
/// goes: its Service (`api` port, named target port) and a pod its selector picks, whose
/// `api` port the emulator forwards to the stand-in. Returns once the pod runs.
pub fn install_traffic_manager(
    c: &TestCluster,
    namespace: &str,
    tm: &trafficmanager::TrafficManager,
) -> anyhow::Result<()> {
    if c.get("namespaces", "", namespace).is_none() {
        c.create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let labels = json!({"app": "traffic-manager", "telepresence": "manager"});
    c.create(
        "services",
        namespace,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "traffic-manager", "namespace": namespace, "labels": labels},
            "spec": {"clusterIP": "None", "selector": labels,
                     "ports": [{"name": "api", "port": 8081, "targetPort": "api"}]},
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.create(
        "pods",
        namespace,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": TRAFFIC_MANAGER_POD, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "traffic-manager", "image": "ghcr.io/telepresenceio/tel2:2.20.2",
                     "ports": [{"name": "api", "containerPort": 8081}, {"name": "https", "containerPort": 8443}]}]},
        }),
    ).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.forward(namespace, TRAFFIC_MANAGER_POD, 8081, tm.addr());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let phase = c
            .get("pods", namespace, TRAFFIC_MANAGER_POD)
            .map(|p| p["status"]["phase"].clone());
        if phase == Some(json!("Running")) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the manager pod never ran: {phase:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
