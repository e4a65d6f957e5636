//! The numbers in CONTRIBUTING.md's "Performance" (the README has a summary), measured
//! against the API emulator with the release-built agent binary and the Telepresence
//! stand-in. Prints a Markdown table; asserts nothing about timing.
//!
//! ```sh
//! cargo bench --bench agent                 # every section
//! cargo bench --bench agent -- discovery    # only some: sessions, shim, recovery, telepresence2, idle, discovery, sweeper
//! ```
//!
//! Sections:
//! - `sessions`: process start -> journal says `Recorded` (or later) with the original's
//!   replicas; then, with `grace_period_secs = 0`, `kill -9` -> the emulator's Deployment has
//!   its replicas back. `BENCH_SESSIONS` iterations (default 15).
//! - `shim`: the first of those again, with `python3` a pyenv-style shell shim that takes
//!   100 ms before it execs the interpreter (`BENCH_SESSIONS` iterations).
//! - `recovery`: a followed session is SIGKILLed while the emulator is unreachable; once the
//!   agent has failed a repair attempt, and after a further 0-5 s so that the API server
//!   comes back at a different point of the agent's retry backoff each time, the emulator is
//!   made reachable -> the Deployment has its replicas back. `BENCH_RECOVERIES` iterations
//!   (default 10).
//! - `telepresence2`: a Telepresence 2 connector (the `telepresence2` example) started ->
//!   the journal has its traffic-manager session id; then, with `telepresence2_grace_secs =
//!   0`, `kill -9` -> the traffic-manager stand-in no longer has the session (the agent read
//!   the session cache, went through the emulator's port-forward and called `Depart`).
//!   `BENCH_SESSIONS` iterations.
//! - `idle`: the daemon with no session for `BENCH_IDLE_SECS` (default 60): CPU time and RSS.
//! - `discovery`: with 1,000 extra `sleep` processes running, `Discovery::poll` after one
//!   new (non-Telepresence) process, `BENCH_POLLS` times (default 50), and `scan_all`.
//! - `sweeper`: `telepolice-agent sweep` in a cluster of `BENCH_SWEEP_PODS` pods (default
//!   10,000), `BENCH_SWEEP_SESSIONS` of them (default 1,000) recorded 0.x proxies, each with
//!   its facts and a heartbeat Lease that this bench renews every 10 s, as laptops would.
//!   Once the sweeper has listed everything: over `BENCH_SWEEP_IDLE_SECS` (default 60) its
//!   requests (by verb and resource), CPU and RSS; then five heartbeats stop at once and,
//!   with a grace of `BENCH_SWEEP_GRACE_SECS` (default 20), how long past the grace each
//!   session's original is back at its replicas.
//!
//! Everything talks to 127.0.0.1 only, and only processes started here are ended, by pid.

// A benchmark binary reports on stdout.
#![allow(clippy::print_stdout)]

// The integration tests' support code; the parts only their tests use are unused here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/util.rs"]
mod util;

#[allow(dead_code, unused_imports)]
#[path = "../tests/standin.rs"]
mod standin;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use telepolice_agent::platform::{self, ProcessId, Signal};
use telepolice_agent::signals::discovery::Discovery;

use standin::{SCRIPT, helper_children};
use util::{Env, examples_dir, live_pods, text};

