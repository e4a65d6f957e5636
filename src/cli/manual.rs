//! The man page and the shell completion scripts, generated from the clap definition the
//! CLI passes in (`Cli::command()`), so that they cannot drift from the commands the binary
//! accepts.
//!
//! They are produced at run time (`telepolice-agent man`, `telepolice-agent completions
//! <shell>`) rather than by a build script or an `xtask`: a packager always has the binary
//! (`packaging/build-deb` and the Homebrew formula run it), someone who installed with
//! `cargo install` gets them too, and the five shells cost nothing extra. Neither depends on
//! a home directory, a config file or the platform.

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// The program's name as installed and as the completion scripts complete it.
const BIN: &str = "telepolice-agent";

/// Errors while generating the man page.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// Rendering a section of the man page failed (in practice never: it is rendered to
    /// memory).
    #[error("rendering the man page's {section} section: {source}")]
    Render {
        /// The section being rendered.
        section: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The completion script for `shell`, for the program named `telepolice-agent`.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) -> String {
    // Rendered to memory: clap_complete panics when its writer fails, and stdout can be a
    // closed pipe.
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut out);
    // Made of Rust strings, so valid UTF-8: nothing is ever replaced.
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page (section 1, roff source, uncompressed).
///
/// One page for the program and all its commands: clap_mangen's own layout refers to a
/// page per command (`telepolice-agent-run(1)`), which would mean installing a page
/// per command for a handful of flags. Here each command gets a subsection with its synopsis,
/// description and options, and the page ends with the exit status, environment, files
/// and signals.
///
/// # Errors
/// [`ManualError::Render`] if a section cannot be rendered.
pub fn man_page(cmd: clap::Command) -> Result<String, ManualError> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone()).manual("User Commands");
    let mut out = Vec::new();
    let mut part = |section: &'static str, r: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        r(&mut out).map_err(|source| ManualError::Render { section, source })
    };

    part("title", &|w| man.render_title(w))?;
    part("NAME", &|w| man.render_name_section(w))?;
    part("SYNOPSIS", &|w| man.render_synopsis_section(w))?;
    part("DESCRIPTION", &|w| description().to_writer(w))?;
    part("OPTIONS", &|w| man.render_options_section(w))?;
    part("COMMANDS", &|w| {
        let mut heading = Roff::new();
        heading.control("SH", ["COMMANDS"]);
        heading.to_writer(w)?;
        // Every command, those for packagers too (hidden from `--help` only).
        for sub in cmd.get_subcommands() {
            let mut heading = Roff::new();
            heading.control("SS", [format!("{BIN} {}", sub.get_name()).as_str()]);
            heading.to_writer(w)?;
            let sub_man = Man::new(sub.clone());
            // clap_mangen renders whole sections; inside a subsection only their bodies fit.
            w.extend(section_body(|b| sub_man.render_synopsis_section(b))?);
            w.extend(section_body(|b| sub_man.render_description_section(b))?);
            w.extend(section_body(|b| sub_man.render_options_section(b))?);
        }
        Ok(())
    })?;
    part("EXIT STATUS to SEE ALSO", &|w| trailer().to_writer(w))?;
    part("VERSION", &|w| man.render_version_section(w))?;
    // Made of Rust strings, so valid UTF-8: nothing is ever replaced.
    Ok(String::from_utf8_lossy(&without_repeated_preamble(&out)).into_owned())
}

/// Every roff render starts by defining the `Aq` string (an apostrophe); once is enough.
fn without_repeated_preamble(page: &[u8]) -> Vec<u8> {
    let preamble: [&[u8]; 2] = [b".ie \\n(.g .ds Aq \\(aq\n", b".el .ds Aq '\n"];
    let mut seen = [false; 2];
    let mut out = Vec::with_capacity(page.len());
    for line in page.split_inclusive(|&b| b == b'\n') {
        match preamble.iter().position(|p| *p == line) {
            Some(i) if seen[i] => {}
            Some(i) => {
                seen[i] = true;
                out.extend_from_slice(line);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// A section rendered by clap_mangen without its `.SH` line, as a paragraph of its own.
fn section_body(
    render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    let mut rendered = Vec::new();
    render(&mut rendered)?;
    let mut body = Vec::new();
    Roff::new().control("PP", []).to_writer(&mut body)?;
    let mut dropped = false;
    for line in rendered.split_inclusive(|&b| b == b'\n') {
        if !dropped && line.starts_with(b".SH ") {
            dropped = true;
        } else {
            body.extend_from_slice(line);
        }
    }
    Ok(body)
}

/// What the agent does, in a few sentences (clap's `about` is one line).
fn description() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "A small daemon for a developer's laptop that watches Telepresence 0.x sessions, \
         records what each one is about to change in the Kubernetes cluster (the original \
         Deployment's replica count, the proxy objects it creates), and, when a session dies \
         without cleaning up, puts the cluster back: the original Deployment scaled back to \
         its replicas, the proxy objects deleted, orphaned local helpers stopped. For \
         Telepresence 2 it follows each connector and, when one dies without departing, \
         ends its session in the traffic-manager, so that its intercepts do not outlive it.",
    )]);
    r.control("PP", []);
    r.text([
        roman(
            "It touches only objects it can prove a recorded session created, with uid \
         preconditions on every change, and only through the session's own kubeconfig and \
         context. Run it as a user service (see ",
        ),
        bold("install"),
        roman(" below); ask it with "),
        bold("status"),
        roman("."),
    ]);
    r
}

