use super::*;

const ELF: &[u8] = b"\x7fELF\x02\x01\x01\x00";
const MACHO: &[u8] = b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01";
const FAT: &[u8] = b"\xca\xfe\xba\xbe\x00\x00\x00\x02";
const ZIPAPP: &[u8] = b"#!/usr/bin/env python3\nPK\x03\x04";
const BARE_ZIP: &[u8] = b"PK\x03\x04\x14\x00";
const PY_SCRIPT: &[u8] = b"#!/usr/bin/python3.6 -I\nimport sys\n";
const SHELL: &[u8] = b"#!/bin/sh\nexec /opt/python/bin/python3 \"$@\"\n";

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn classify_table() {
    use Flavor::{Legacy, Modern};
    /// A command line, the head of its program file, and the expected answer.
    type Case = (&'static str, Option<&'static [u8]>, Option<(Flavor, usize)>);
    let cases: &[Case] = &[
        // The 0.x zipapp as the kernel runs it: interpreter, script, arguments.
        (
            "python3 /usr/local/bin/telepresence --swap-deployment app",
            Some(ZIPAPP),
            Some((Legacy, 1)),
        ),
        (
            "python3 /usr/local/bin/telepresence",
            None,
            Some((Legacy, 1)),
        ),
        // Through Python even if the head looks native: 2.x is never run this way.
        (
            "python3 /usr/local/bin/telepresence -n x",
            Some(ELF),
            Some((Legacy, 1)),
        ),
        (
            "python /opt/tp/telepresence --run-shell",
            None,
            Some((Legacy, 1)),
        ),
        // A `#!/usr/bin/env python3` script in its first instant, before env execs
        // Python (the same process): recognised at once.
        (
            "/usr/bin/env python3 /usr/local/bin/telepresence --swap-deployment app",
            None,
            Some((Legacy, 2)),
        ),
        (
            "/usr/bin/env -S PYTHONUNBUFFERED=1 python3 -u /usr/local/bin/telepresence",
            None,
            Some((Legacy, 5)),
        ),
        // pyenv and asdf: `python3` is a shell shim, so for ~100 ms the process is the
        // shell running it (after env, or already exec'd by env): recognised then too.
        (
            "bash /home/u/.pyenv/shims/python3 /usr/local/bin/telepresence --swap-deployment app",
            Some(ELF),
            Some((Legacy, 2)),
        ),
        (
            "/usr/bin/env bash /home/u/.pyenv/shims/python3 /opt/tp/telepresence -s app",
            None,
            Some((Legacy, 3)),
        ),
        (
            "/bin/sh /home/u/.asdf/shims/python3 -I /opt/tp/telepresence",
            None,
            Some((Legacy, 3)),
        ),
        (
            "/bin/bash -e -o pipefail /home/u/.asdf/shims/python3.11 telepresence",
            None,
            Some((Legacy, 5)),
        ),
        (
            "dash -- /home/u/.pyenv/shims/python3 -m telepresence",
            None,
            Some((Legacy, 4)),
        ),
        (
            "zsh /x/shims/python3 -- /x/telepresence",
            None,
            Some((Legacy, 3)),
        ),
        // A shell wrapper named telepresence is not the session (the Python process it
        // starts is); nor is a shell running anything but a Python shim.
        (
            "/bin/sh /usr/local/bin/telepresence -s app",
            Some(ZIPAPP),
            None,
        ),
        ("bash /home/u/.pyenv/shims/python3", None, None),
        (
            "bash /home/u/.pyenv/shims/python3 manage.py telepresence",
            None,
            None,
        ),
        (
            "bash /home/u/bin/pythonic /usr/local/bin/telepresence",
            None,
            None,
        ),
        ("bash -c python3 /usr/local/bin/telepresence", None, None),
        (
            "bash -s /home/u/.pyenv/shims/python3 telepresence",
            None,
            None,
        ),
        ("bash -ec python3 telepresence", None, None),
        ("fish /home/u/.pyenv/shims/python3 telepresence", None, None),
        ("bash", None, None),
        ("bash -e", None, None),
        // env running something else that mentions telepresence: not Telepresence.
        ("/usr/bin/env bash /usr/local/bin/telepresence", None, None),
        ("/usr/bin/env vim telepresence", None, None),
        (
            "/usr/bin/python3.11 -I -S /usr/local/bin/telepresence -s app",
            None,
            Some((Legacy, 3)),
        ),
        (
            "python3 -IS -W ignore /usr/local/bin/telepresence",
            None,
            Some((Legacy, 4)),
        ),
        (
            "python3 -Wignore -X dev -Xutf8 telepresence",
            None,
            Some((Legacy, 5)),
        ),
        (
            "python3 --check-hash-based-pycs never telepresence",
            None,
            Some((Legacy, 3)),
        ),
        (
            "python3 -- /usr/local/bin/telepresence",
            None,
            Some((Legacy, 2)),
        ),
        (
            "python3.7m /usr/local/bin/telepresence",
            None,
            Some((Legacy, 1)),
        ),
        // macOS framework builds re-exec themselves as .../Python.app/Contents/MacOS/Python.
        (
            "/usr/local/Cellar/python@3.9/3.9.1/Frameworks/Python.framework/Versions/3.9/Resources/Python.app/Contents/MacOS/Python /usr/local/bin/telepresence -s app",
            None,
            Some((Legacy, 1)),
        ),
        // Run as a module.
        (
            "python3 -m telepresence --run-shell",
            None,
            Some((Legacy, 2)),
        ),
        ("python3 -Im telepresence", None, Some((Legacy, 2))),
        ("python3 -mtelepresence", None, Some((Legacy, 1))),
        // Python running something else.
        ("python3 -m pytest telepresence", None, None),
        ("python3 -c import telepresence", None, None),
        ("python3 manage.py telepresence", None, None),
        ("python3 /usr/local/bin/telepresence.py", None, None),
        ("python3 - telepresence", None, None),
        ("python3 --version telepresence", None, None),
        ("python3", None, None),
        ("python3 -I", None, None),
        ("python3 -m", None, None),
        // Direct exec: the head decides when conclusive.
        (
            "/usr/local/bin/telepresence --swap-deployment app",
            Some(ELF),
            Some((Modern, 0)),
        ),
        (
            "/usr/local/bin/telepresence --swap-deployment app",
            Some(MACHO),
            Some((Modern, 0)),
        ),
        (
            "/usr/local/bin/telepresence --swap-deployment app",
            Some(FAT),
            Some((Modern, 0)),
        ),
        (
            "telepresence --swap-deployment app",
            Some(ZIPAPP),
            Some((Legacy, 0)),
        ),
        (
            "telepresence --swap-deployment app",
            Some(BARE_ZIP),
            Some((Legacy, 0)),
        ),
        ("./telepresence -n x", Some(PY_SCRIPT), Some((Legacy, 0))),
        // A 2.x subcommand overrides a Python head (0.x takes no positional arguments).
        ("telepresence connect", Some(ZIPAPP), Some((Modern, 0))),
        ("telepresence connector-foreground", None, Some((Modern, 0))),
        (
            "/usr/local/bin/telepresence daemon-foreground /var/log /etc",
            None,
            Some((Modern, 0)),
        ),
        (
            "telepresence intercept app --port 8080",
            Some(ELF),
            Some((Modern, 0)),
        ),
        // Nothing conclusive: a direct exec is taken for 2.x.
        (
            "telepresence --swap-deployment app",
            None,
            Some((Modern, 0)),
        ),
        (
            "telepresence --swap-deployment app",
            Some(SHELL),
            Some((Modern, 0)),
        ),
        (
            "telepresence --swap-deployment app",
            Some(b""),
            Some((Modern, 0)),
        ),
        ("telepresence", Some(b"#!"), Some((Modern, 0))),
        // Not Telepresence.
        ("vim telepresence.txt", None, None),
        ("vim telepresence", None, None),
        ("less /usr/local/bin/telepresence", Some(ZIPAPP), None),
        (
            "/usr/local/bin/telepresence-wrapper -s app",
            Some(ZIPAPP),
            None,
        ),
        ("/usr/local/bin/telepresence/ -s app", None, None),
        (
            "kubectl --context c port-forward telepresence 8022",
            None,
            None,
        ),
        ("pythonista /usr/local/bin/telepresence", None, None),
        ("", None, None),
    ];
    for (line, head, want) in cases {
        let argv = argv(line);
        assert_eq!(
            classify(&argv, *head, DEFAULT_NAMES),
            *want,
            "{line:?} with head {head:?}"
        );
        assert_eq!(
            program_index(&argv, DEFAULT_NAMES),
            want.map(|(_, index)| index),
            "{line:?}"
        );
    }
}