const AGENT: &str = env!("CARGO_BIN_EXE_telepolice-agent");
/// How long any single wait may take before the bench gives up on that step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |s: &str| filters.is_empty() || filters.iter().any(|f| s.contains(f.as_str()));
    let began = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failed = false;

    // Each section: its rows and notes, or a failure that fails the run (the others still run).
    type Section = Box<dyn FnOnce() -> Result<(Vec<Row>, Vec<String>)>>;
    let sections: [(&str, Section); 7] = [
        (
            "sessions",
            Box::new(|| bench_sessions(env_usize("BENCH_SESSIONS", 15))),
        ),
        (
            "shim",
            Box::new(|| bench_shim(env_usize("BENCH_SESSIONS", 15))),
        ),
        (
            "recovery",
            Box::new(|| bench_recovery(env_usize("BENCH_RECOVERIES", 10))),
        ),
        (
            "telepresence2",
            Box::new(|| bench_tel2(env_usize("BENCH_SESSIONS", 15))),
        ),
        (
            "idle",
            Box::new(|| bench_idle(env_f64("BENCH_IDLE_SECS", 60.0)).map(|n| (Vec::new(), n))),
        ),
        (
            "discovery",
            Box::new(|| bench_discovery(env_usize("BENCH_POLLS", 50))),
        ),
        (
            "sweeper",
            Box::new(|| {
                bench_sweeper(
                    env_usize("BENCH_SWEEP_PODS", 10_000),
                    env_usize("BENCH_SWEEP_SESSIONS", 1_000),
                    env_f64("BENCH_SWEEP_IDLE_SECS", 60.0),
                    env_f64("BENCH_SWEEP_GRACE_SECS", 20.0),
                )
            }),
        ),
    ];
    for (name, run) in sections {
        if !wanted(name) {
            continue;
        }
        match run() {
            Ok((r, n)) => {
                rows.extend(r);
                notes.extend(n);
            }
            Err(e) => {
                failed = true;
                eprintln!("{name}: FAILED: {e:#}");
            }
        }
    }

    println!();
    println!("| measurement | median | p90 | n |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what,
            ms(r.median),
            ms(r.p90),
            r.n
        );
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
    println!();
    println!(
        "({} CPUs; agent binary {AGENT}; bench took {:.0} s)",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        began.elapsed().as_secs_f64()
    );
    if failed {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------- statistics

struct Row {
    what: String,
    median: Duration,
    p90: Duration,
    n: usize,
}

fn row(what: &str, mut samples: Vec<Duration>) -> Row {
    samples.sort_unstable();
    let n = samples.len();
    let median = match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => samples[n / 2],
        _ => (samples[n / 2 - 1] + samples[n / 2]) / 2,
    };
    // Nearest rank.
    let p90 = match n {
        0 => Duration::ZERO,
        _ => samples[(n * 9).div_ceil(10) - 1],
    };
    Row {
        what: what.to_string(),
        median,
        p90,
        n,
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

/// Polls `check` every `every` until it gives a value or [`STEP_TIMEOUT`] passes.
fn poll_until<T>(what: &str, every: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {STEP_TIMEOUT:?} waiting until {what}");
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------- processes

/// `utime + stime` (clock ticks) of `pid`.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("a /proc/<pid>/stat line")?;
    // Fields from 3 (state) on: utime and stime are fields 14 and 15.
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Nanoseconds on CPU of the threads of `pid` (`/proc/<pid>/task/*/schedstat`, first field);
/// threads that have exited are not counted.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// A `Vm*:` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

fn all_pids() -> HashSet<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Children started here; killed (SIGKILL, by pid) and reaped on drop.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------- the agent

/// A running `telepolice-agent run` with dirs of its own under `root`.
struct Agent {
    child: Option<Child>,
    state_dir: PathBuf,
    stderr: PathBuf,
}

impl Agent {
    fn start(
        root: &Path,
        program: &Path,
        extra_config: &str,
        env: &[(&str, PathBuf)],
    ) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "telepresence_programs = [{:?}]\n{extra_config}\n",
                program.display().to_string()
            ),
        )?;
        let state_dir = root.join("state");
        let stderr = root.join("agent.err");
        let mut cmd = Command::new(AGENT);
        cmd.arg("run")
            .env("TELEPOLICE_CONFIG", &config)
            .env("TELEPOLICE_STATE_DIR", &state_dir)
            .env("TELEPOLICE_RUNTIME_DIR", root.join("run"))
            .env("TELEPOLICE_LOG_DIR", root.join("logs"))
            .env_remove("TELEPOLICE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let agent = Self {
            child: Some(cmd.spawn().context("starting the agent")?),
            state_dir,
            stderr,
        };
        poll_until("the agent is ready", Duration::from_millis(10), || {
            agent
                .log()
                .contains("watching Telepresence programs")
                .then_some(())
        })
        .with_context(|| agent.log())?;
        Ok(agent)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn journal_names(&self) -> HashSet<String> {
        std::fs::read_dir(self.state_dir.join("sessions"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The journal record of the process `pid`, not one of `known`.
    fn record(&self, pid: u32, known: &HashSet<String>) -> Option<Value> {
        let prefix = format!("{pid}-");
        let dir = std::fs::read_dir(self.state_dir.join("sessions")).ok()?;
        for e in dir.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".json") && !known.contains(&name) {
                return serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok();
            }
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            util::stop_child(c);
        }
    }
}

// ---------------------------------------------------------------------------- the stand-in

/// The `telepresence_helper` example the stand-in runs for its helpers; built if missing.
fn helper_binary() -> Result<PathBuf> {
    example_binary("telepresence_helper")
}

/// The example `name`, built if missing.
fn example_binary(name: &str) -> Result<PathBuf> {
    let dir = examples_dir();
    let helper = dir.join(name);
    if helper.is_file() {
        return Ok(helper);
    }
    // target/<profile dir>/examples: build the example into the same dir, with the profile
    // `cargo bench` uses for it (`bench`, in `release`), so its dependencies are reused.
    let profile = match dir
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
    {
        Some("debug") | None => "dev".to_string(),
        Some("release") => "bench".to_string(),
        Some(other) => other.to_string(),
    };
    eprintln!("building the {name} example ({profile})...");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--profile", &profile, "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // What cargo set for running this bench, not what the user set: build scripts that
    // rerun when these change (ring's) would otherwise be rebuilt here and again by the
    // next `cargo bench`.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "OUT_DIR"
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            )
        {
            cmd.env_remove(&*k);
        }
    }
    let ok = cmd.status().context("running cargo")?.success();
    if !ok || !helper.is_file() {
        bail!("could not build {}", helper.display());
    }
    Ok(helper)
}

/// One stand-in session, with the helpers it started (stopped here, by pid and start time,
/// if the agent has not stopped them).
struct Standin {
    child: Child,
    reaped: bool,
    work: PathBuf,
    helpers: Vec<ProcessId>,
}

