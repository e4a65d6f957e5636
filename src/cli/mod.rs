//! The command line: parsing (pure, with clap) and what each command does.

pub mod doctor;
pub mod manual;
pub mod status;
pub mod sweep;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, Paths};
use crate::daemon::waiting::Waiting;
use crate::effects::journal::Journal;
use crate::session::SessionRecord;

/// Puts a Kubernetes cluster back after a Telepresence session dies without cleaning up.
#[derive(Debug, Parser)]
#[command(
    name = "telepolice-agent",
    version,
    about,
    long_about = None,
    after_help = "For packagers: `service-files`, `completions <shell>` and `man` print the unit and plist, the shell completions and the man page (see packaging/README.md)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (a service manager supervises it).
    Run {
        /// Plan and report repairs without carrying them out.
        #[arg(long)]
        dry_run: bool,
        /// Log JSON lines (as `log_format = "json"`).
        #[arg(long)]
        json_logs: bool,
    },
    /// Show the sessions that are live or need attention.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Show every session, with its history and actions.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show every session in the journal, ended ones included, with what was done.
    History {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only sessions in this state (Active, Orphaned, Cleaned, NeedsAttention, ...).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only sessions that changed within this span (30m, 2h, 3d, 1w) or since this time
        /// (RFC 3339).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only this session: its key, or Telepresence's session id (a prefix is enough).
        #[arg(long, value_name = "SESSION")]
        session: Option<String>,
    },
    /// Show the configuration in effect, or print a commented default config file.
    Config {
        /// Print the default `config.toml`, every key explained (redirect it to the file).
        #[arg(long)]
        default: bool,
    },
    /// Repair a session by hand (one in NeedsAttention), with the same safety rules.
    /// `cleanup` is its older name, still accepted.
    #[command(alias = "cleanup")]
    Repair {
        /// The session: its key from `status`, or Telepresence's session id.
        session: String,
        /// Plan and report without acting.
        #[arg(long)]
        dry_run: bool,
        /// The original replica count to restore, when the agent could not learn it.
        #[arg(long)]
        replicas: Option<i32>,
    },
    /// Check that the agent can do its work here: config, kubeconfig, each cluster's
    /// reachability and permissions, Telepresence, the daemon, the service, the journal.
    /// Exits 1 when a check fails (warnings alone exit 0).
    Doctor(DoctorArgs),
    /// Print the systemd user unit and the launchd plist (or write them into a directory).
    #[command(hide = true)]
    ServiceFiles {
        /// Write `DIR/systemd/telepolice-agent.service` and
        /// `DIR/launchd/dev.telepolice.agent.plist` instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The binary the service starts (default: this one).
        #[arg(long, value_name = "PATH", conflicts_with = "canonical")]
        binary: Option<PathBuf>,
        /// The copies committed in the repository: the unit for
        /// ~/.cargo/bin/telepolice-agent, the plist for /usr/local/bin/telepolice-agent
        /// and a home of /Users/example.
        #[arg(long)]
        canonical: bool,
    },
    /// Install the agent as a user service (systemd on Linux, launchd on macOS) and start it.
    Install {
        /// Print every step without taking any, even where the service manager cannot be
        /// reached, then why the install would fail here (exit 1), if it would.
        #[arg(long)]
        dry_run: bool,
        /// The binary the service starts (default: this one).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// Stop the user service and remove it (the journal, logs and config are kept).
    Uninstall {
        /// Print the steps without taking them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the in-cluster sweeper (team mode), as the Deployment in packaging/kubernetes
    /// does: repair the sessions whose laptop's heartbeat stopped for the grace.
    Sweep(sweep::SweepArgs),
    /// Print a shell completion script (the packages install the bash, zsh and fish ones).
    #[command(hide = true)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff: `telepolice-agent man | man -l -` shows it).
    #[command(hide = true)]
    Man,
}

/// `doctor`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Check only this kube context.
    #[arg(long)]
    pub context: Option<String>,
    /// Check permissions in this namespace (default: the config's `namespaces`, else each
    /// context's namespace).
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// Seconds to wait for each cluster and each Telepresence program.
    #[arg(long, default_value = "5", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// A positive number of seconds, at most an hour.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => {
            Ok(std::time::Duration::from_secs_f64(v))
        }
        _ => Err(format!(
            "expected a number of seconds above 0 and at most 3600, got {s:?}"
        )),
    }
}

