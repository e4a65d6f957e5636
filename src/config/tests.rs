use super::*;

fn paths() -> Paths {
    Paths::resolve(&|k| match k {
        "TELEPOLICE_CONFIG" => Some("/cfg/config.toml".into()),
        "TELEPOLICE_STATE_DIR" => Some("/state".into()),
        "TELEPOLICE_RUNTIME_DIR" => Some("/run/tp".into()),
        "TELEPOLICE_LOG_DIR" => Some("/logs".into()),
        "TELEPOLICE_TMPDIR" => Some("/tmp/x".into()),
        _ => None,
    })
    .expect("paths")
}

#[test]
fn environment_overrides_every_path() {
    let p = paths();
    assert_eq!(p.config_file, PathBuf::from("/cfg/config.toml"));
    assert_eq!(p.state_dir, PathBuf::from("/state"));
    assert_eq!(p.runtime_dir, PathBuf::from("/run/tp"));
    assert_eq!(p.log_dir, PathBuf::from("/logs"));
    assert_eq!(p.tmp_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn an_empty_file_means_defaults() {
    let c =
        Config::resolve(parse("", Path::new("c.toml")).expect("parses"), paths()).expect("valid");
    assert_eq!(c.grace_period, Duration::from_secs(3));
    assert!(!c.dry_run);
    assert_eq!(c.on_shell_death, OnShellDeath::Terminate);
    assert_eq!(c.on_sleep, OnSleep::Keep);
    assert!(c.in_scope("any", "thing"));
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_line() {
    let e = parse(
        "dry_run = true\ngrace_perod_secs = 1\n",
        Path::new("/c.toml"),
    )
    .expect_err("unknown key");
    let msg = e.to_string();
    assert!(
        msg.contains("/c.toml") && msg.contains("grace_perod_secs") && msg.contains("line 2"),
        "{msg}"
    );
    let e = parse("dry_run = \"yes\"\n", Path::new("/c.toml")).expect_err("wrong type");
    assert!(e.to_string().contains("dry_run"), "{e}");
    let e = Config::resolve(
        parse("grace_period_secs = -1", Path::new("/c.toml")).expect("parses"),
        paths(),
    )
    .expect_err("negative");
    assert!(e.to_string().contains("grace_period_secs"), "{e}");
}

/// The default file, uncommented: every key it shows, at the value it shows.
fn uncommented_default_file() -> String {
    DEFAULT_FILE
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_default_file_shows_every_key_at_its_default() {
    let text = uncommented_default_file();
    let shown = Config::resolve(parse(&text, Path::new("d.toml")).expect("parses"), paths())
        .expect("valid");
    let mut defaults = Config::resolve(RawConfig::default(), paths()).expect("defaults are valid");
    // The scan interval's default depends on the system; the file shows Linux's.
    defaults.scan_interval = shown.scan_interval;
    assert_eq!(shown, defaults);
    // Every key of the raw config appears: a key added without a line here fails.
    let all: toml::Value = toml::from_str(&defaults.effective()).expect("valid TOML");
    let keys: Vec<&String> = all.as_table().expect("a table").keys().collect();
    for k in keys {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{k} = "))),
            "the default file does not show `{k}`"
        );
    }
}

#[test]
fn log_settings_are_checked() {
    let bad = |t: &str| {
        Config::resolve(parse(t, Path::new("/c.toml")).expect("parses"), paths())
            .expect_err("invalid")
            .to_string()
    };
    assert!(bad("log_level = \"info,=[\"").contains("log_level"));
    assert!(bad("log_retention_days = 0").contains("log_retention_days"));
    let c = Config::resolve(
        parse(
            "log_format = \"json\"\nnotifications = false\n",
            Path::new("c.toml"),
        )
        .expect("parses"),
        paths(),
    )
    .expect("valid");
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(!c.notifications);
}

#[test]
fn scope_lists_allow_and_deny() {
    let raw = parse(
        "contexts = [\"dev\"]\nignore_namespaces = [\"kube-system\"]\non_shell_death = \"ignore\"\non_sleep = \"end-sessions\"\n",
        Path::new("c.toml"),
    )
    .expect("parses");
    let c = Config::resolve(raw, paths()).expect("valid");
    assert!(c.in_scope("dev", "team"));
    assert!(!c.in_scope("prod", "team"));
    assert!(!c.in_scope("dev", "kube-system"));
    assert_eq!(c.on_shell_death, OnShellDeath::Ignore);
    assert_eq!(c.on_sleep, OnSleep::EndSessions);
}