impl Standin {
    fn spawn(
        env: &Env,
        program: &Path,
        helper: &Path,
        work: &Path,
        tmp: &Path,
        shims: Option<&Path>,
    ) -> Result<Self> {
        let mut cmd = Command::new(program);
        if let Some(dir) = shims {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.to_path_buf()];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs)?);
        }
        cmd.args(["--swap-deployment", "app"])
            .current_dir(work)
            .env("TMPDIR", tmp)
            .env("TELEPRESENCE_STANDIN_VERSION", "0.109")
            .env("TELEPRESENCE_STANDIN_HELPER", helper)
            .env("TELEPRESENCE_STANDIN_KUBECTL", &env.kubectl)
            .env_remove("TELEPRESENCE_USE_DEPLOYMENT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("standin.err"))?);
        for (k, v) in env.envs() {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting the stand-in")?;
        Ok(Self {
            child,
            reaped: false,
            work: work.to_path_buf(),
            helpers: Vec::new(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn diagnostics(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.work.join(n)).unwrap_or_default();
        format!(
            "--- stand-in stderr\n{}\n--- telepresence.log\n{}",
            read("standin.err"),
            read("telepresence.log")
        )
    }

    /// Waits until setup is complete and its four helpers run; remembers them.
    fn wait_ready(&mut self) -> Result<()> {
        let pid = self.pid();
        let work = self.work.clone();
        let kids = poll_until(
            "the stand-in's setup completes",
            Duration::from_millis(20),
            || {
                let log =
                    std::fs::read_to_string(work.join("telepresence.log")).unwrap_or_default();
                let kids = helper_children(pid);
                (log.contains("Setup complete") && kids.len() >= 4).then_some(kids)
            },
        )
        .with_context(|| self.diagnostics())?;
        self.helpers = kids
            .into_iter()
            .filter_map(|(p, _)| platform::process_info(p).ok().map(|i| i.id))
            .collect();
        Ok(())
    }

    /// SIGKILL, then reap it as a shell would.
    fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.reaped = true;
        Ok(())
    }

    fn helpers_alive(&self) -> usize {
        self.helpers
            .iter()
            .filter(|h| platform::is_alive(**h))
            .count()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if !self.reaped {
            let kids: Vec<ProcessId> = helper_children(self.pid())
                .into_iter()
                .filter_map(|(p, _)| platform::process_info(p).ok().map(|i| i.id))
                .collect();
            self.helpers.extend(kids);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for h in &self.helpers {
            // The pidfd-based signal never reaches a process that reused the pid.
            let _ = platform::signal(*h, Signal::Kill);
        }
    }
}

// ---------------------------------------------------------------------------- sections

/// One agent (`grace_period_secs = 0`, default scan interval: the event-driven path is what
/// is measured) following stand-in 0.109 `--swap-deployment app` sessions on an emulator
/// whose `app` Deployment has 2 replicas.
struct SwapRig {
    // Declared first, so dropped first: the agent stops before the emulator and the temp
    // dir holding its state go.
    agent: Agent,
    env: Env,
    program: PathBuf,
    helper: PathBuf,
    tmp: PathBuf,
    /// A dir put first on the sessions' PATH (a pyenv-style `python3` shim), if any.
    shims: Option<PathBuf>,
}

impl SwapRig {
    fn start() -> Result<Self> {
        let Some(env) = standin::setup() else {
            bail!("python3 or kubectl is missing");
        };
        let helper = helper_binary()?;
        let root = env.path("agent");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let bin = env.path("bin");
        std::fs::create_dir_all(&bin)?;
        let program = bin.join("telepresence");
        std::fs::copy(SCRIPT, &program)?;
        let agent = Agent::start(&root, &program, "grace_period_secs = 0", &[])?;
        Ok(Self {
            agent,
            env,
            program,
            helper,
            tmp,
            shims: None,
        })
    }

    /// A work dir for session number `i`.
    fn work_dir(&self, i: usize) -> Result<PathBuf> {
        let work = self.env.path(&format!("work-{i}"));
        std::fs::create_dir_all(&work)?;
        Ok(work)
    }

    /// Starts a session in `work`.
    fn spawn(&self, work: &Path) -> Result<Standin> {
        Standin::spawn(
            &self.env,
            &self.program,
            &self.helper,
            work,
            &self.tmp,
            self.shims.as_deref(),
        )
    }

    /// Waits until `s` runs its helpers, its record (not one of `known`) is `Active` and the
    /// original is scaled to 0: a session worth killing.
    fn wait_active(&self, s: &mut Standin, known: &HashSet<String>) -> Result<()> {
        let pid = s.pid();
        s.wait_ready()?;
        poll_until("the session is Active", Duration::from_millis(10), || {
            self.agent
                .record(pid, known)
                .filter(|r| r["state"] == "Active")
        })
        .with_context(|| self.agent.log())?;
        poll_until(
            "the original is scaled to 0",
            Duration::from_millis(10),
            || (replicas(&self.env) == Some(0)).then_some(()),
        )?;
        Ok(())
    }

    /// After the original is back: lets the repair of the killed `s` finish, so the next
    /// round starts from a clean cluster. Returns the session's final state.
    fn wait_settled(&self, s: Standin, known: &HashSet<String>) -> Result<String> {
        let pid = s.pid();
        let rec = poll_until(
            "the session reaches a final state",
            Duration::from_millis(20),
            || {
                self.agent.record(pid, known).filter(|r| {
                    matches!(
                        r["state"].as_str(),
                        Some("Cleaned" | "Ended" | "NeedsAttention")
                    )
                })
            },
        )
        .with_context(|| self.agent.log())?;
        let _ = poll_until("the helpers are stopped", Duration::from_millis(20), || {
            (s.helpers_alive() == 0).then_some(())
        });
        drop(s);
        poll_until(
            "the proxy is gone and two app pods run",
            Duration::from_millis(20),
            || {
                let proxies = self
                    .env
                    .cluster
                    .list("pods", Some("default"))
                    .iter()
                    .any(|p| p.pointer("/metadata/labels/telepresence").is_some());
                (!proxies && live_pods(&self.env.cluster, "default", "app").len() == 2)
                    .then_some(())
            },
        )?;
        Ok(rec["state"].as_str().unwrap_or("?").to_string())
    }
}

fn join_counts(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pyenv-style `python3` shim in a dir of its own: a bash script that takes as long as
/// pyenv's (about 100 ms here, measured) to choose an interpreter, then execs it. With it
/// first on PATH, a `#!/usr/bin/env python3` Telepresence runs as `env python3 ...`, then
/// `bash .../shims/python3 ...`, then the interpreter, all in one process.
fn pyenv_shim(root: &Path) -> Result<PathBuf> {
    let python = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .context("python3 is not on PATH")?;
    let dir = root.join("shims");
    std::fs::create_dir_all(&dir)?;
    let shim = dir.join("python3");
    std::fs::write(
        &shim,
        format!(
            "#!/usr/bin/env bash\n# A pyenv-style shim: choosing the interpreter takes about 100 ms.\nsleep 0.1\nexec {} \"$@\"\n",
            python.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// The sessions section again, with `python3` a pyenv-style shell shim: start -> recorded.
fn bench_shim(n: usize) -> Result<(Vec<Row>, Vec<String>)> {
    let mut rig = SwapRig::start()?;
    rig.shims = Some(pyenv_shim(&rig.env.path("agent"))?);
    let (mut rows, mut notes) = run_sessions(&rig, n)?;
    rows.truncate(1);
    if let Some(r) = rows.first_mut() {
        r.what =
            "process start -> session recorded, `python3` a pyenv-style shell shim (100 ms)".into();
    }
    notes = notes
        .into_iter()
        .map(|n| n.replacen("Sessions:", "Shim sessions:", 1))
        .collect();
    Ok((rows, notes))
}

/// Sections 1 and 2: one agent, `n` stand-in sessions, each SIGKILLed once Active.
fn bench_sessions(n: usize) -> Result<(Vec<Row>, Vec<String>)> {
    run_sessions(&SwapRig::start()?, n)
}

fn run_sessions(rig: &SwapRig, n: usize) -> Result<(Vec<Row>, Vec<String>)> {
    let (env, agent) = (&rig.env, &rig.agent);

    let mut recorded = Vec::new();
    let mut first_writes = Vec::new();
    let mut scale_downs = Vec::new();
    let mut restored = Vec::new();
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let mut finals: BTreeMap<String, usize> = BTreeMap::new();
    let ms1 = Duration::from_millis(1);
    for i in 0..n {
        let work = rig.work_dir(i)?;
        let known = agent.journal_names();

        // 1. process start -> Recorded with the original's replicas.
        let t0 = Instant::now();
        let mut s = rig.spawn(&work)?;
        let pid = s.pid();
        // Also noted on the way, for context: the first journal write, and when the stand-in
        // scaled the original to 0 (the race the agent must win).
        let (mut first_write, mut scaled) = (None, None);
        let rec = poll_until("the session is recorded", ms1, || {
            if scaled.is_none() && replicas(env) == Some(0) {
                scaled = Some(t0.elapsed());
            }
            let r = agent.record(pid, &known)?;
            let at = t0.elapsed();
            first_write.get_or_insert(at);
            let done = r["state"].as_str().is_some_and(|st| st != "Seen")
                && r["original"]["replicas"].is_i64();
            done.then_some((r, at))
        })
        .with_context(|| format!("{}\n--- agent\n{}", s.diagnostics(), agent.log()))?;
        let (rec, dt) = rec;
        recorded.push(dt);
        if let Some(w) = first_write {
            first_writes.push(w);
        }
        let scaled = match scaled {
            Some(d) => d,
            None => poll_until("the original is scaled to 0", ms1, || {
                (replicas(env) == Some(0)).then(|| t0.elapsed())
            })?,
        };
        scale_downs.push(scaled);
        let source = rec["original"]["source"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        *sources.entry(source.clone()).or_default() += 1;

        // 2. kill -9 -> original restored.
        rig.wait_active(&mut s, &known)?;
        let t1 = Instant::now();
        s.kill9()?;
        poll_until("the original's replicas are back", ms1, || {
            (replicas(env) == Some(2)).then_some(())
        })
        .with_context(|| agent.log())?;
        let dr = t1.elapsed();
        restored.push(dr);

        let state = rig.wait_settled(s, &known)?;
        *finals.entry(state.clone()).or_default() += 1;
        eprintln!(
            "session {:>2}/{n}: recorded after {} (source {source}; scaled to 0 at {}), restored {} after kill -9, {state}",
            i + 1,
            ms(dt),
            ms(scaled),
            ms(dr)
        );
    }
    let notes = vec![format!(
        "Sessions: stand-in 0.109 `--swap-deployment app` (2 replicas), grace_period_secs = 0; \
         original replicas source: {}; final states: {}.",
        join_counts(&sources),
        join_counts(&finals)
    )];
    Ok((
        vec![
            row(
                "process start -> session recorded with original replicas",
                recorded,
            ),
            row("`kill -9` -> original restored (grace period 0)", restored),
            row(
                "(context) process start -> first journal write of the session",
                first_writes,
            ),
            row(
                "(context) process start -> stand-in scaled the original to 0",
                scale_downs,
            ),
        ],
        notes,
    ))
}

/// The extra outage after the agent's first failed attempt: up to this long.
const RECOVERY_SPREAD: Duration = Duration::from_secs(5);

/// The recovery section: one agent, `n` sessions SIGKILLed while the API server is
/// unreachable; the time from it answering again to the original's replicas being back.
fn bench_recovery(n: usize) -> Result<(Vec<Row>, Vec<String>)> {
    let rig = SwapRig::start()?;
    let (env, agent) = (&rig.env, &rig.agent);

    let mut recovered = Vec::new();
    let mut outages = Vec::new();
    let mut finals: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let known = agent.journal_names();
        let mut s = rig.spawn(&rig.work_dir(i)?)?;
        let pid = s.pid();
        rig.wait_active(&mut s, &known)?;

        if !env.cluster.set_reachable(false) {
            bail!("the emulator could not be taken off the network");
        }
        let killed = Instant::now();
        s.kill9()?;
        // The agent has tried and failed once it journals why it waits.
        poll_until(
            "the agent reports the cluster unreachable",
            Duration::from_millis(10),
            || {
                agent.record(pid, &known).filter(|r| {
                    r["state"] == "Orphaned"
                        && r["history"]
                            .as_array()
                            .and_then(|h| h.last())
                            .is_some_and(|t| text(t, "/reason").contains("unreachable"))
                })
            },
        )
        .with_context(|| agent.log())?;
        let failed = killed.elapsed();
        // The agent's retries are 0.5 s, 1 s, then 1.5 s apart (plus up to 0.3 s jitter); a
        // fixed extra wait would always hit the same point of that cycle. The golden-ratio
        // sequence spreads n waits evenly over [0, RECOVERY_SPREAD), past the ramp-up into
        // the capped backoff, without the clumping of n random draws.
        let extra = RECOVERY_SPREAD.mul_f64((i as f64 * 0.618_033_988_749_895).fract());
        std::thread::sleep(extra);

        // T0 is taken before the switch, so the re-bind is counted against the agent.
        let t0 = Instant::now();
        if !env.cluster.set_reachable(true) {
            bail!("the emulator could not be put back on the network");
        }
        let outage = killed.elapsed();
        poll_until(
            "the original's replicas are back",
            Duration::from_millis(5),
            || (replicas(env) == Some(2)).then_some(()),
        )
        .with_context(|| agent.log())?;
        let dt = t0.elapsed();
        recovered.push(dt);
        outages.push(outage);

        let state = rig.wait_settled(s, &known)?;
        *finals.entry(state.clone()).or_default() += 1;
        eprintln!(
            "recovery {:>2}/{n}: first failed attempt journaled {} after kill -9, cluster back {:.2} s after kill -9, original restored {} later, {state}",
            i + 1,
            ms(failed),
            outage.as_secs_f64(),
            ms(dt)
        );
    }
    let longest = recovered.iter().max().copied().unwrap_or_default();
    let r = row(
        "API server answering again -> original restored (killed while unreachable)",
        recovered,
    );
    outages.sort_unstable();
    let notes = vec![format!(
        "Recovery: as Sessions, with the emulator unreachable from before `kill -9` until 0-{} s \
         after the agent journaled its first failed repair (outages {:.1}-{:.1} s); \
         answering again -> restored: median {}, p90 {}, max {} (n = {}); final states: {}.",
        RECOVERY_SPREAD.as_secs(),
        outages.first().copied().unwrap_or_default().as_secs_f64(),
        outages.last().copied().unwrap_or_default().as_secs_f64(),
        ms(r.median),
        ms(r.p90),
        ms(longest),
        r.n,
        join_counts(&finals)
    )];
    Ok((vec![r], notes))
}

/// Telepresence 2: connector start -> session recorded, and `kill -9` -> departed.
fn bench_tel2(n: usize) -> Result<(Vec<Row>, Vec<String>)> {
    use trafficmanager::{Options, TrafficManager};
    let env = Env::without_kubectl_check(testcluster::Options::default(), PathBuf::new());
    let tm = TrafficManager::start(Options::default())?;
    util::install_traffic_manager(&env.cluster, "ambassador", &tm)?;
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin)?;
    let program = bin.join("telepresence");
    std::fs::copy(example_binary("telepresence2")?, &program)?;
    let context = std::fs::read_to_string(&env.kubeconfig)?
        .lines()
        .find_map(|l| {
            l.strip_prefix("current-context: ")
                .map(|c| c.trim().to_string())
        })
        .context("the kubeconfig's current context")?;
    let agent = Agent::start(
        &env.path("agent"),
        &program,
        "telepresence2_grace_secs = 0\nnotifications = false",
        &[],
    )?;
    let mut recorded = Vec::new();
    let mut departed = Vec::new();
    let mut finals: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let known = agent.journal_names();
        let started = Instant::now();
        let mut child = Command::new(&program)
            .arg("connector-foreground")
            .env("XDG_CACHE_HOME", env.path("xdg-cache"))
            .env("KUBECONFIG", &env.kubeconfig)
            .env("TEL2_STANDIN_CONTEXT", &context)
            .env("TEL2_STANDIN_MANAGER", tm.addr().to_string())
            .env("TEL2_STANDIN_INTERCEPT", "echo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the connector stand-in")?;
        let pid = child.id();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().context("stdout")?),
            &mut line,
        )?;
        let id = line
            .trim()
            .strip_prefix("connected ")
            .context("connected")?
            .to_string();
        poll_until("the session is recorded", Duration::from_millis(2), || {
            agent
                .record(pid, &known)
                .filter(|r| text(r, "/tel2/session_id") == id)
        })
        .with_context(|| agent.log())?;
        recorded.push(started.elapsed());
        let killed = Instant::now();
        platform::signal(platform::process_info(pid)?.id, Signal::Kill)?;
        let _ = child.wait();
        poll_until("the session is departed", Duration::from_millis(1), || {
            (!tm.sessions().contains(&id)).then_some(())
        })
        .with_context(|| agent.log())?;
        departed.push(killed.elapsed());
        let state = poll_until("the record is final", Duration::from_millis(5), || {
            agent
                .record(pid, &known)
                .map(|r| text(&r, "/state"))
                .filter(|s| matches!(s.as_str(), "Cleaned" | "Ended" | "NeedsAttention"))
        })?;
        *finals.entry(state).or_default() += 1;
    }
    let notes = vec![format!(
        "Telepresence 2: connector stand-in with an intercept, telepresence2_grace_secs = 0; \
         the agent reaches the traffic-manager stand-in through the emulator's port-forward; \
         final states: {}.",
        join_counts(&finals)
    )];
    Ok((
        vec![
            row("2.x connector started -> session recorded", recorded),
            row("2.x connector kill -9 -> session departed", departed),
        ],
        notes,
    ))
}

fn replicas(env: &Env) -> Option<i64> {
    env.cluster
        .get("deployments", "default", "app")
        .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64))
}

/// Section 3: the daemon with no session.
fn bench_idle(secs: f64) -> Result<Vec<String>> {
    let Some(env) = Env::new() else {
        bail!("kubectl is missing");
    };
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin)?;
    let program = bin.join("telepresence");
    std::fs::copy(SCRIPT, &program)?;
    // Default config apart from the program; the emulator's kubeconfig in its environment,
    // so that any cluster traffic while idle shows in the audit log.
    let agent = Agent::start(&env.path("agent"), &program, "", &env.envs())?;
    let pid = agent.pid();
    let hz = platform::boot_clock_ticks_per_second() as f64;
    let start_ticks = cpu_ticks(pid)?;
    let start_ns = cpu_ns(pid);
    let t0 = Instant::now();
    eprintln!("idle: watching the agent (pid {pid}) for {secs} s...");
    std::thread::sleep(Duration::from_secs_f64(secs));
    let end_ticks = cpu_ticks(pid)?;
    let end_ns = cpu_ns(pid);
    let window = t0.elapsed();
    let rss = status_kib(pid, "VmRSS")?;
    let hwm = status_kib(pid, "VmHWM")?;
    // Only the agent knows this emulator: every request in its audit log is the agent's.
    let requests = env.cluster.audit().len();
    let mib = |k: u64| k as f64 / 1024.0;
    let ticks = |t: u64| {
        let unit = if t == 1 { "tick" } else { "ticks" };
        format!("{:.2} s ({t} {unit})", t as f64 / hz)
    };
    Ok(vec![
        "| idle daemon, no sessions | measured over | CPU in the window (utime+stime) | CPU in the window (schedstat) | CPU since exec (utime+stime) | RSS (VmRSS) | peak RSS (VmHWM) | cluster requests since start |"
            .to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---:|".to_string(),
        format!(
            "| default config | {:.1} s | {} | {:.1} ms | {} | {:.1} MiB | {:.1} MiB | {requests} |",
            window.as_secs_f64(),
            ticks(end_ticks.saturating_sub(start_ticks)),
            end_ns.saturating_sub(start_ns) as f64 / 1e6,
            ticks(end_ticks),
            mib(rss),
            mib(hwm)
        ),
        format!(
            "(utime+stime come in clock ticks of {:.0} ms; schedstat is the nanosecond run time \
             of the agent's threads alive at both readings.)",
            1000.0 / hz
        ),
        String::new(),
    ])
}

