use super::*;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn parse(s: &str) -> Result<Invocation, ArgsError> {
    parse_legacy_args(&args(s))
}

/// The invocation with no flags at all, to build expectations from.
fn plain() -> Invocation {
    Invocation::default()
}

fn swap(deployment: &str, container: Option<&str>) -> Mode {
    Mode::Swap {
        deployment: deployment.to_string(),
        container: container.map(String::from),
    }
}

fn strings(s: &str) -> Vec<String> {
    args(s)
}

#[test]
fn modes() {
    let new = |name: Option<&str>| Mode::NewDeployment {
        name: name.map(String::from),
    };
    let existing = |name: &str| Mode::ExistingDeployment {
        name: name.to_string(),
    };
    let cases = [
        ("", new(None)),
        ("--run-shell", new(None)),
        ("--swap-deployment app", swap("app", None)),
        ("--swap-deployment=app", swap("app", None)),
        ("--swap-deployment app:web", swap("app", Some("web"))),
        ("--swap-deployment=app:web", swap("app", Some("web"))),
        ("--swap-deployment app:", swap("app", None)),
        ("--swap-deployment a:b:c", swap("a", Some("b:c"))),
        ("-s app:web", swap("app", Some("web"))),
        ("-sapp", swap("app", None)),
        ("-s=app", swap("app", None)),
        ("--swap app", swap("app", None)),
        (
            "--swap-deployment one --swap-deployment two",
            swap("two", None),
        ),
        ("--new-deployment try-it", new(Some("try-it"))),
        ("--new-deployment=try-it", new(Some("try-it"))),
        ("-n try-it", new(Some("try-it"))),
        ("-ntry-it", new(Some("try-it"))),
        ("--new-deployment=", new(None)),
        ("--deployment dev-proxy", existing("dev-proxy")),
        ("--deployment=dev-proxy:web", existing("dev-proxy")),
        ("-d dev-proxy", existing("dev-proxy")),
        ("--dep dev-proxy", existing("dev-proxy")),
    ];
    for (line, want) in cases {
        let got = parse(line).map(|inv| inv.mode);
        assert_eq!(got, Ok(want), "{line:?}");
    }
}

#[test]
fn a_full_command_line() {
    let got = parse(
        "--context kind-dev --namespace=shop --swap-deployment api:web --expose 8080 \
         --expose 9000:90 --method vpn-tcp --logfile /tmp/tp.log --also-proxy 10.0.0.1 \
         --verbose --run python3 -m http.server --expose 1",
    );
    let want = Invocation {
        mode: swap("api", Some("web")),
        context: Some("kind-dev".into()),
        namespace: Some("shop".into()),
        expose: vec![(8080, 8080), (9000, 90)],
        method: Some("vpn-tcp".into()),
        logfile: Some("/tmp/tp.log".into()),
        run: Some(strings("python3 -m http.server --expose 1")),
        verbose: true,
        ..plain()
    };
    assert_eq!(got, Ok(want));
}

#[test]
fn commands() {
    let cases = [
        // Everything after --run is the user's, flags included.
        (
            "--run curl -s --swap-deployment x",
            Invocation {
                run: Some(strings("curl -s --swap-deployment x")),
                ..plain()
            },
        ),
        (
            "--run=bash -c true",
            Invocation {
                run: Some(strings("bash -c true")),
                ..plain()
            },
        ),
        (
            "--swap-deployment app --run-shell",
            Invocation {
                mode: swap("app", None),
                run_shell: true,
                ..plain()
            },
        ),
        (
            "--method container --docker-run --rm -it alpine sh",
            Invocation {
                method: Some("container".into()),
                run: Some(strings("--rm -it alpine sh")),
                docker_run: true,
                ..plain()
            },
        ),
        (
            "--docker-run=--rm alpine",
            Invocation {
                run: Some(strings("--rm alpine")),
                docker_run: true,
                ..plain()
            },
        ),
        (
            "--run-shell --run-shell",
            Invocation {
                run_shell: true,
                ..plain()
            },
        ),
        // The log file: `-` is standard output and is a value, not a flag.
        (
            "--logfile -",
            Invocation {
                logfile: Some("-".into()),
                ..plain()
            },
        ),
        (
            "--logfile=-",
            Invocation {
                logfile: Some("-".into()),
                ..plain()
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line), Ok(want), "{line:?}");
    }
}

#[test]
fn skipped_and_unknown_flags() {
    let cases = [
        ("--also-proxy 10.0.0.0/8 --also-proxy=db.example", vec![]),
        ("--mount=false --env-json env.json --local-cluster", vec![]),
        ("--from-pod 9000 --to-pod 9001 --serviceaccount sa", vec![]),
        ("--future-flag", vec!["--future-flag"]),
        ("--future-flag value", vec!["--future-flag", "value"]),
        ("--future-flag=value", vec!["--future-flag=value"]),
        ("--future-flag --verbose", vec!["--future-flag"]),
        ("-q", vec!["-q"]),
        ("-q value", vec!["-q", "value"]),
        ("-qvalue", vec!["-qvalue"]),
        ("-hv", vec!["-hv"]),
    ];
    for (line, want) in cases {
        let got = parse(line).map(|inv| inv.unknown);
        assert_eq!(got, Ok(strings(&want.join(" "))), "{line:?}");
    }
    // An unknown flag's value is not mistaken for a mode.
    let got = parse("--future swap --swap-deployment app");
    assert_eq!(got.map(|inv| inv.mode), Ok(swap("app", None)));
}

