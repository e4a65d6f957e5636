//! Noticing Telepresence 0.x processes as they start, without scanning the process table on
//! a short fixed interval: an open event on a watched Telepresence program (an exec opens the
//! file; so does a Python interpreter reading the script) triggers a look at the pids that
//! are new since the last look; a slow safety-net scan runs behind it.
//!
//! Any process of the user running a Python program named `telepresence` (or a configured
//! program's name) is a 0.x session, wherever the program lives: the watched programs only
//! make finding it fast. A session found running a program not watched yet (a venv's, one
//! not on the agent's minimal service PATH) makes it watched from then on.
//!
//! A new pid may be caught between `fork` and `exec` (its command line is still its parent's),
//! so pids that did not look like Telepresence are looked at again on the next triggers for
//! a short while before they are forgotten. That is also how a shell wrapper named
//! `telepresence` leads to its session: the wrapper is looked at again until it has exec'd
//! Python, and the Python child it starts instead is a new pid.
//!
//! # Layout
//! - here: [`Discovery`], which processes are sessions, and where programs are looked for;
//! - `watch` (Linux): [`ProgramWatch`] with inotify, by inode, re-watching replaced programs;
//! - `watch_paths` (elsewhere): [`ProgramWatch`] with `notify`, by path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use crate::platform::{self, NewProcesses, ProcessInfo};
use crate::telepresence::{self, Flavor};

#[cfg(target_os = "linux")]
mod watch;
// Built on Linux too for its tests: CI type-checks only the platform crate for macOS.
#[cfg(any(not(target_os = "linux"), test))]
mod watch_paths;

#[cfg(target_os = "linux")]
pub use watch::ProgramWatch;
#[cfg(not(target_os = "linux"))]
pub use watch_paths::ProgramWatch;

/// How long a pid that did not (yet) look like Telepresence is looked at again.
const RECHECK_FOR: Duration = Duration::from_secs(3);

/// Keeps the agents of parallel tests apart, in builds with debug assertions only (as
/// failpoints are): an agent follows only the sessions started with the same value of this
/// variable as its own, both without it included. One agent per user is the product's
/// rule; a test suite runs many, and since a session is followed wherever its program
/// lives, one test's agent would otherwise record and repair another test's sessions.
#[cfg(debug_assertions)]
const TEST_ENV_VAR: &str = "TELEPOLICE_TEST_ENV";

/// Called by a [`ProgramWatch`] when it is worth looking at the new pids now; answers
/// `false` once nobody listens any more (the watch then stops).
pub type Hint = Arc<dyn Fn() -> bool + Send + Sync>;

