//! `completions` and `man` as a packager runs them: the real binary, no home directory.

use std::process::Command;

use clap::CommandFactory;
use telepolice_agent::cli::Cli;

fn agent(args: &[&str]) -> std::process::Output {
    // As in a package build: nothing but PATH, so no home or config dir can be resolved.
    Command::new(env!("CARGO_BIN_EXE_telepolice-agent"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("the agent runs")
}

fn subcommand_names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect()
}

#[test]
fn the_man_page_prints_without_a_home_and_names_every_command() {
    let out = agent(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).expect("utf-8");
    assert!(page.contains(".TH telepolice-agent 1"), "{page}");
    for name in subcommand_names() {
        assert!(
            page.contains(&format!("telepolice-agent {name}")),
            "{name} missing:\n{page}"
        );
    }
}

#[test]
fn bash_completes_every_command_after_the_program_name() {
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no bash");
        return;
    }
    let out = agent(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = dir.path().join("telepolice-agent.bash");
    std::fs::write(&script, &out.stdout).expect("written");
    // What bash does on `telepolice-agent <TAB>`: the registered function with the line's
    // words, the program and the (empty) word being completed.
    let probe = r#"
        source "$1"
        fn=$(complete -p telepolice-agent | sed -E 's/.*-F ([^ ]+).*/\1/')
        COMP_WORDS=(telepolice-agent "")
        COMP_CWORD=1
        COMP_LINE="telepolice-agent "
        COMP_POINT=${#COMP_LINE}
        "$fn" telepolice-agent "" telepolice-agent
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let done = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", probe, "probe"])
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(done.status.success(), "{done:?}");
    let offered = String::from_utf8(done.stdout).expect("utf-8");
    let offered: Vec<&str> = offered.lines().collect();
    for name in subcommand_names() {
        assert!(
            offered.contains(&name.as_str()),
            "{name} not offered: {offered:?}"
        );
    }
}

#[test]
fn every_shell_is_accepted_and_an_unknown_one_is_a_usage_error() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = agent(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(!out.stdout.is_empty(), "{shell}: empty script");
    }
    let out = agent(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