/// A heartbeat Lease as a laptop agent makes it, for session `id` in `ns`, renewed now.
fn bench_lease(
    ns: &str,
    id: &str,
    proxy: &str,
    proxy_uid: &str,
    facts: &serde_json::Map<String, Value>,
) -> Value {
    let now = jiff::Timestamp::now().to_string();
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": format!("telepolice-{id}"), "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "telepolice-agent", "telepolice.dev/session": id},
            "annotations": facts,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": proxy, "uid": proxy_uid}],
        },
        "spec": {"holderIdentity": format!("laptop/dev@bench/{id}"), "leaseDurationSeconds": 40,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
    })
}

/// The sweeper in a cluster of `pods` pods, `sessions` of them recorded proxies with live
/// heartbeats (renewed here every 10 s): idle cost, then heartbeat stop -> repaired.
fn bench_sweeper(
    pods: usize,
    sessions: usize,
    idle_secs: f64,
    grace_secs: f64,
) -> Result<(Vec<Row>, Vec<String>)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::without_kubectl_check(testcluster::Options::default(), PathBuf::new());
    let c = &env.cluster;
    let ns_obj = |n: &str| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    c.create("namespaces", "", &ns_obj("telepolice")).ok();
    let spaces: Vec<String> = (0..10).map(|i| format!("team-{i}")).collect();
    for n in &spaces {
        c.create("namespaces", "", &ns_obj(n)).ok();
    }
    eprintln!("sweeper: making {pods} pods and {sessions} sessions...");
    let pod = |name: &str, labels: Value, annotations: Value| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        })
    };
    // In three batches (each under one lock hold, so the controllers look once): the
    // originals, then the proxies (their facts name the originals' uids), then the leases
    // (owned by the proxies) and the other pods.
    let err = |e| anyhow::anyhow!("{e:?}");
    let ns_of = |i: usize| spaces[i % spaces.len()].clone();
    let id_of = |i: usize| format!("{i:032x}");
    let deps: Vec<(&str, String, Value)> = (0..sessions)
        .map(|i| {
            let app = format!("app{i}");
            let d = serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "labels": {"app": app}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": app}},
                         "template": {"metadata": {"labels": {"app": app}},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            });
            ("deployments", ns_of(i), d)
        })
        .collect();
    let batch = |items: &[(&str, String, Value)]| {
        let refs: Vec<(&str, &str, Value)> = items
            .iter()
            .map(|(r, n, v)| (*r, n.as_str(), v.clone()))
            .collect();
        c.create_all(&refs).map_err(err)
    };
    let made = batch(&deps)?;
    let mut all_facts = Vec::new();
    let mut proxies = Vec::new();
    for (i, dep) in made.iter().enumerate() {
        let (ns, id, app) = (ns_of(i), id_of(i), format!("app{i}"));
        let mut facts = serde_json::Map::new();
        for (k, v) in [
            ("schema", "1".to_string()),
            ("session", id.clone()),
            ("session-kind", "telepresence-0".into()),
            ("namespace", ns.clone()),
            ("mode", format!("swap-deployment={app}")),
            ("original-kind", "Deployment".into()),
            ("original-name", app.clone()),
            ("original-uid", text(dep, "/metadata/uid")),
            ("original-replicas", "1".into()),
            ("replicas-evidence", "observed".into()),
            ("owner-host", "bench".into()),
            ("owner-user", "dev".into()),
        ] {
            facts.insert(format!("telepolice.dev/{k}"), Value::String(v));
        }
        let labels = serde_json::json!({"telepresence": id, "app": app});
        proxies.push((
            "pods",
            ns,
            pod(&format!("{app}-{id}"), labels, Value::Object(facts.clone())),
        ));
        all_facts.push(facts);
    }
    let made = batch(&proxies)?;
    let mut rest = Vec::new();
    let mut leases: Vec<(String, String)> = Vec::new();
    for (i, (p, mut facts)) in made.iter().zip(all_facts).enumerate() {
        let (ns, id) = (ns_of(i), id_of(i));
        let proxy = text(p, "/metadata/name");
        let puid = text(p, "/metadata/uid");
        facts.insert(
            "telepolice.dev/proxies".into(),
            Value::String(format!("pod/{proxy}/{puid}")),
        );
        rest.push((
            "leases",
            ns.clone(),
            bench_lease(&ns, &id, &proxy, &puid, &facts),
        ));
        leases.push((ns, format!("telepolice-{id}")));
    }
    for i in 0..pods.saturating_sub(sessions) {
        let labels = serde_json::json!({"app": "web"});
        rest.push((
            "pods",
            ns_of(i),
            pod(&format!("web-{i}"), labels, serde_json::json!({})),
        ));
    }
    batch(&rest)?;
    // The laptops: every lease renewed every 10 s, spread evenly; `stopped` ones are not.
    let stopped: std::sync::Mutex<HashSet<String>> = Default::default();
    let done = AtomicBool::new(false);
    let renew = || {
        let gap = Duration::from_secs(10) / u32::try_from(leases.len().max(1)).unwrap_or(1);
        let mut next = Instant::now();
        'outer: loop {
            for (ns, name) in &leases {
                if done.load(Ordering::SeqCst) {
                    break 'outer;
                }
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if stopped.lock().map(|s| s.contains(name)).unwrap_or(false) {
                    continue;
                }
                if let Some(mut l) = c.get("leases", ns, name) {
                    l["spec"]["renewTime"] = Value::String(jiff::Timestamp::now().to_string());
                    let _ = c.update("leases", ns, &l);
                }
            }
        }
    };
    std::thread::scope(|scope| {
        let renewer = scope.spawn(renew);
        let out = sweeper_measure(
            &env, &leases, &spaces, &stopped, pods, sessions, idle_secs, grace_secs,
        );
        done.store(true, Ordering::SeqCst);
        let _ = renewer.join();
        out
    })
}