/// EXIT STATUS, ENVIRONMENT, FILES, SIGNALS and SEE ALSO: what the README says about
/// running the agent, in the places a man page reader looks.
fn trailer() -> Roff {
    let mut r = Roff::new();
    let item = |r: &mut Roff, term: &str, text: &str| {
        r.control("TP", []);
        r.text([bold(term)]);
        r.text([roman(text)]);
    };

    r.control("SH", ["EXIT STATUS"]);
    item(&mut r, "0", "Success.");
    item(
        &mut r,
        "1",
        "The command failed (for repair: the session is not repaired).",
    );
    item(&mut r, "2", "Bad usage or configuration.");
    item(
        &mut r,
        "3",
        "Another agent is already running for this user.",
    );

    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        "TELEPOLICE_CONFIG",
        "The config file (default: config.toml in the user config dir).",
    );
    item(
        &mut r,
        "TELEPOLICE_STATE_DIR",
        "The journal of sessions (default: ~/.local/state/telepolice-agent on Linux).",
    );
    item(
        &mut r,
        "TELEPOLICE_RUNTIME_DIR",
        "The lock and control socket (default: $XDG_RUNTIME_DIR/telepolice-agent, else <state dir>/run).",
    );
    item(
        &mut r,
        "TELEPOLICE_LOG_DIR",
        "The daily log files (default: <state dir>/logs; ~/Library/Logs/telepolice-agent on macOS).",
    );
    item(
        &mut r,
        "TELEPOLICE_TMPDIR",
        "Where Telepresence makes its tel-* dirs (default: the session's TMPDIR, else the system temp dir).",
    );
    item(
        &mut r,
        "TELEPOLICE_LOG",
        "The log level, e.g. debug or telepolice_agent=trace; overrides log_level in the config file.",
    );

    r.control("SH", ["FILES"]);
    item(
        &mut r,
        "~/.config/telepolice-agent/config.toml",
        "The config file on Linux. Every key is optional; unknown keys are errors that name the key.",
    );
    item(
        &mut r,
        "~/.local/state/telepolice-agent/sessions/",
        "One journaled record per session, written before the agent acts.",
    );

    r.control("SH", ["SIGNALS"]);
    item(
        &mut r,
        "SIGTERM, SIGINT",
        "Stop gracefully; a second signal forces the exit.",
    );
    item(
        &mut r,
        "SIGHUP",
        "Reload the config file; a file that does not load is logged and the running configuration stays.",
    );

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("systemctl"),
        roman("(1), "),
        bold("kubectl"),
        roman("(1); the README shipped with the package ("),
        italic("/usr/share/doc/telepolice-agent/README.md"),
        roman(" on Debian)."),
    ]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn subcommand_names() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect()
    }

    #[test]
    fn the_man_page_has_a_subsection_for_every_command() {
        let page = man_page(Cli::command()).expect("renders");
        assert!(page.contains("\n.TH telepolice-agent 1 "), "{page}");
        assert_eq!(
            page.matches(".el .ds Aq").count(),
            1,
            "one preamble:\n{page}"
        );
        for name in subcommand_names() {
            assert!(
                page.contains(&format!(".SS \"telepolice-agent {name}\"")),
                "no subsection for {name}:\n{page}"
            );
        }
        for section in [
            "NAME",
            "SYNOPSIS",
            "COMMANDS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
        ] {
            assert!(
                page.contains(&format!(".SH \"{section}\""))
                    || page.contains(&format!(".SH {section}\n")),
                "no {section}:\n{page}"
            );
        }
        // Options of a command appear under it, with their help.
        assert!(page.contains("dry\\-run"), "{page}");
        assert!(
            page.contains("The original replica count to restore"),
            "{page}"
        );
    }

    #[test]
    fn bash_completion_offers_every_command() {
        let script = completions(Cli::command(), clap_complete::Shell::Bash);
        assert!(
            script.contains("complete -F _telepolice__agent"),
            "{script}"
        );
        // The words offered after `telepolice-agent `: the first options line of the script.
        let top = script
            .lines()
            .find_map(|l| l.trim().strip_prefix("opts=\"-h -V "))
            .expect("the top-level words");
        let offered: Vec<&str> = top.trim_end_matches('"').split(' ').collect();
        for name in subcommand_names() {
            assert!(
                offered.contains(&name.as_str()),
                "{name} not offered: {top}"
            );
        }
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_program() {
        use clap::ValueEnum;
        for shell in clap_complete::Shell::value_variants() {
            let script = completions(Cli::command(), *shell);
            assert!(script.contains("telepolice-agent"), "{shell}: {script}");
        }
    }
}
