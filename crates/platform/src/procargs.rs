//! Another process's command line, environment and working directory through `sysinfo`: on
//! macOS it reads them with `sysctl(KERN_PROCARGS2)` and `proc_pidinfo`, which a user may
//! do for their own processes, so the agent sees each session's own `KUBECONFIG`, `HOME`,
//! `PATH` and working directory (kubie, direnv and per-shell exports included) instead of
//! its own. Built on macOS, and for the tests on Linux, where sysinfo reads `/proc`.
//!
//! # Caveats
//! sysinfo answers nothing (rather than an error) for a process it may not read, a zombie,
//! or one that is gone: [`read`] then says so in the error.

use std::ffi::OsString;
use std::path::PathBuf;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

/// What [`read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcArgs {
    /// The command line, argument by argument (not split at whitespace, as `ps` does).
    pub argv: Vec<String>,
    /// The environment, as (name, value).
    pub environ: Vec<(String, String)>,
    /// The working directory, when readable.
    pub cwd: Option<PathBuf>,
}

/// Reads the command line, environment and working directory of `pid`.
///
/// # Errors
/// A sentence saying what could not be read, for the caller's error.
pub(crate) fn read(pid: u32) -> Result<ProcArgs, String> {
    let mut sys = System::new();
    let wanted = ProcessRefreshKind::nothing()
        .with_cmd(UpdateKind::Always)
        .with_environ(UpdateKind::Always)
        .with_cwd(UpdateKind::Always);
    let target = Pid::from_u32(pid);
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[target]), true, wanted);
    let p = sys
        .process(target)
        .ok_or_else(|| format!("process {pid} is gone or not readable"))?;
    if p.cmd().is_empty() && p.environ().is_empty() {
        return Err(format!(
            "process {pid}'s arguments and environment are not readable (another user's, or a zombie)"
        ));
    }
    Ok(ProcArgs {
        argv: lossy(p.cmd()),
        environ: split_environ(p.environ()),
        cwd: p.cwd().map(PathBuf::from),
    })
}

fn lossy(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// `NAME=value` entries as (name, value); an entry without `=` or with an empty name is
/// dropped (the kernel keeps whatever a process wrote there), and a value keeps any further
/// `=`. A later entry of the same name stays after the earlier one (callers collecting into
/// a map keep the last, as `getenv` implementations that search backwards do not: the
/// order is the process's own).
pub(crate) fn split_environ(entries: &[OsString]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|e| {
            let e = e.to_string_lossy();
            let (name, value) = e.split_once('=')?;
            (!name.is_empty()).then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_entries_split_at_the_first_equals_sign() {
        let entries: Vec<OsString> = [
            "KUBECONFIG=/home/u/.kube/a:/home/u/.kube/b",
            "EMPTY=",
            "OPTS=a=b=c",
            "garbage",
            "=novalue",
            "PATH=/usr/bin",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            split_environ(&entries),
            [
                ("KUBECONFIG", "/home/u/.kube/a:/home/u/.kube/b"),
                ("EMPTY", ""),
                ("OPTS", "a=b=c"),
                ("PATH", "/usr/bin"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_child_is_read_with_its_own_environment_arguments_and_directory() {
        let dir = std::env::temp_dir();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("TELEPOLICE_PROCARGS_TEST", "a value with spaces=and equals")
            .current_dir(&dir)
            .spawn()
            .expect("sleep starts");
        // Until exec is done, the child is still a copy of this test.
        let mut got = None;
        for _ in 0..200 {
            if let Ok(r) = read(child.id())
                && r.argv.first().is_some_and(|a| a.ends_with("sleep"))
            {
                got = Some(r);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        let got = got.expect("the child is read");
        assert_eq!(got.argv[1..], ["30".to_string()]);
        assert!(
            got.environ.contains(&(
                "TELEPOLICE_PROCARGS_TEST".to_string(),
                "a value with spaces=and equals".to_string()
            )),
            "{:?}",
            got.environ
        );
        assert_eq!(
            got.cwd.map(|c| c.canonicalize().unwrap_or(c)),
            dir.canonicalize().ok()
        );
        assert!(read(u32::MAX - 1).is_err(), "no such process");
    }
}