/// The sweeper's part of [`bench_sweeper`], while the heartbeats are renewed.
#[allow(clippy::too_many_arguments)]
fn sweeper_measure(
    env: &Env,
    leases: &[(String, String)],
    spaces: &[String],
    stopped: &std::sync::Mutex<HashSet<String>>,
    pods: usize,
    sessions: usize,
    idle_secs: f64,
    grace_secs: f64,
) -> Result<(Vec<Row>, Vec<String>)> {
    let c = &env.cluster;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = env.path("sweeper.err");
    let mut child = Command::new(AGENT)
        .args([
            "sweep",
            "--election-namespace",
            "telepolice",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--grace-minutes", &format!("{}", grace_secs / 60.0)])
        .env_clear()
        .env("KUBECONFIG", &env.kubeconfig)
        .env("POD_NAME", "bench")
        .env(
            "TELEPOLICE_LOG",
            std::env::var("BENCH_SWEEP_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = child.id();
    let said = |needle: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
    };
    let ready = || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"GET /readyz HTTP/1.1\r\n\r\n").ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                out.starts_with("HTTP/1.1 200").then_some(())
            })
    };
    let t_start = Instant::now();
    poll_until(
        "the sweeper lists everything",
        Duration::from_millis(20),
        ready,
    )
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    let synced = t_start.elapsed();
    poll_until("the sweeper leads", Duration::from_millis(20), || {
        said("leading").then_some(())
    })?;
    // Idle: the heartbeats go on, nothing is due.
    let hz = platform::boot_clock_ticks_per_second() as f64;
    let audit_before = c.audit().len();
    let ticks0 = cpu_ticks(pid)?;
    eprintln!("sweeper: idle for {idle_secs} s with {sessions} heartbeats renewing...");
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let ticks1 = cpu_ticks(pid)?;
    let audit: Vec<_> = c
        .audit()
        .into_iter()
        .skip(audit_before)
        .filter(|e| e.user_agent.starts_with("telepolice-sweeper/"))
        .collect();
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for e in &audit {
        *by.entry(format!("{} {}", e.verb, e.resource)).or_default() += 1;
    }
    let per_min = audit.len() as f64 * 60.0 / idle_secs;
    let rss = status_kib(pid, "VmRSS")?;
    let hwm = status_kib(pid, "VmHWM")?;
    // Five heartbeats stop at once.
    let victims: Vec<usize> = (0..5.min(sessions)).map(|k| k * sessions / 5).collect();
    let mut stopped_at = Vec::new();
    for &v in &victims {
        let (ns, name) = &leases[v];
        stopped
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .insert(name.clone());
        let l = c.get("leases", ns, name).context("lease")?;
        let renewed: jiff::Timestamp = text(&l, "/spec/renewTime").parse()?;
        stopped_at.push((v, renewed));
    }
    let mut past = Vec::new();
    for (v, renewed) in stopped_at {
        let ns = &spaces[v % spaces.len()];
        let app = format!("app{v}");
        poll_until("the session is repaired", Duration::from_millis(5), || {
            c.get("deployments", ns, &app)
                .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64))
                .filter(|r| *r == 1)
        })
        .or_else(|_| {
            poll_until(
                "the session is repaired (late)",
                Duration::from_millis(50),
                || {
                    c.get("deployments", ns, &app)
                        .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_i64))
                        .filter(|r| *r == 1)
                },
            )
        })
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
        let now = jiff::Timestamp::now();
        let since = now.duration_since(renewed).unsigned_abs();
        past.push(since.saturating_sub(Duration::from_secs_f64(grace_secs)));
    }
    if std::env::var_os("BENCH_SWEEP_LOG").is_some() {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let notes = vec![format!(
        "Sweeper: {pods} pods in 10 namespaces, {sessions} of them recorded proxies with heartbeats renewed every 10 s ({:.0} lease updates a second). \
             Listed and ready in {:.1} s. Over {idle_secs:.0} s idle: {:.0} requests a minute ({}), CPU {:.2} s, RSS {:.1} MiB (peak {:.1} MiB).",
        sessions as f64 / 10.0,
        synced.as_secs_f64(),
        per_min,
        join_counts(&by),
        (ticks1.saturating_sub(ticks0)) as f64 / hz,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    )];
    Ok((
        vec![row(
            &format!(
                "sweeper: heartbeat stop -> original restored, past the {grace_secs:.0} s grace (5 at once)"
            ),
            past,
        )],
        notes,
    ))
}

