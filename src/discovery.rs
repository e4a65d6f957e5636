//! Noticing Telepresence 0.x processes as they start, without scanning the process table on
//! a short fixed interval: an `inotify` open event on a watched Telepresence program (an exec
//! opens the file; so does a Python interpreter reading the script) triggers a look at the
//! pids that are new since the last look; a slow safety-net scan runs behind it.
//!
//! A new pid may be caught between `fork` and `exec` (its command line is still its parent's),
//! so pids that did not look like Telepresence are looked at again on the next triggers for
//! a short while before they are forgotten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::platform::{self, NewProcesses, ProcessInfo};
use crate::telepresence::{self, Flavor};

/// How long a pid that did not (yet) look like Telepresence is looked at again.
const RECHECK_FOR: Duration = Duration::from_secs(3);

/// A Telepresence 0.x process found.
#[derive(Debug, Clone)]
pub struct Found {
    /// What `/proc` says about it.
    pub info: ProcessInfo,
    /// Where in its argv the Telepresence program is (the arguments follow it).
    pub program_index: usize,
}

/// Finds Telepresence 0.x processes of the current user among new pids.
#[derive(Debug)]
pub struct Discovery {
    new: NewProcesses,
    /// Pids seen recently that did not look like Telepresence, with when first seen.
    recheck: HashMap<u32, Instant>,
    /// Canonical paths of the programs that count; empty = any program named `telepresence`.
    programs: Vec<PathBuf>,
    /// The file names that count as a Telepresence program (of `programs`, or
    /// `telepresence`); worked out once, as every examined command line is checked against it.
    names: Vec<String>,
    uid: u32,
}

/// The Telepresence programs to watch: the configured ones, or every `telepresence` found
/// on `path_var` and in the usual install locations.
pub fn programs_to_watch(
    configured: &[PathBuf],
    path_var: Option<&str>,
    home: Option<&str>,
) -> Vec<PathBuf> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"].map(PathBuf::from));
    if let Some(h) = home {
        dirs.push(Path::new(h).join(".local/bin"));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = d.join("telepresence");
        if p.is_file() && !out.contains(&p) {
            out.push(p);
        }
    }
    out
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
    /// already run are found by [`Discovery::scan_all`].)
    pub fn new(programs: &[PathBuf]) -> Self {
        let names = if programs.is_empty() {
            telepresence::DEFAULT_NAMES
                .iter()
                .map(|n| n.to_string())
                .collect()
        } else {
            programs
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()
        };
        Self {
            new: NewProcesses::new(),
            recheck: HashMap::new(),
            programs: programs
                .iter()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                .collect(),
            names,
            uid: platform::current_uid(),
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
        found
    }

    /// Whether some recent pids deserve another look soon (they were caught mid-exec).
    pub fn has_pending(&self) -> bool {
        !self.recheck.is_empty()
    }

    /// Looks at every process (at start-up, and as the slow safety net).
    pub fn scan_all(&mut self) -> Vec<Found> {
        // One sweep of command lines; only those mentioning a watched program are examined.
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
        found
    }

    /// Whether a command line names one of the watched program names at all.
    fn mentions_program(&self, argv: &[String]) -> bool {
        argv.iter().take(8).any(|a| {
            let base = a.rsplit('/').next().unwrap_or(a);
            self.names.iter().any(|n| n == base)
        })
    }

    /// Whether `pid` is a Telepresence 0.x process of this user running a watched program.
    pub fn examine(&self, pid: u32) -> Option<Found> {
        // One cheap read first: most processes do not mention a watched program at all.
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
        let prog = match (idx, &info.exe) {
            // A direct exec: the kernel knows the program's real path.
            (0, Some(exe)) => exe.clone(),
            _ => resolve(info.argv.get(idx)?, info.cwd.as_deref()),
        };
        if !self.programs.is_empty() {
            let canon = std::fs::canonicalize(&prog).unwrap_or_else(|_| prog.clone());
            if !self.programs.contains(&canon) {
                return None;
            }
        }
        let head = head_of(&prog);
        match telepresence::classify(&info.argv, head.as_deref(), &names)? {
            (Flavor::Legacy, program_index) => Some(Found {
                info,
                program_index,
            }),
            (Flavor::Modern, _) => None,
        }
    }
}

/// A program path from argv, made absolute against the process's working directory.
fn resolve(arg: &str, cwd: Option<&Path>) -> PathBuf {
    let p = PathBuf::from(arg);
    match cwd {
        Some(c) if p.is_relative() && arg.contains('/') => c.join(p),
        _ if !arg.contains('/') => which(arg).unwrap_or(p),
        _ => p,
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Finds a child of `parent` with the same command line (its fork), waiting up to
    /// 10 s for it.
    fn fork_of(parent: u32) -> Option<u32> {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let argv = platform::process_info(parent)
                .map(|i| i.argv)
                .unwrap_or_default();
            let kids: Vec<u32> = platform::list_pids()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| {
                    platform::process_info(*p)
                        .is_ok_and(|i| i.ppid == parent && i.argv == argv && argv.len() > 1)
                })
                .collect();
            if let Some(k) = kids.first() {
                return Some(*k);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn a_forked_child_with_its_parents_command_line_is_not_a_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = dir.path().join("telepresence");
        // A Python "Telepresence" that forks and does not exec: the child keeps the
        // parent's command line, as a real one's children do until they exec kubectl.
        std::fs::write(
            &program,
            "#!/usr/bin/env python3\nimport os, time\nos.fork()\ntime.sleep(30)\n",
        )
        .expect("script written");
        let Ok(mut child) = std::process::Command::new("python3")
            .arg(&program)
            .args(["--swap-deployment", "app"])
            .spawn()
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is required in CI"
            );
            return;
        };
        let parent = child.id();
        let forked = fork_of(parent);
        let d = Discovery::new(std::slice::from_ref(&program));
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = d.examine(parent);
        while seen.is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
            seen = d.examine(parent);
        }
        let forked_seen = forked.map(|f| d.examine(f).is_some());
        // Clean up before asserting: only the processes this test started, by pid.
        if let Some(f) = forked {
            let _ = std::process::Command::new("kill")
                .arg(f.to_string())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.is_some(), "the session itself is found");
        assert_eq!(
            forked_seen,
            Some(false),
            "its forked child is not a session"
        );
    }

    #[test]
    fn other_programs_and_other_paths_are_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let watched = dir.path().join("telepresence");
        std::fs::write(&watched, "#!/usr/bin/env python3\n").expect("written");
        let d = Discovery::new(std::slice::from_ref(&watched));
        // This test process is not Telepresence.
        assert!(d.examine(std::process::id()).is_none());
    }
}