#[test]
fn configured_names() {
    let names = ["telepresence", "tel-legacy"];
    let cases = [
        (
            "python3 /opt/tp/tel-legacy -s app",
            Some((Flavor::Legacy, 1)),
        ),
        ("tel-legacy -s app", Some((Flavor::Modern, 0))),
        (
            "python3 /opt/tp/telepresence -s app",
            Some((Flavor::Legacy, 1)),
        ),
        ("python3 /opt/tp/tel -s app", None),
    ];
    for (line, want) in cases {
        assert_eq!(classify(&argv(line), None, &names), want, "{line:?}");
    }
    assert_eq!(
        classify(&argv("python3 /opt/tp/tel-legacy"), None, DEFAULT_NAMES),
        None
    );
    assert_eq!(classify(&argv("telepresence"), None, &[]), None);
}

#[test]
fn an_argument_with_spaces_is_not_split() {
    let argv = vec![
        "python3".to_string(),
        "/Users/me/My Tools/telepresence".to_string(),
        "--run".to_string(),
        "bash -c x".to_string(),
    ];
    assert_eq!(
        classify(&argv, None, DEFAULT_NAMES),
        Some((Flavor::Legacy, 1))
    );
}

#[test]
fn non_ascii_options_do_not_panic() {
    let argv = vec!["python3".to_string(), "-é".to_string(), "-Wé".to_string()];
    assert_eq!(classify(&argv, None, DEFAULT_NAMES), None);
    let argv = vec![
        "python3".to_string(),
        "-Ié".to_string(),
        "telepresence".to_string(),
    ];
    assert_eq!(
        classify(&argv, None, DEFAULT_NAMES),
        Some((Flavor::Legacy, 2))
    );
}
