//! Runs the Kubernetes API emulator by hand, for exploring with `kubectl` or driving from
//! a script.
//!
//! ```text
//! cargo run --example testcluster -- --kubeconfig PATH [--minor N] [--context NAME]
//! ```
//!
//! Writes a kubeconfig to PATH, prints `ready <server-url>` once it serves, then reads
//! fault controls from standard input, one per line (`unreachable`, `reachable`,
//! `latency <ms>`, `fail <code> <verb> <resource>`, `deny <verb> <resource>`,
//! `unreachable-after <verb> <resource>`, `clear`), answering `ok` or
//! `error: <why>` for each. Serves until SIGINT or SIGTERM.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use testcluster::{Options, TestCluster};

const USAGE: &str = "usage: testcluster --kubeconfig PATH [--minor N] [--context NAME]";

fn parse(args: impl Iterator<Item = String>) -> Result<(PathBuf, Options), String> {
    let mut kubeconfig = None;
    let mut opts = Options::default();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--minor" => {
                let v = value()?;
                opts.minor = v
                    .parse()
                    .map_err(|_| format!("--minor wants a number, got {v:?}"))?;
            }
            "--context" => opts.context = value()?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let kubeconfig = kubeconfig.ok_or_else(|| format!("--kubeconfig is required\n{USAGE}"))?;
    Ok((kubeconfig, opts))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only means nobody listens to the answers any more.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let (path, opts) = match parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("testcluster: cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match TestCluster::start(opts) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("testcluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = cluster.write_kubeconfig(&path) {
        eprintln!(
            "testcluster: writing the kubeconfig to {}: {e}",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    say(&format!("ready {}", cluster.url()));
    let controls = cluster.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match controls.control(&line) {
                Ok(()) => say("ok"),
                Err(e) => say(&format!("error: {e}")),
            }
        }
    });
    // Serve until the first SIGINT or SIGTERM.
    let _ = signals.forever().next();
    drop(cluster);
    ExitCode::SUCCESS
}