/// A `sleep 600` with nothing attached: a process that only takes up a pid.
fn sleeper() -> Result<std::process::Child> {
    Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `sleep 600`")
}

/// Section 4: `Discovery::poll` with 1,000 extra processes running.
fn bench_discovery(n: usize) -> Result<(Vec<Row>, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let program = dir.path().join("telepresence");
    std::fs::copy(SCRIPT, &program)?;

    let mut children = Children::default();
    eprintln!("discovery: starting 1,000 `sleep 600`...");
    for _ in 0..1000 {
        children.0.push(sleeper()?);
    }
    let mut discovery = Discovery::new(std::slice::from_ref(&program));

    let mut scans = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let found = discovery.scan_all();
        scans.push(t.elapsed());
        if !found.is_empty() {
            eprintln!("discovery: scan_all found {} (unexpected)", found.len());
        }
    }
    let total_pids = all_pids().len();

    // Each round: wait until the pids of the previous round leave the re-check window, spawn
    // one process (spawn returns after its exec), time one poll.
    let mut polls = Vec::new();
    let mut examined = Vec::new();
    let mut before = all_pids();
    eprintln!("discovery: {n} polls, {total_pids} pids on the machine...");
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(1100));
        children.0.push(sleeper()?);
        let t = Instant::now();
        let found = discovery.poll();
        polls.push(t.elapsed());
        if !found.is_empty() {
            eprintln!("discovery: poll found {} (unexpected)", found.len());
        }
        let after = all_pids();
        examined.push(after.difference(&before).count());
        before = after;
    }
    drop(children);
    examined.sort_unstable();
    let notes = vec![format!(
        "Discovery: {total_pids} pids on the machine (1,000 of them `sleep` started by the bench); \
         new pids per poll: median {}, max {} (other activity on the machine included).",
        examined.get(examined.len() / 2).copied().unwrap_or(0),
        examined.last().copied().unwrap_or(0)
    )];
    Ok((
        vec![
            row(
                "noticing one new process, 1,000 running (`Discovery::poll`)",
                polls,
            ),
            row("full scan for comparison (`Discovery::scan_all`)", scans),
        ],
        notes,
    ))
}
