//! `telepolice-agent sweep`: the in-cluster sweeper's command line (see [`crate::sweep`]).
//! It needs none of the laptop's paths: in a container there is no home directory.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::sweep::{self, Options};
use crate::team::election::Timing;

/// `sweep`'s flags; each falls back to the environment variable named in its help.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Minutes a session's heartbeat must stay unchanged (as this sweeper sees it) before
    /// the session is repaired [env TELEPOLICE_SWEEP_GRACE_MINUTES; default 30].
    #[arg(long, value_name = "MINUTES")]
    pub grace_minutes: Option<f64>,
    /// Sweep only this namespace (the one-namespace install) [env TELEPOLICE_SWEEP_NAMESPACE;
    /// default: every namespace].
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The namespace of the leader-election Lease [env POD_NAMESPACE; default: the service
    /// account's namespace].
    #[arg(long, value_name = "NS")]
    pub election_namespace: Option<String>,
    /// The leader-election Lease's name.
    #[arg(long, value_name = "NAME", default_value = "telepolice-sweeper")]
    pub election_lease: String,
    /// This replica's identity in the Leases [env POD_NAME; default: host name and pid].
    #[arg(long, value_name = "ID")]
    pub identity: Option<String>,
    /// Plan and report (as Events and in /status) without repairing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where /healthz, /readyz and /status are served.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Seconds a candidate waits after the leader's last renew before taking over.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub leader_elect_lease_duration: f64,
    /// Seconds a leader keeps acting without a successful renew (less than the duration).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub leader_elect_renew_deadline: f64,
    /// Seconds between election tries.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub leader_elect_retry_period: f64,
    /// Log JSON lines.
    #[arg(long)]
    pub json_logs: bool,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

fn secs(v: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{flag} must be a positive number of seconds, not {v}"))
}

/// Resolves the flags and the environment into [`Options`]; `default_ns` is the client's
/// (the service account's) namespace.
pub fn options(a: &SweepArgs, default_ns: &str) -> Result<Options, String> {
    let grace_minutes = match (a.grace_minutes, env("TELEPOLICE_SWEEP_GRACE_MINUTES")) {
        (Some(m), _) => m,
        (None, Some(v)) => v.trim().parse::<f64>().map_err(|_| {
            format!("TELEPOLICE_SWEEP_GRACE_MINUTES is {v:?}, not a number of minutes")
        })?,
        (None, None) => 30.0,
    };
    let grace = Duration::try_from_secs_f64(grace_minutes * 60.0)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!("the grace must be a positive number of minutes, not {grace_minutes}")
        })?;
    let timing = Timing {
        lease_duration: secs(a.leader_elect_lease_duration, "leader-elect-lease-duration")?,
        renew_deadline: secs(a.leader_elect_renew_deadline, "leader-elect-renew-deadline")?,
        retry_period: secs(a.leader_elect_retry_period, "leader-elect-retry-period")?,
    };
    if timing.renew_deadline >= timing.lease_duration {
        return Err("--leader-elect-renew-deadline must be less than --leader-elect-lease-duration: a leader must stop acting before another may start".to_string());
    }
    let identity = a
        .identity
        .clone()
        .or_else(|| env("POD_NAME"))
        .unwrap_or_else(|| format!("{}_{}", crate::platform::hostname(), std::process::id()));
    Ok(Options {
        grace,
        namespace: a
            .namespace
            .clone()
            .or_else(|| env("TELEPOLICE_SWEEP_NAMESPACE")),
        election_namespace: a
            .election_namespace
            .clone()
            .or_else(|| env("POD_NAMESPACE"))
            .unwrap_or_else(|| default_ns.to_string()),
        election_name: a.election_lease.clone(),
        identity: format!("sweeper/{identity}"),
        dry_run: a.dry_run,
        listen: a.listen,
        timing,
    })
}

/// Runs `sweep`.
pub fn run(a: &SweepArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELEPOLICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A pod's log is a file: colour codes only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if a.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(1, format!("starting the runtime: {e}")),
    };
    rt.block_on(async {
        let (client, ns) = match sweep::client().await {
            Ok(c) => c,
            Err(e) => return super::fail(2, e),
        };
        let opts = match options(a, &ns) {
            Ok(o) => o,
            Err(e) => return super::fail(2, e),
        };
        match sweep::run(client, opts, crate::signals::unix::shutdown()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(1, e),
        }
    })
}
