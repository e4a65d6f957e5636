//! The local helpers a dead Telepresence 0.x session leaves running: `kubectl logs -f` and
//! `kubectl port-forward` of its proxy pod, the `ssh` tunnels and `sshfs` mount over that
//! port-forward, and its `tel-*` temp dir. Only processes proven to belong to the session
//! are stopped: same user, started after the session, and either naming its proxy pod or
//! session id on their command line, or connecting to the local port of its port-forward.

use std::path::{Path, PathBuf};

use crate::platform::{self, ProcessInfo, Signal};

/// A helper process found, and why it is the session's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// The process.
    pub info: ProcessInfo,
    /// What ties it to the session.
    pub because: String,
}

/// The local port of a `kubectl port-forward <pod> <P>:8022` command line.
fn forwarded_port(argv: &[String], pod: &str) -> Option<String> {
    let i = argv.iter().position(|a| a == "port-forward")?;
    if argv.get(i + 1).map(String::as_str) != Some(pod) {
        return None;
    }
    let spec = argv.get(i + 2)?;
    let (local, remote) = spec.split_once(':')?;
    (remote == "8022" && local.bytes().all(|b| b.is_ascii_digit())).then(|| local.to_string())
}

fn program_name(argv: &[String]) -> &str {
    argv.first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("")
}

/// Picks the session's helpers out of `candidates` (pure, for tests): processes of `uid`
/// that started no earlier than the session (`min_start_ticks`) and that are a kubectl
/// naming `pod`, any command line naming `session_id` or `tmp_dir`, or an ssh/sshfs to
/// `telepresence@127.0.0.1` on the port-forward's local port.
pub fn select(
    candidates: &[ProcessInfo],
    uid: u32,
    min_start_ticks: u64,
    scope: Option<(&str, &str)>,
    pod: Option<&str>,
    session_id: Option<&str>,
    tmp_dir: Option<&Path>,
) -> Vec<Helper> {
    // A pod name can be chosen by the user (`--new-deployment dev`), so naming it is not
    // enough for a kubectl: it must also be a session leader (Telepresence starts its
    // helpers in their own session; a kubectl typed in a terminal is in the shell's) and
    // carry the session's own `--context C --namespace N`.
    let is_session_helper = |p: &ProcessInfo| {
        let flag = |f: &str, v: &str| p.argv.windows(2).any(|w| w[0] == f && w[1] == v);
        p.session == p.id.pid
            && scope.is_some_and(|(ctx, ns)| flag("--context", ctx) && flag("--namespace", ns))
    };
    let eligible: Vec<&ProcessInfo> = candidates
        .iter()
        .filter(|p| p.uid == uid && p.id.start_ticks >= min_start_ticks)
        .collect();
    let ports: Vec<String> = match pod {
        Some(pod) => eligible
            .iter()
            .filter(|p| is_session_helper(p))
            .filter_map(|p| forwarded_port(&p.argv, pod))
            .collect(),
        None => Vec::new(),
    };
    let tmp = tmp_dir.map(|t| t.to_string_lossy().into_owned());
    let mut out = Vec::new();
    for p in eligible {
        let argv = &p.argv;
        let name = program_name(argv);
        let because = if name == "kubectl"
            && pod.is_some_and(|pod| argv.iter().any(|a| a == pod))
            && is_session_helper(p)
        {
            Some(format!(
                "kubectl naming proxy pod {}",
                pod.unwrap_or_default()
            ))
        } else if session_id.is_some_and(|id| argv.iter().any(|a| a.contains(id))) {
            Some("command line names the session id".to_string())
        } else if tmp
            .as_ref()
            .is_some_and(|t| argv.iter().any(|a| a.starts_with(t.as_str())))
        {
            Some("command line names the session's temp dir".to_string())
        } else if matches!(name, "ssh" | "sshfs")
            && argv.iter().any(|a| a.starts_with("telepresence@127.0.0.1"))
            && argv
                .windows(2)
                .any(|w| w[0] == "-p" && ports.contains(&w[1]))
        {
            Some("ssh to the session's port-forward".to_string())
        } else {
            None
        };
        if let Some(because) = because {
            out.push(Helper {
                info: p.clone(),
                because,
            });
        }
    }
    out
}