#[test]
fn expose_values() {
    let cases = [
        ("8080", Ok((8080, 8080))),
        ("8080:80", Ok((8080, 80))),
        ("1:65535", Ok((1, 65535))),
        ("+80", Ok((80, 80))),
        ("0", Err(())),
        ("65536", Err(())),
        ("80:", Err(())),
        (":80", Err(())),
        ("http", Err(())),
        ("80:90:100", Err(())),
        ("-80", Err(())),
        ("8_0", Err(())),
        ("", Err(())),
    ];
    for (value, want) in cases {
        let got = parse_legacy_args(&["--expose".to_string(), value.to_string()]);
        let want = want
            .map(|port| Invocation {
                expose: vec![port],
                ..plain()
            })
            .map_err(|()| ArgsError::BadPort {
                value: value.to_string(),
            });
        assert_eq!(got, want, "--expose {value:?}");
    }
}

#[test]
fn version_and_help_are_not_sessions() {
    let exits = |flag: &str| {
        Err(ArgsError::PrintsAndExits {
            flag: flag.to_string(),
        })
    };
    for (line, want) in [
        ("--version", exits("--version")),
        ("--swap-deployment app --version", exits("--version")),
        ("--vers", exits("--version")),
        ("--help", exits("--help")),
        ("-h", exits("-h")),
        ("--namespace ns -h --swap-deployment app", exits("-h")),
    ] {
        assert_eq!(parse(line), want, "{line}");
    }
    // After --run, the words are the user's command's.
    assert!(parse("--swap-deployment app --run curl --version").is_ok());
    assert!(parse("--run-shell --verbose").is_ok());
}

#[test]
fn errors() {
    let missing = |flag: &str| ArgsError::MissingValue {
        flag: flag.to_string(),
    };
    let cases = [
        ("--swap-deployment", missing("--swap-deployment")),
        ("--namespace --swap-deployment app", missing("--namespace")),
        ("--swap app --context", missing("--context")),
        ("-n", missing("-n")),
        ("--logfile --run-shell", missing("--logfile")),
        (
            "--expose 8080:http",
            ArgsError::BadPort {
                value: "8080:http".into(),
            },
        ),
        (
            "--swap-deployment :web",
            ArgsError::EmptyName {
                flag: "--swap-deployment".into(),
                value: ":web".into(),
            },
        ),
        (
            "--deployment=",
            ArgsError::EmptyName {
                flag: "--deployment".into(),
                value: String::new(),
            },
        ),
        (
            "--run",
            ArgsError::EmptyCommand {
                flag: "--run".into(),
            },
        ),
        (
            "--docker-run",
            ArgsError::EmptyCommand {
                flag: "--docker-run".into(),
            },
        ),
        (
            "--swap-deployment app -n other",
            ArgsError::ConflictingModes {
                first: "--swap-deployment".into(),
                second: "-n".into(),
            },
        ),
        (
            "--deployment a --swap-deployment=b",
            ArgsError::ConflictingModes {
                first: "--deployment".into(),
                second: "--swap-deployment".into(),
            },
        ),
        (
            "--run-shell --run true",
            ArgsError::ConflictingCommands {
                first: "--run-shell".into(),
                second: "--run".into(),
            },
        ),
        (
            "--ru true",
            ArgsError::AmbiguousFlag {
                flag: "--ru".into(),
                candidates: strings("--run --run-shell"),
            },
        ),
        (
            "--d x",
            ArgsError::AmbiguousFlag {
                flag: "--d".into(),
                candidates: strings("--deployment --docker-run --docker-mount"),
            },
        ),
        (
            "--verbose=yes",
            ArgsError::UnexpectedValue {
                flag: "--verbose".into(),
                value: "yes".into(),
            },
        ),
        (
            "app",
            ArgsError::UnexpectedArgument {
                value: "app".into(),
            },
        ),
        (
            "--verbose app",
            ArgsError::UnexpectedArgument {
                value: "app".into(),
            },
        ),
        (
            "-- --run",
            ArgsError::UnexpectedArgument {
                value: "--run".into(),
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line), Err(want), "{line:?}");
    }
}

#[test]
fn odd_but_accepted() {
    // A trailing `--` ends the options with nothing after it.
    assert_eq!(parse("--verbose --").map(|i| i.verbose), Ok(true));
    // Negative numbers are values in argparse; here one fails as a port, not as a flag.
    assert_eq!(
        parse("--expose -1"),
        Err(ArgsError::BadPort { value: "-1".into() })
    );
    // Non-ASCII does not trip the short-flag slicing.
    assert_eq!(parse("-é").map(|i| i.unknown), Ok(strings("-é")));
    assert_eq!(parse("-sé").map(|i| i.mode), Ok(swap("é", None)));
}

#[test]
fn messages_name_the_value() {
    let cases = [
        (
            ArgsError::AmbiguousFlag {
                flag: "--ru".into(),
                candidates: strings("--run --run-shell"),
            },
            "--ru is ambiguous: it could be --run, --run-shell",
        ),
        (
            ArgsError::BadPort { value: "x".into() },
            "--expose \"x\" is not PORT or PORT:REMOTE_PORT with ports from 1 to 65535",
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.to_string(), want);
    }
}

#[test]
fn invocations_round_trip_through_json() {
    let inv = parse("--swap-deployment app:web --expose 80 --run true").expect("parses");
    let json = serde_json::to_string(&inv).expect("encodes");
    assert_eq!(serde_json::from_str::<Invocation>(&json).ok(), Some(inv));
    // Records written before `verbose` and `unknown` existed still load.
    let old = r#"{"mode":{"NewDeployment":{"name":null}},"context":null,"namespace":null,
        "expose":[],"method":null,"logfile":null,"run":null,"run_shell":false,"docker_run":false}"#;
    assert_eq!(serde_json::from_str::<Invocation>(old).ok(), Some(plain()));
}