/// Exit codes: 0 fine, 1 the command failed, 2 bad usage or configuration, 3 already running.
fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("telepolice-agent: {msg}");
    ExitCode::from(code)
}

/// Carries out a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // Needs none of the agent's paths (a packager runs it anywhere).
    if let Command::ServiceFiles {
        out,
        binary,
        canonical,
    } = &cli.command
    {
        let render = if *canonical {
            crate::service::Render::Canonical
        } else {
            crate::service::Render::For {
                binary: binary.clone(),
            }
        };
        return service_result(crate::service::service_files(
            &render,
            out.as_deref(),
            &mut std::io::stdout().lock(),
        ));
    }
    // These need only the command definition, so they answer before the paths are resolved:
    // a package build may run them with no home directory.
    match &cli.command {
        Command::Sweep(args) => return sweep::run(args),
        Command::Completions { shell } => {
            return print(&manual::completions(Cli::command(), *shell));
        }
        Command::Man => return print_man(),
        _ => {}
    }
    let paths = match (Paths::resolve(&crate::config::env_lookup), &cli.command) {
        (Ok(p), _) => p,
        // Unresolvable paths are one of the things doctor reports, not a reason to stop.
        (Err(e), Command::Doctor(args)) => return doctor(Err(e), args),
        (Err(e), _) => return fail(2, e),
    };
    match cli.command {
        Command::Run { dry_run, json_logs } => run_daemon(paths, dry_run, json_logs),
        Command::Config { default } => show_config(paths, default),
        Command::Status { json, verbose } => show(&paths, json, verbose, None),
        Command::History {
            json,
            state,
            since,
            session,
        } => match status::HistoryFilter::parse(
            state.as_deref(),
            since.as_deref(),
            session,
            jiff::Timestamp::now(),
        ) {
            Ok(filter) => show(&paths, json, true, Some(filter)),
            Err(e) => fail(2, e),
        },
        Command::Repair {
            session,
            dry_run,
            replicas,
        } => cleanup(paths, &session, dry_run, replicas),
        Command::Doctor(args) => doctor(Ok(paths), &args),
        Command::ServiceFiles { .. } | Command::Sweep(_) => ExitCode::SUCCESS,
        Command::Install { dry_run, binary } => service_result(crate::service::install(
            dry_run,
            binary.as_deref(),
            &paths.runtime_dir,
            &mut std::io::stdout().lock(),
        )),
        Command::Uninstall { dry_run } => service_result(crate::service::uninstall(
            dry_run,
            &mut std::io::stdout().lock(),
        )),
        Command::Completions { shell } => print(&manual::completions(Cli::command(), shell)),
        Command::Man => print_man(),
    }
}