/// Finds the session's helpers among the running processes.
pub fn find(
    uid: u32,
    min_start_ticks: u64,
    scope: Option<(&str, &str)>,
    pod: Option<&str>,
    session_id: Option<&str>,
    tmp_dir: Option<&Path>,
) -> Vec<Helper> {
    // In a test run, only that test's processes: tests run side by side on one machine,
    // with the same user, context and namespace names.
    let procs: Vec<ProcessInfo> = platform::list_pids()
        .unwrap_or_default()
        .into_iter()
        .filter(|pid| super::local2::same_test(*pid))
        .filter_map(|pid| platform::process_info(pid).ok())
        .collect();
    select(
        &procs,
        uid,
        min_start_ticks,
        scope,
        pod,
        session_id,
        tmp_dir,
    )
}

/// Stops a helper with SIGTERM, only if it is still the same process. Returns whether it
/// was signalled (false: it was already gone).
pub fn stop(h: &Helper) -> Result<bool, platform::PlatformError> {
    platform::signal(h.info.id, Signal::Term)
}

/// The session's `tel-*` dir under `tmp_root`: owned by `uid`, a real directory (not a
/// symlink), holding `session_id.txt` with exactly `id`.
pub fn session_dir(tmp_root: &Path, uid: u32, id: &str) -> Option<PathBuf> {
    find_session_dirs(tmp_root, uid)
        .into_iter()
        .find(|(_, found)| found == id)
        .map(|(p, _)| p)
}

