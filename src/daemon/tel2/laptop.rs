//! What the agent reads on the laptop for a 2.x session: the connector's cache dir and
//! `--name`, its daemon files and session cache, and which connector and intercept
//! processes of the user run.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The `--name` a connector was started with.
pub(super) fn name_flag(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--name" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--name=") {
            return Some(v.to_string());
        }
    }
    None
}

/// The connector's Telepresence cache dir, from its environment.
pub(super) fn cache_dir_of(env: &HashMap<String, String>, cwd: Option<&Path>) -> Option<PathBuf> {
    let home = env.get("HOME").map(PathBuf::from);
    let dir = tp2::cache_dir(
        env.get("XDG_CACHE_HOME").map(String::as_str),
        home.as_deref(),
        cfg!(target_os = "macos"),
    )?;
    Some(match cwd {
        Some(c) if dir.is_relative() => c.join(dir),
        _ => dir,
    })
}

/// A `daemons/*.json` file: what it says, and when it was last touched.
#[derive(Debug)]
pub(super) struct DaemonFile {
    pub(super) info: tp2::DaemonInfo,
    pub(super) touched: SystemTime,
}

/// The daemon files in `cache_dir` of connectors on this machine (not in a container).
pub(super) fn daemon_files(cache_dir: &Path) -> Vec<DaemonFile> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join("daemons")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let touched = e.metadata().ok()?.modified().ok()?;
            let info = tp2::parse_daemon_info(&std::fs::read(e.path()).ok()?).ok()?;
            (!info.in_docker).then_some(DaemonFile { info, touched })
        })
        .collect()
}

/// The daemon file of this connector: the one fresh (touched within the CLI's staleness
/// window) with the connector's `--name`, or its only fresh one. `None` while there is none,
/// or more than one to choose from.
pub(super) fn own_daemon_file(t: &Tel2) -> Option<DaemonFile> {
    let now = SystemTime::now();
    let mut fresh: Vec<DaemonFile> = daemon_files(&t.cache_dir)
        .into_iter()
        .filter(|d| {
            now.duration_since(d.touched)
                .is_ok_and(|age| age < DAEMON_INFO_STALE_AFTER)
        })
        .filter(|d| match &t.name {
            Some(n) => d.info.daemon_id() == Some(tp2::safe_name(n)),
            None => true,
        })
        .collect();
    if fresh.len() == 1 { fresh.pop() } else { None }
}

/// The session cache of daemon `id`: `sessions/<id>.json` (2.16+), else `sessions.json`
/// (2.6.7-2.15). The path and what it says; `None` when neither file is there.
pub(super) fn session_cache(
    cache_dir: &Path,
    id: Option<&str>,
) -> Option<(PathBuf, Result<tp2::SavedSession, String>)> {
    let per_daemon = id.map(|id| cache_dir.join("sessions").join(format!("{id}.json")));
    let candidates = per_daemon
        .into_iter()
        .chain([cache_dir.join("sessions.json")]);
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let saved = tp2::parse_saved_session(&bytes).map_err(|e| e.to_string());
                return Some((path, saved));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Some((path, Err(e.to_string()))),
        }
    }
    None
}

/// Whether a connector for the same daemon runs now: a live connector process with the same
/// `--name` and cache dir, or the daemon file touched since the recorded one died.
pub(super) fn connector_running(rec: &SessionRecord, died_at: SystemTime) -> bool {
    let t = tel2(rec);
    let touched = t.daemon_id.as_deref().and_then(|id| {
        std::fs::metadata(t.cache_dir.join("daemons").join(format!("{id}.json")))
            .and_then(|m| m.modified())
            .ok()
    });
    if touched.is_some_and(|at| at > died_at) {
        return true;
    }
    // Unknowable (no process list): counted as running, which never departs.
    live_connectors(rec).is_none_or(|pids| !pids.is_empty())
}

/// The session id the cache names now, if any.
pub(super) fn cached_now(rec: &SessionRecord) -> Option<String> {
    let t = tel2(rec);
    let (_, saved) = session_cache(&t.cache_dir, t.daemon_id.as_deref())?;
    saved.ok().map(|s| s.session.session_id)
}

/// Whether a connector process runs for the record's daemon (a live process: a daemon file
/// touched a moment ago may be a dead connector's last touch).
pub(super) fn connector_alive(rec: &SessionRecord) -> bool {
    live_connectors(rec).is_some_and(|pids| !pids.is_empty())
}

/// The live connector processes of the record's user with its cache dir and `--name`, but
/// for the record's own process; `None` when the process list cannot be read.
pub(super) fn live_connectors(rec: &SessionRecord) -> Option<Vec<u32>> {
    let t = tel2(rec);
    let all = platform::all_argv().ok()?;
    let mine = |pid: u32, argv: &[String]| {
        let Some(i) = argv
            .iter()
            .position(|a| a == CONNECTOR_COMMAND)
            .filter(|i| *i >= 1)
        else {
            return false;
        };
        pid != rec.process.pid
            && platform::process_info(pid).is_ok_and(|p| p.uid == rec.uid)
            && name_flag(&argv[i + 1..]) == t.name
            && cache_dir_of(
                &environ_map(pid).0,
                platform::process_cwd(pid).ok().as_deref(),
            )
            .as_deref()
                == Some(t.cache_dir.as_path())
    };
    Some(
        all.into_iter()
            .filter(|(pid, argv)| mine(*pid, argv))
            .map(|(pid, _)| pid)
            .collect(),
    )
}

/// Whether another live `intercept NAME -- CMD` of the user runs with the same cache dir.
pub(super) fn other_intercept_cli(rec: &SessionRecord, name: &str) -> bool {
    let cache_dir = tel2(rec).cache_dir;
    platform::all_argv()
        .unwrap_or_default()
        .into_iter()
        .any(|(pid, argv)| {
            pid != rec.process.pid
                && argv.iter().position(|a| a == "intercept").is_some_and(|i| {
                    bound_intercept(&argv[i..]).ok().flatten().as_deref() == Some(name)
                })
                && platform::process_info(pid).is_ok_and(|p| p.uid == rec.uid)
                && cache_dir_of(
                    &environ_map(pid).0,
                    platform::process_cwd(pid).ok().as_deref(),
                )
                .as_deref()
                    == Some(cache_dir.as_path())
        })
}