/// `run`: the daemon, in the foreground, until SIGTERM or SIGINT.
fn run_daemon(paths: Paths, dry_run: bool, json_logs: bool) -> ExitCode {
    let reload_paths = paths.clone();
    let mut cfg = match Config::load(paths) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    cfg.dry_run |= dry_run;
    crate::platform::private_umask();
    if json_logs {
        cfg.log_format = crate::config::LogFormat::Json;
    }
    let (_log_guard, log_problem) = crate::logging::init(&crate::logging::Settings {
        dir: &cfg.paths.log_dir,
        level: &cfg.log_level,
        format: cfg.log_format,
        keep_files: usize::try_from(cfg.log_retention_days).unwrap_or(usize::MAX),
    });
    if let Some(p) = log_problem {
        tracing::warn!("{p}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("starting the runtime: {e}")),
    };
    let (shutdown, hangups) = {
        let _in_runtime = rt.enter();
        (
            crate::signals::unix::shutdown(),
            crate::signals::unix::hangups(),
        )
    };
    let reload = hangups.map(|hangups| crate::daemon::Reload {
        hangups,
        load: Box::new(move || {
            Config::load(reload_paths.clone()).map(|mut c| {
                c.dry_run |= dry_run;
                if json_logs {
                    c.log_format = crate::config::LogFormat::Json;
                }
                c
            })
        }),
    });
    match rt.block_on(crate::daemon::run(cfg, shutdown, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        // launchd restarts an agent that exits non-zero, every 10 s, forever: when
        // it started this one, another agent already doing the work is no failure.
        Err(e @ crate::daemon::DaemonError::AlreadyRunning { .. })
            if std::env::var("XPC_SERVICE_NAME").as_deref()
                == Ok(crate::service::LAUNCHD_LABEL) =>
        {
            eprintln!("telepolice-agent: {e}; leaving the work to it");
            ExitCode::SUCCESS
        }
        Err(e @ crate::daemon::DaemonError::AlreadyRunning { .. }) => fail(3, e),
        Err(e) => fail(1, e),
    }
}

fn doctor(paths: Result<Paths, crate::config::ConfigError>, args: &DoctorArgs) -> ExitCode {
    let opts = crate::cli::doctor::Options {
        context: args.context.clone(),
        namespace: args.namespace.clone(),
        timeout: args.timeout,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("starting the runtime: {e}")),
    };
    let env = crate::cli::doctor::Environment::current();
    let report = rt.block_on(crate::cli::doctor::run(paths, &env, &opts));
    // The runtime may hold a Telepresence `--version` that timed out: do not wait for it.
    rt.shutdown_background();
    let text = if args.json {
        serde_json::to_string_pretty(&report.to_json()).unwrap_or_default() + "\n"
    } else {
        report.render()
    };
    print_then(&text, ExitCode::from(report.exit_code()))
}

/// Exit codes of the service commands: a path that cannot be used is bad usage (2), a
/// closed output pipe is fine, anything else failed (1).
fn service_result(result: crate::service::Result<()>) -> ExitCode {
    use crate::service::ServiceError;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServiceError::Output { source }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(
            e @ (ServiceError::UnusablePath { .. }
            | ServiceError::BinaryMissing { .. }
            | ServiceError::UnknownManager { .. }),
        ) => fail(2, e),
        Err(e) => fail(1, e),
    }
}

fn print_man() -> ExitCode {
    match manual::man_page(Cli::command()) {
        Ok(page) => print(&page),
        Err(e) => fail(1, e),
    }
}

fn cleanup(paths: Paths, session: &str, dry_run: bool, replicas: Option<i32>) -> ExitCode {
    let mut cfg = match Config::load(paths) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    cfg.dry_run |= dry_run;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("starting the runtime: {e}")),
    };
    match rt.block_on(crate::daemon::cleanup(cfg, session, replicas)) {
        Ok(rec) => {
            let repaired = rec.state == crate::session::State::Cleaned
                || rec.state == crate::session::State::Ended;
            print_then(
                &status::detail(&rec, None),
                if repaired {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                },
            )
        }
        Err(e) => fail(1, e),
    }
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> ExitCode {
    print_then(text, ExitCode::SUCCESS)
}

/// Writes `text` to stdout, then exits with `code`; a closed pipe (`| head`) still exits
/// with `code`, any other write error with 1.
fn print_then(text: &str, code: ExitCode) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => fail(1, e),
    }
}

fn show_config(paths: Paths, default: bool) -> ExitCode {
    if default {
        return print(crate::config::DEFAULT_FILE);
    }
    let file = paths.config_file.display().to_string();
    let exists = paths.config_file.exists();
    match Config::load(paths) {
        Ok(cfg) => print(&format!(
            "# {file}{}\n{}",
            if exists {
                ""
            } else {
                " does not exist: these are the defaults (`telepolice-agent config --default` prints a commented file)"
            },
            cfg.effective()
        )),
        Err(e) => fail(2, e),
    }
}

/// `status` (`history` is `None`) or `history` with its filter.
/// What `status` and `history` show: the running daemon's answer, or the journal.
struct Snapshot {
    running: bool,
    records: Vec<SessionRecord>,
    problems: Vec<String>,
    waiting: HashMap<String, Waiting>,
    unfollowed: Vec<crate::daemon::unfollowed::Unfollowed>,
    sight: crate::daemon::unfollowed::Sight,
    /// What a killed Telepresence 2 left on this laptop (read here, not by the daemon).
    leftovers: Vec<crate::effects::local2::Leftover>,
}