/// Every `tel-*` dir under `tmp_root` owned by `uid` with a valid session id, and that id.
pub fn find_session_dirs(tmp_root: &Path, uid: u32) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(tmp_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        if !e.file_name().to_string_lossy().starts_with("tel-") {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || owner(&meta) != Some(uid) {
            continue;
        }
        let file = path.join("session_id.txt");
        let Ok(fmeta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        if !fmeta.is_file() || owner(&fmeta) != Some(uid) || fmeta.len() > 64 {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let id = text.trim().to_string();
        if crate::telepresence::is_session_id(&id) {
            out.push((path, id));
        }
    }
    out
}

/// Whether `dir/fs` (where Telepresence mounts the pod's filesystem with sshfs) is on
/// another device than `dir`: a mount still in place, which removing the dir would descend
/// into.
#[cfg(unix)]
pub fn has_mount_inside(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::symlink_metadata(dir),
        std::fs::symlink_metadata(dir.join("fs")),
    ) {
        (Ok(d), Ok(f)) => f.is_dir() && d.dev() != f.dev(),
        // `fs` unreadable (a dead FUSE mount answers ENOTCONN): treat it as mounted.
        (Ok(_), Err(e)) => e.kind() != std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Without device numbers, a mount cannot be told apart: assume one.
#[cfg(not(unix))]
pub fn has_mount_inside(_dir: &Path) -> bool {
    true
}

#[cfg(unix)]
fn owner(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.uid())
}

#[cfg(not(unix))]
fn owner(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::ProcessId;

    fn proc(pid: u32, start: u64, uid: u32, argv: &[&str]) -> ProcessInfo {
        ProcessInfo {
            id: ProcessId {
                pid,
                start_ticks: start,
            },
            ppid: 1,
            uid,
            session: pid,
            tty_nr: 0,
            comm: argv[0].to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            exe: None,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_sessions_helpers_are_selected() {
        let pod = format!("app-{ID}");
        let procs = vec![
            proc(
                10,
                500,
                1000,
                &[
                    "kubectl",
                    "--context",
                    "c",
                    "--namespace",
                    "n",
                    "logs",
                    "-f",
                    &pod,
                    "--container",
                    "app",
                    "--tail=10",
                ],
            ),
            proc(
                11,
                500,
                1000,
                &[
                    "kubectl",
                    "--context",
                    "c",
                    "--namespace",
                    "n",
                    "port-forward",
                    &pod,
                    "41000:8022",
                ],
            ),
            proc(
                12,
                500,
                1000,
                &[
                    "ssh",
                    "-F",
                    "/dev/null",
                    "-q",
                    "-p",
                    "41000",
                    "telepresence@127.0.0.1",
                    "-N",
                    "-R9055:127.0.0.1:40000",
                ],
            ),
            proc(
                13,
                500,
                1000,
                &[
                    "sshfs",
                    "-p",
                    "41000",
                    "telepresence@127.0.0.1:/",
                    "/tmp/tel-abc/fs",
                ],
            ),
            // Another session's tunnel on another port.
            proc(
                14,
                500,
                1000,
                &["ssh", "-p", "42000", "telepresence@127.0.0.1", "-N"],
            ),
            // Another user's kubectl naming the same pod.
            proc(15, 500, 1001, &["kubectl", "logs", "-f", &pod]),
            // Started before the session.
            proc(16, 10, 1000, &["kubectl", "logs", "-f", &pod]),
            // An unrelated kubectl.
            proc(17, 500, 1000, &["kubectl", "get", "pods", "-w"]),
        ];
        let got: Vec<u32> = select(
            &procs,
            1000,
            400,
            Some(("c", "n")),
            Some(&pod),
            Some(ID),
            Some(Path::new("/tmp/tel-abc")),
        )
        .into_iter()
        .map(|h| h.info.id.pid)
        .collect();
        assert_eq!(got, [10, 11, 12, 13]);
    }

    #[test]
    fn a_user_chosen_pod_name_alone_does_not_tie_a_kubectl() {
        // `--new-deployment dev`: the pod is named `dev`, a word the user may type anywhere.
        let procs = vec![
            proc(
                30,
                500,
                1000,
                &[
                    "kubectl",
                    "--context",
                    "c",
                    "--namespace",
                    "n",
                    "port-forward",
                    "dev",
                    "41000:8022",
                ],
            ),
            proc(
                31,
                500,
                1000,
                &["ssh", "-p", "41000", "telepresence@127.0.0.1", "-N"],
            ),
            // The user's own kubectl in a terminal (the shell's session), same context.
            ProcessInfo {
                session: 1,
                ..proc(
                    32,
                    500,
                    1000,
                    &[
                        "kubectl",
                        "--context",
                        "c",
                        "--namespace",
                        "n",
                        "logs",
                        "-f",
                        "dev",
                    ],
                )
            },
            // A session leader naming `dev` as a context, not the pod.
            proc(
                33,
                500,
                1000,
                &["kubectl", "--context", "dev", "get", "pods", "-w"],
            ),
            // A session leader on another context.
            proc(
                34,
                500,
                1000,
                &[
                    "kubectl",
                    "--context",
                    "other",
                    "--namespace",
                    "n",
                    "logs",
                    "-f",
                    "dev",
                ],
            ),
        ];
        let got: Vec<u32> = select(
            &procs,
            1000,
            0,
            Some(("c", "n")),
            Some("dev"),
            Some(ID),
            None,
        )
        .into_iter()
        .map(|h| h.info.id.pid)
        .collect();
        assert_eq!(got, [30, 31]);
    }

    #[test]
    fn without_a_pod_only_the_id_or_temp_dir_ties_a_process() {
        let procs = vec![
            proc(
                20,
                500,
                1000,
                &["ssh", "-p", "41000", "telepresence@127.0.0.1"],
            ),
            proc(
                21,
                500,
                1000,
                &[
                    "docker",
                    "run",
                    "--name",
                    "x",
                    &format!("-eTELEPRESENCE_SESSION={ID}"),
                ],
            ),
        ];
        let got: Vec<u32> = select(&procs, 1000, 0, None, None, Some(ID), None)
            .into_iter()
            .map(|h| h.info.id.pid)
            .collect();
        assert_eq!(got, [21]);
    }

    #[test]
    fn session_dirs_must_be_real_owned_dirs_with_a_valid_id() {
        let root = tempfile::tempdir().expect("temp dir");
        let uid = platform::current_uid();
        let good = root.path().join("tel-good");
        std::fs::create_dir(&good).expect("dir");
        std::fs::write(good.join("session_id.txt"), ID).expect("id");
        let bad = root.path().join("tel-bad");
        std::fs::create_dir(&bad).expect("dir");
        std::fs::write(bad.join("session_id.txt"), "not-an-id").expect("id");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&good, root.path().join("tel-link")).expect("symlink");
        let found = find_session_dirs(root.path(), uid);
        assert_eq!(found, vec![(good.clone(), ID.to_string())]);
        assert_eq!(session_dir(root.path(), uid, ID), Some(good));
        assert_eq!(session_dir(root.path(), uid + 1, ID), None);
    }
}

/// Whether a Docker container name is the one Telepresence's container method gives the
/// session with process `pid` started at `start_secs` (Unix seconds):
/// `telepresence-<unix time, dots as dashes>-<pid>`, with that time no earlier than the
/// session's start (5 s of slack) and the pid its own.
pub fn container_matches(name: &str, pid: u32, start_secs: u64) -> bool {
    let name = name.trim_start_matches('/');
    let Some(rest) = name.strip_prefix("telepresence-") else {
        return false;
    };
    let Some((time, tail_pid)) = rest.rsplit_once('-') else {
        return false;
    };
    if tail_pid != pid.to_string() {
        return false;
    }
    let secs = time.split('-').next().and_then(|s| s.parse::<u64>().ok());
    // Subtracting from the start rather than adding to the name's time: the name is
    // anyone's text, and `u64::MAX + 5` overflows.
    secs.is_some_and(|t| t >= start_secs.saturating_sub(5))
}

/// The session's containers (id, name), from `docker ps`. Empty when Docker is not there
/// or does not answer: nothing to stop then.
pub fn find_containers(pid: u32, start_secs: u64) -> Vec<(String, String)> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            "name=telepresence-",
            "--format",
            "{{.ID}} {{.Names}}",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, name)| container_matches(name, pid, start_secs))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

/// Stops a container (`docker stop`); returns the outcome for the journal.
pub fn stop_container(id: &str) -> String {
    match std::process::Command::new("docker")
        .args(["stop", id])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => "done".to_string(),
        Ok(o) => format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("failed: {e}"),
    }
}

