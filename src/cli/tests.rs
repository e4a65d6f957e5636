use super::*;

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn doctor_takes_a_context_a_namespace_a_timeout_and_json() {
    let cli = Cli::try_parse_from([
        "telepolice-agent",
        "doctor",
        "--context",
        "dev",
        "-n",
        "team",
        "--timeout",
        "2.5",
        "--json",
    ])
    .expect("parses");
    let Command::Doctor(args) = cli.command else {
        panic!("not doctor: {:?}", cli.command)
    };
    assert_eq!(args.context.as_deref(), Some("dev"));
    assert_eq!(args.namespace.as_deref(), Some("team"));
    assert_eq!(args.timeout, std::time::Duration::from_millis(2500));
    assert!(args.json);
    let Command::Doctor(args) = Cli::try_parse_from(["telepolice-agent", "doctor"])
        .expect("parses")
        .command
    else {
        panic!("not doctor")
    };
    assert_eq!(args.timeout, std::time::Duration::from_secs(5));
    for bad in ["0", "-1", "soon", "NaN"] {
        assert!(
            Cli::try_parse_from(["telepolice-agent", "doctor", "--timeout", bad]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn service_commands_parse() {
    let cli = Cli::try_parse_from(["telepolice-agent", "install", "--dry-run"]).expect("ok");
    assert!(matches!(
        cli.command,
        Command::Install {
            dry_run: true,
            binary: None
        }
    ));
    let cli =
        Cli::try_parse_from(["telepolice-agent", "service-files", "--canonical"]).expect("parses");
    assert!(matches!(
        cli.command,
        Command::ServiceFiles {
            canonical: true,
            ..
        }
    ));
    assert!(
        Cli::try_parse_from([
            "telepolice-agent",
            "service-files",
            "--canonical",
            "--binary",
            "/x"
        ])
        .is_err(),
        "a canonical copy names its own binary"
    );
}

#[test]
fn run_takes_dry_run() {
    let cli = Cli::try_parse_from(["telepolice-agent", "run", "--dry-run"]).expect("parses");
    assert!(matches!(
        cli.command,
        Command::Run {
            dry_run: true,
            json_logs: false
        }
    ));
}