impl Snapshot {
    /// The running daemon answers over its socket; without one, the journal is read here.
    fn take(paths: &Paths) -> Result<Self, ExitCode> {
        if let Some(doc) = crate::daemon::control::ask_status(&paths.runtime_dir) {
            let field = |k: &str| doc[k].clone();
            return Ok(Self {
                running: true,
                records: serde_json::from_value(field("sessions")).unwrap_or_default(),
                problems: serde_json::from_value(field("journal_problems")).unwrap_or_default(),
                waiting: serde_json::from_value(field("waiting")).unwrap_or_default(),
                unfollowed: serde_json::from_value(field("unfollowed")).unwrap_or_default(),
                sight: serde_json::from_value(field("sight")).unwrap_or_default(),
                leftovers: local_leftovers(),
            });
        }
        let journal = Journal::open(&paths.state_dir).map_err(|e| fail(1, e))?;
        let (records, problems) = journal.load_all().map_err(|e| fail(1, e))?;
        let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        problems.extend(journal.quarantine_warning());
        Ok(Self {
            running: false,
            records,
            problems,
            waiting: HashMap::new(),
            unfollowed: Vec::new(),
            sight: Default::default(),
            leftovers: local_leftovers(),
        })
    }
}

fn local_leftovers() -> Vec<crate::effects::local2::Leftover> {
    crate::effects::local2::leftovers(
        &crate::effects::local2::Paths::telepresence(),
        crate::platform::current_uid(),
    )
}

fn show(
    paths: &Paths,
    json: bool,
    verbose: bool,
    history: Option<status::HistoryFilter>,
) -> ExitCode {
    let snap = match Snapshot::take(paths) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let shown: Vec<_> = snap
        .records
        .iter()
        .filter(|r| match &history {
            Some(f) => f.keeps(r),
            None => verbose || status::is_current(r),
        })
        .collect();
    let text = if json {
        let v = serde_json::json!({
            "daemon_running": snap.running,
            "sessions": shown,
            "waiting": snap.waiting,
            "unfollowed": snap.unfollowed,
            "sight": snap.sight,
            "journal_problems": snap.problems,
            "telepresence2_leftovers": snap.leftovers.iter().map(|l| serde_json::json!({
                "what": l.what, "command": l.command,
            })).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        render_text(&snap, &shown, verbose, history.as_ref())
    };
    print(&text)
}

/// `status` and `history` for a person.
fn render_text(
    snap: &Snapshot,
    shown: &[&SessionRecord],
    verbose: bool,
    history: Option<&status::HistoryFilter>,
) -> String {
    let all = history.is_some();
    let mut t = String::new();
    if !snap.running {
        t.push_str("telepolice-agent is not running (start it with `telepolice-agent run`); showing the journal.\n");
    }
    for p in snap.problems.iter().chain(&snap.sight.problem) {
        t.push_str(&format!("warning: {p}\n"));
    }
    if shown.is_empty() {
        t.push_str(
            if history.is_some_and(|f| *f != status::HistoryFilter::default()) {
                "no session in the journal matches\n"
            } else if all {
                "no sessions in the journal\n"
            } else {
                "no live sessions and none needing attention\n"
            },
        );
    } else if verbose {
        for r in shown {
            t.push_str(&status::detail(r, snap.waiting.get(&r.key)));
        }
    } else {
        t.push_str(&status::table(shown, &snap.waiting));
    }
    if !all && !verbose {
        t.push_str(&status::recent_repairs(
            &snap.records,
            jiff::Timestamp::now(),
        ));
    }
    if verbose {
        t.push_str(&crate::daemon::unfollowed::render(&snap.unfollowed));
    } else if !snap.unfollowed.is_empty() {
        t.push_str(&format!(
            "{} Telepresence process(es) not followed or followed half-blind: see `telepolice-agent status -v`\n",
            snap.unfollowed.len()
        ));
    }
    if history.is_none() {
        for l in &snap.leftovers {
            t.push_str(&format!(
                "telepresence 2: {}; run `{}`\n",
                l.what, l.command
            ));
        }
    }
    t
}

#[cfg(test)]
mod tests;