#[cfg(test)]
mod container_tests {
    use super::container_matches;

    #[test]
    fn only_the_sessions_container_name_matches() {
        let start = 1_764_000_000;
        assert!(container_matches(
            "telepresence-1764000001-123456-4242",
            4242,
            start
        ));
        assert!(container_matches(
            "/telepresence-1764000000-4242",
            4242,
            start
        ));
        // Another session's pid, an older container, a look-alike.
        assert!(!container_matches(
            "telepresence-1764000001-123456-4243",
            4242,
            start
        ));
        assert!(!container_matches(
            "telepresence-1763990000-1-4242",
            4242,
            start
        ));
        assert!(!container_matches(
            "my-telepresence-1764000001-4242",
            4242,
            start
        ));
        assert!(!container_matches("telepresence-x-4242", 4242, start));
    }

    /// Found by `fuzz::processes::container_names`: a time of `u64::MAX` in the name made
    /// the slack addition overflow (a panic in debug builds, a wrong "no" in release).
    #[test]
    fn a_time_at_the_top_of_u64_is_later_not_an_overflow() {
        let name = "telepresence-18446744073709551615-583341-2977557";
        assert!(container_matches(
            name,
            2_977_557,
            18_446_744_073_709_551_609
        ));
        assert!(container_matches(name, 2_977_557, 1_764_000_000));
        assert!(!container_matches(name, 2_977_556, 1_764_000_000));
        // Within the 5 s of slack at the bottom of the range too.
        assert!(container_matches("telepresence-0-1", 1, 5));
        assert!(!container_matches("telepresence-0-1", 1, 6));
    }
}