/// Why the Telepresence programs could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The OS's file watching could not be started.
    #[error("starting to watch files: {0}")]
    Init(#[source] std::io::Error),
    /// A program could not be watched (it does not exist, or cannot be read).
    #[error("watching {path} for new Telepresence processes: {source}")]
    Program {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The thread that reads the watch's events could not be started.
    #[error("starting the thread that reads the program watch: {0}")]
    Thread(#[source] std::io::Error),
}

/// A Telepresence process found: a 0.x session, or a 2.x connector.
#[derive(Debug, Clone)]
pub struct Found {
    /// What `/proc` says about it.
    pub info: ProcessInfo,
    /// 0.x ([`Flavor::Legacy`]) or a 2.x connector ([`Flavor::Modern`]).
    pub flavor: Flavor,
    /// Where in its argv the Telepresence program is (the arguments follow it).
    pub program_index: usize,
    /// The program file it runs, made absolute; `None` when it is not a file that can be
    /// named (`python3 -m telepresence`, or one already gone).
    pub program: Option<PathBuf>,
}

/// Finds Telepresence 0.x processes and 2.x connectors of the current user among new pids.
#[derive(Debug)]
pub struct Discovery {
    /// Whether 2.x connectors are found (config `telepresence2`).
    telepresence2: bool,
    new: NewProcesses,
    /// Pids seen recently that did not look like Telepresence, with when first seen.
    recheck: HashMap<u32, Instant>,
    /// The file names that count as a Telepresence program (`telepresence` and those of the
    /// watched programs); worked out once, as every examined command line is checked
    /// against it.
    names: Vec<String>,
    uid: u32,
    /// The watch on the programs, if this discovery has one: a program that a found session
    /// runs is added to it. Dropped (and its thread stopped) with the discovery.
    watch: Option<ProgramWatch>,
    /// This agent's [`TEST_ENV_VAR`].
    #[cfg(debug_assertions)]
    test_env: Option<String>,
}

/// The directories where a `telepresence` is looked for: those of `path_var`, then the
/// usual install locations (`/usr/local/bin`, `/usr/bin`, `/opt/homebrew/bin`,
/// `~/.local/bin`), each once, whether or not they exist.
pub fn search_dirs(path_var: Option<&str>, home: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"].map(PathBuf::from));
    if let Some(h) = home {
        dirs.push(Path::new(h).join(".local/bin"));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The Telepresence programs to watch: the configured ones, or every `telepresence` found
/// in the [`search_dirs`].
pub fn programs_to_watch(
    configured: &[PathBuf],
    path_var: Option<&str>,
    home: Option<&str>,
) -> Vec<PathBuf> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    search_dirs(path_var, home)
        .into_iter()
        .map(|d| d.join("telepresence"))
        .filter(|p| p.is_file())
        .collect()
}

/// The program file names that count: `telepresence`, and those of `programs` (a configured
/// program may have another name; it adds to the default, never replaces it).
pub fn program_names(programs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = telepresence::DEFAULT_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    for name in programs
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn head_of(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

impl Discovery {
    /// Starts remembering the pids that exist now: they are not "new". (Sessions that
    /// already run are found by [`Discovery::scan_all`].) `programs` name the programs that
    /// count besides `telepresence` (see [`program_names`]); nothing is watched.
    pub fn new(programs: &[PathBuf]) -> Self {
        Self {
            telepresence2: true,
            new: NewProcesses::new(),
            recheck: HashMap::new(),
            names: program_names(programs),
            uid: platform::current_uid(),
            watch: None,
            #[cfg(debug_assertions)]
            test_env: std::env::var(TEST_ENV_VAR).ok(),
        }
    }

    /// Like [`Discovery::new`], and watches `programs` (and `dirs`, for a Telepresence
    /// installed there later): `hint` is called when it is worth a [`Discovery::poll`].
    ///
    /// # Errors
    /// When the watch cannot be started, or a program cannot be watched (it does not
    /// exist): see [`WatchError`].
    pub fn watching(
        programs: &[PathBuf],
        dirs: &[PathBuf],
        hint: Hint,
    ) -> Result<Self, WatchError> {
        let mut d = Self::new(programs);
        d.watch = Some(ProgramWatch::start(programs, dirs, &d.names, hint)?);
        Ok(d)
    }

    /// Watches the programs that found sessions run, if not yet: the next session from
    /// the same place is then found at its start rather than by the safety-net scan.
    fn watch_found(&mut self, found: &[Found]) {
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        let named = |p: &&Path| {
            p.file_name()
                .is_some_and(|n| self.names.iter().any(|x| n == x.as_str()))
        };
        for program in found
            .iter()
            .filter_map(|f| f.program.as_deref())
            .filter(named)
        {
            if watch.add_program(program) {
                info!(
                    "watching the Telepresence program {}: a session runs it, and it was not watched (not configured, not on the agent's PATH)",
                    program.display()
                );
            }
        }
    }

    /// Looks at the pids that appeared since the last call (and recent ones worth a second
    /// look); returns the Telepresence 0.x processes among them.
    pub fn poll(&mut self) -> Vec<Found> {
        let now = Instant::now();
        let mut pids = self.new.new_pids().unwrap_or_default();
        self.recheck
            .retain(|_, t| now.duration_since(*t) < RECHECK_FOR);
        pids.extend(self.recheck.keys().copied());
        pids.sort_unstable();
        pids.dedup();
        let mut found = Vec::new();
        for pid in pids {
            match self.examine(pid) {
                Some(f) => {
                    self.recheck.remove(&pid);
                    found.push(f);
                }
                None => {
                    self.recheck.entry(pid).or_insert(now);
                }
            }
        }
        self.watch_found(&found);
        found
    }

    /// Whether some recent pids deserve another look soon (they were caught mid-exec).
    pub fn has_pending(&self) -> bool {
        !self.recheck.is_empty()
    }

    /// Looks at every process (at start-up, and as the slow safety net).
    pub fn scan_all(&mut self) -> Vec<Found> {
        // One sweep of command lines; only those naming a program are examined.
        let all = platform::all_argv().unwrap_or_default();
        // Whatever exists now is no longer "new"; but a pid that appeared since the last
        // look may be mid-exec now, so it gets the same second looks as in `poll`.
        let fresh = self.new.new_pids().unwrap_or_default();
        let found: Vec<Found> = all
            .into_iter()
            .filter(|(_, argv)| self.mentions_program(argv))
            .filter_map(|(p, _)| self.examine(p))
            .collect();
        // Only young ones: a process started seconds ago may still be on its way into
        // Telepresence; an older one is not (the next scan would see it anyway).
        let now = Instant::now();
        let young = |pid: u32| {
            platform::process_info(pid)
                .ok()
                .and_then(|i| platform::process_start_time(i.id))
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < RECHECK_FOR)
        };
        for pid in fresh {
            if !found.iter().any(|f| f.info.id.pid == pid) && young(pid) {
                self.recheck.entry(pid).or_insert(now);
            }
        }
        self.watch_found(&found);
        found
    }

    /// Whether a command line names one of the watched program names at all.
    fn mentions_program(&self, argv: &[String]) -> bool {
        argv.iter().take(8).any(|a| {
            let base = a.rsplit('/').next().unwrap_or(a);
            self.names.iter().any(|n| n == base)
        })
    }

    /// Whether `pid` is a Telepresence 0.x process of this user, whatever the path of the
    /// program it runs.
    pub fn examine(&self, pid: u32) -> Option<Found> {
        // One cheap read first: most processes do not mention a program name at all.
        if !self.mentions_program(&platform::process_argv(pid).ok()?) {
            return None;
        }
        let info = platform::process_info(pid).ok()?;
        if info.uid != self.uid {
            return None;
        }
        // A Telepresence process forks before it execs each kubectl or helper; for that
        // instant the child has its parent's command line. It is not a session: the real
        // one's parent is a shell or another program, never an identical command line.
        if platform::process_info(info.ppid).is_ok_and(|parent| parent.argv == info.argv) {
            return None;
        }
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        // First pass without the file head, to find which argv entry is the program.
        let (_, idx) = telepresence::classify(&info.argv, None, &names)?;
        let program = program_file(&info, idx);
        let head = program.as_deref().and_then(head_of);
        match telepresence::classify(&info.argv, head.as_deref(), &names)? {
            (_, _) if !self.same_test(pid) => None,
            (Flavor::Legacy, program_index) => Some(Found {
                info,
                flavor: Flavor::Legacy,
                program_index,
                program,
            }),
            // Of 2.x, the connector (`connector-foreground`) holds the session, and an
            // `intercept NAME -- CMD` holds an intercept while its command runs; the other
            // CLI commands and the root daemon hold nothing.
            (Flavor::Modern, program_index)
                if self.telepresence2 && telepresence2_session(&info.argv, program_index) =>
            {
                Some(Found {
                    info,
                    flavor: Flavor::Modern,
                    program_index,
                    program,
                })
            }
            (Flavor::Modern, _) => None,
        }
    }

    /// Whether Telepresence 2 connectors are found too (they are unless switched off).
    pub fn find_telepresence2(&mut self, on: bool) {
        self.telepresence2 = on;
    }

    /// Whether `pid` belongs to this agent's test (see [`TEST_ENV_VAR`]). An environment
    /// not readable yet (mid-exec) does not; the pid is looked at again.
    #[cfg(debug_assertions)]
    fn same_test(&self, pid: u32) -> bool {
        match platform::process_environ(pid) {
            Ok(env) => {
                let theirs = env.into_iter().find(|(k, _)| k == TEST_ENV_VAR);
                theirs.map(|(_, v)| v) == self.test_env
            }
            Err(_) => self.test_env.is_none(),
        }
    }

    #[cfg(not(debug_assertions))]
    fn same_test(&self, _pid: u32) -> bool {
        true
    }
}

/// Whether a 2.x command line is one the agent follows: the connector, or an intercept
/// bound to a command (also when its name cannot be told: the daemon says so).
fn telepresence2_session(argv: &[String], program_index: usize) -> bool {
    let args = argv.get(program_index + 1..).unwrap_or(&[]);
    match args.first().map(String::as_str) {
        Some(telepresence::CONNECTOR_COMMAND) => true,
        Some("intercept") => !matches!(
            crate::telepresence2::intercept::bound_intercept(args),
            Ok(None)
        ),
        _ => false,
    }
}

/// The file of the program at `argv[idx]`, made absolute, if it is one.
fn program_file(info: &ProcessInfo, idx: usize) -> Option<PathBuf> {
    let arg = info.argv.get(idx)?;
    let path = if idx == 0 {
        // A direct exec: the kernel knows the program's real path; else the shell found it
        // on the PATH or relative to the working directory.
        match &info.exe {
            Some(exe) => exe.clone(),
            None if !arg.contains('/') => which(arg)?,
            None => info
                .cwd
                .as_deref()
                .map_or_else(|| PathBuf::from(arg), |c| c.join(arg)),
        }
    } else {
        // A Python script argument is a path, relative to the working directory (never
        // looked up on PATH); a `-m` module is no file at all.
        let option = info.argv.get(idx - 1).map_or("", String::as_str);
        let module = arg.starts_with('-')
            || (option.starts_with('-') && !option.starts_with("--") && option.ends_with('m'));
        if module {
            return None;
        }
        let p = Path::new(arg);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            info.cwd.as_deref()?.join(p)
        }
    };
    path.is_file().then_some(path)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests;
