//! Reading processes through `ps`, for systems without `/proc` (macOS). Compiled on every
//! Unix so that its parsing is tested here; only non-Linux systems use it.
//!
//! `ps -o pid=,ppid=,uid=,pgid=,tty=,lstart=,etime=,command=` is understood by both BSD and
//! procps `ps`. Its limits, which the callers document:
//! - `command` is one string: arguments are split at whitespace, so an argument containing a
//!   space is split too (the Telepresence program path and its flags rarely contain one);
//! - `lstart` has a one-second resolution: it identifies a process (with its pid) but cannot
//!   tell apart two processes that reused a pid within the same second;
//! - there is no session id: the process group stands in for it (Telepresence starts each
//!   helper with `setsid`, which also makes it a process group leader).

use std::process::Command;
use std::time::{Duration, SystemTime};

/// The `-o` format every caller uses.
pub(crate) const FORMAT: &str = "pid=,ppid=,uid=,pgid=,tty=,lstart=,etime=,command=";

/// One row of `ps -o FORMAT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub pgid: u32,
    /// The terminal name (`ttys001`, `pts/3`), `?` or `??` for none.
    pub tty: String,
    /// `lstart` as the number `YYYYMMDDhhmmss` (local time): stable for a process's life.
    pub start_key: u64,
    /// Seconds since the process started (`etime`).
    pub elapsed: u64,
    pub argv: Vec<String>,
}

impl Row {
    /// When the process started, from its elapsed time (to the second).
    pub fn start_time(&self) -> Option<SystemTime> {
        SystemTime::now().checked_sub(Duration::from_secs(self.elapsed))
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Wed Nov 25 20:38:40 2026` (five words) as `20261125203840`.
pub(crate) fn lstart_key(words: &[&str]) -> Option<u64> {
    let [_, month, day, time, year] = words else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: u64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((((year * 100 + month) * 100 + day) * 100 + h) * 10_000 + m * 100 + s)
}

/// `etime`: `[[dd-]hh:]mm:ss` as seconds.
pub(crate) fn parse_etime(s: &str) -> Option<u64> {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, s),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts.as_slice() {
        [m, s] => (0, *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    Some(((days * 24 + h) * 60 + m) * 60 + sec)
}

/// Parses one row of `ps -o FORMAT`.
pub(crate) fn parse_row(line: &str) -> Option<Row> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.len() < 11 {
        return None;
    }
    let num = |i: usize| words[i].parse::<u32>().ok();
    Some(Row {
        pid: num(0)?,
        ppid: num(1)?,
        uid: num(2)?,
        pgid: num(3)?,
        tty: words[4].to_string(),
        start_key: lstart_key(&words[5..10])?,
        elapsed: parse_etime(words[10])?,
        argv: words[11..].iter().map(|w| (*w).to_string()).collect(),
    })
}

/// Runs `ps` with the C locale (so that `lstart` is in English) and returns its output.
pub(crate) fn run(args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("ps")
        .args(args)
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The row of one process, if it exists.
pub(crate) fn row(pid: u32) -> std::io::Result<Option<Row>> {
    let out = run(&["-o", FORMAT, "-p", &pid.to_string()])?;
    Ok(out.lines().filter_map(parse_row).find(|r| r.pid == pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_their_start_and_command() {
        let r = parse_row(
            "  4242     1   501  4242 ttys001 Wed Nov 25 20:38:40 2026    01:02:03 /usr/bin/python3 /usr/local/bin/telepresence --swap-deployment app",
        )
        .expect("a row");
        assert_eq!((r.pid, r.ppid, r.uid, r.pgid), (4242, 1, 501, 4242));
        assert_eq!(r.tty, "ttys001");
        assert_eq!(r.start_key, 20261125203840);
        assert_eq!(r.elapsed, 3723);
        assert_eq!(
            r.argv,
            [
                "/usr/bin/python3",
                "/usr/local/bin/telepresence",
                "--swap-deployment",
                "app"
            ]
        );
        assert!(parse_row("garbage").is_none());
        assert!(parse_row("1 2 3 4 ?? Wed Foo 25 20:38:40 2026 00:01 x").is_none());
    }

    #[test]
    fn elapsed_times_in_every_form() {
        assert_eq!(parse_etime("05"), None);
        assert_eq!(parse_etime("01:05"), Some(65));
        assert_eq!(parse_etime("02:01:05"), Some(7265));
        assert_eq!(parse_etime("3-02:01:05"), Some(3 * 86400 + 7265));
        assert_eq!(parse_etime("x:01"), None);
    }

    #[test]
    fn this_systems_ps_describes_this_process() {
        // procps on Linux understands the same format as macOS's ps.
        let Ok(Some(r)) = row(std::process::id()) else {
            // No `ps` here: nothing to compare against.
            return;
        };
        assert_eq!(r.pid, std::process::id());
        assert_eq!(r.uid, rustix::process::getuid().as_raw());
        assert!(!r.argv.is_empty());
        assert!(r.start_key > 20_000_000_000_000);
        let again = row(std::process::id()).ok().flatten().expect("still here");
        assert_eq!(again.start_key, r.start_key, "the identity is stable");
    }
}
