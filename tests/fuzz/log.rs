//! `read_log` on generated logs: logs written from known facts in the shapes Telepresence
//! and the proxy write (which must give those facts back exactly), the same logs mutated,
//! patterns repeated to pathological sizes, and random text.

use serde_json::{Value, json};

use super::{Rng, run};
use telepolice_agent::telepresence::{LogFacts, is_session_id, read_log, swap_proxy_name};

/// Cases per target in `cargo test`.
const CASES: u64 = 1_000;

#[test]
fn written_facts_read_back() {
    run(
        "log::written_facts_read_back",
        CASES,
        written,
        |w: &Written| {
            let got = read_log(&w.text, w.deployment.as_deref());
            assert_eq!(got, w.want);
            check_any(&w.text, w.deployment.as_deref());
        },
    );
}

#[test]
fn mutated_logs() {
    run("log::mutated_logs", CASES, mutated, |(text, deployment)| {
        check_any(text, deployment.as_deref());
    });
}

#[test]
fn repeated_patterns() {
    run(
        "log::repeated_patterns",
        CASES / 10,
        repeated,
        |(text, deployment)| {
            check_any(text, deployment.as_deref());
        },
    );
}

#[test]
fn random_text() {
    run("log::random_text", CASES, random, |(text, deployment)| {
        check_any(text, deployment.as_deref());
    });
}

// ------------------------------------------------------------------------- generators

/// A log written from known facts, and the facts.
#[derive(Debug)]
struct Written {
    text: String,
    deployment: Option<String>,
    want: LogFacts,
}

/// Lines of a log, each with the tag of the command that wrote it (`None`: no prefix, as
/// the proxy's own log is appended).
type Lines = Vec<(Option<String>, String)>;

/// A log line's prefix, `<seconds> <tag> | `, in one of the spacings seen or allowed.
fn prefixed(rng: &mut Rng, tag: &str, content: &str) -> String {
    let stamp = format!("{}.{}", rng.below(100_000), rng.below(10));
    // `TEL|x`: the bar inside the run of non-blanks is found from its end, so the content
    // must not have a bar before its first blank.
    let glued_ok = !content
        .split(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .contains('|');
    match rng.below(6) {
        0 if glued_ok => format!("{stamp} {tag}| {content}"),
        1 => format!("{stamp} {tag} |{content}"),
        2 => format!("{stamp}\t{tag}  |  {content}"),
        _ => format!("{stamp:>6} {tag:>3} | {content}"),
    }
}

/// Words that are no part of a mention or an object: no braces, brackets, quotes, `=`.
fn noise(rng: &mut Rng) -> String {
    rng.text(60)
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | '[' | ']' | '"' | '=' | '\n' | '\r' | '\\'))
        .collect()
}

/// A deployment name: a Kubernetes name, sometimes with characters of several bytes
/// (which the 17-character cut of the proxy's name must not split).
fn deployment_name(rng: &mut Rng) -> String {
    let mut name = rng.name();
    if rng.one_in(4) {
        for _ in 0..rng.between(1, 20) {
            name.push(*rng.pick(&['é', 'ß', '🦀', 'x', '-']));
        }
    }
    name
}

/// `spec.replicas` as written, and what the reader must make of it.
fn replicas(rng: &mut Rng) -> (Option<Value>, Option<i32>) {
    match rng.below(10) {
        0..=3 => {
            let n = match rng.below(4) {
                0 => 0,
                1 => i32::MAX,
                _ => rng.below(1_000) as i32,
            };
            (Some(json!(n)), Some(n))
        }
        4 => (None, Some(1)),
        5 => (Some(Value::Null), Some(1)),
        6 => (Some(json!(-(rng.between(1, 1_000) as i64))), None),
        7 => (
            Some(json!(i64::from(i32::MAX) + 1 + rng.below(1_000) as i64)),
            None,
        ),
        8 => (Some(json!(rng.below(100) as f64 + 0.5)), None),
        _ => (
            Some(
                rng.pick(&[json!("3"), json!(true), json!([3]), json!(u64::MAX)])
                    .clone(),
            ),
            None,
        ),
    }
}

/// `value` pretty-printed or on one line, as lines of `tag`'s output.
fn object_lines(rng: &mut Rng, tag: Option<&str>, value: &Value) -> Lines {
    let text = if rng.one_in(3) {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).expect("a Value prints")
    };
    text.lines()
        .map(|l| (tag.map(String::from), l.to_string()))
        .collect()
}

fn written(rng: &mut Rng) -> Written {
    let deployment = deployment_name(rng);
    let id = rng.session_id();
    let other_id = rng.session_id();
    let pass_deployment = !rng.one_in(5);
    let tag = rng.between(1, 40).to_string();
    let other_tag = |rng: &mut Rng| loop {
        let t = if rng.one_in(3) {
            "TEL".to_string()
        } else {
            rng.between(1, 40).to_string()
        };
        if t != tag {
            break t;
        }
    };
    let tel = Some("TEL".to_string());
    let mut lines: Lines = Vec::new();
    for _ in 0..rng.below(4) {
        lines.push((tel.clone(), noise(rng)));
    }
    lines.push((
        tel.clone(),
        format!("[1] Running: kubectl get deploy {deployment} -o json"),
    ));

    // Objects before the original that are not it: another kind, another name, one left
    // open in another command's output.
    let label_in_json = rng.one_in(4);
    for _ in 0..rng.below(3) {
        let t = other_tag(rng);
        match rng.below(3) {
            0 => {
                let mut pod = json!({"kind": "Pod", "metadata": {"name": deployment}});
                if label_in_json {
                    pod["metadata"]["labels"] = json!({"telepresence": id});
                }
                lines.extend(object_lines(rng, Some(&t), &pod));
            }
            1 => {
                let name = format!("{deployment}x");
                let other = json!({"kind": "Deployment", "metadata": {"name": name},
                    "spec": {"replicas": 7}});
                lines.extend(object_lines(rng, Some(&t), &other));
            }
            _ => lines.push((Some(t), "{ \"half\": [".to_string())),
        }
    }

    // The original.
    let (replicas_written, replicas_read) = replicas(rng);
    let uid = match rng.below(4) {
        0 => None,
        1 => Some(String::new()),
        2 => Some(rng.text(20)),
        _ => Some(format!(
            "{:08x}-6f1c-4c55-9a0e-1d2b3c4d5e6f",
            rng.next_u64() as u32
        )),
    };
    let mut original = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment}, "spec": {"template": {}}});
    if let Some(uid) = &uid {
        original["metadata"]["uid"] = json!(uid);
    }
    if let Some(r) = replicas_written {
        original["spec"]["replicas"] = r;
    }
    if label_in_json {
        original["metadata"]["labels"] = json!({"telepresence": id});
    }
    let mut body = object_lines(rng, Some(&tag), &original);
    // The proxy's log between the object's lines (no prefix, skipped).
    for _ in 0..rng.below(3) {
        let at = rng.below(body.len() + 1);
        body.insert(at, (None, format!("[proxy] {}", noise(rng))));
    }
    lines.extend(body);

    // The session id, after the original as 0.x logs it: a label selector or the proxy's
    // name (unless it is only in the logged JSON).
    let proxy = swap_proxy_name(&deployment, &id);
    let mention = match rng.below(5) {
        0 => format!("delete pod,service --selector=telepresence={id}"),
        1 => format!("get pod -l telepresence={id} -o json"),
        2 => format!("label telepresence={id}."),
        3 => format!("pod/{proxy}-7d9f8b-x2k4q created"),
        _ => format!("delete pod \"{proxy}\""),
    };
    let by_proxy = mention.contains(&proxy);
    let id_found = if label_in_json {
        true
    } else {
        lines.push((tel.clone(), mention));
        !by_proxy || pass_deployment
    };
    for _ in 0..rng.below(3) {
        lines.push((tel.clone(), noise(rng)));
    }
    // A later session's id in the proxy's log: the first mention wins.
    if id_found && !label_in_json && rng.one_in(2) {
        lines.push((None, format!("-l telepresence={other_id}")));
    }

    let end = *rng.pick(&["\n", "\n", "\r\n"]);
    let mut text = String::new();
    for (tag, content) in &lines {
        let line = match tag {
            Some(tag) => prefixed(rng, tag, content),
            None => content.clone(),
        };
        text.push_str(&line);
        text.push_str(end);
    }
    let found_original = pass_deployment;
    Written {
        text,
        deployment: pass_deployment.then_some(deployment),
        want: LogFacts {
            session_id: id_found.then_some(id),
            original_replicas: if found_original { replicas_read } else { None },
            original_uid: if found_original {
                uid.filter(|u| !u.is_empty())
            } else {
                None
            },
        },
    }
}

/// Tokens that mean something to the reader, for splicing into logs.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "\n",
    "\r\n",
    " | ",
    "|",
    "0.0 TEL | ",
    "   1.5  12 | {",
    "telepresence=",
    "\"telepresence\": \"",
    "\"kind\": \"Deployment\"",
    "\"replicas\": ",
    "0123456789abcdef0123456789abcdef",
    "-",
    ".",
];

fn mutated(rng: &mut Rng) -> (String, Option<String>) {
    let w = written(rng);
    let mut lines: Vec<String> = w.text.lines().map(String::from).collect();
    for _ in 0..rng.below(4) {
        let len = lines.len();
        let at = rng.below(len.max(1));
        match rng.below(4) {
            0 if at < len => {
                lines.remove(at);
            }
            1 if at < len => {
                let copy = lines[at].clone();
                lines.insert(rng.below(len + 1), copy);
            }
            2 if at < len => {
                let other = rng.below(len);
                lines.swap(at, other);
            }
            _ => lines.insert(at.min(len), noise(rng)),
        }
    }
    let text = rng.mutate_text(&lines.join("\n"), TOKENS);
    let deployment = match rng.below(8) {
        0 => None,
        1 => Some(String::new()),
        2 => Some(rng.text(30)),
        _ => w.deployment,
    };
    (text, deployment)
}

/// One pattern repeated up to 100,000 times (a few MiB at most): deep brackets, endless
/// strings, mentions that never complete, objects that never close.
fn repeated(rng: &mut Rng) -> (String, Option<String>) {
    let id = "0123456789abcdef0123456789abcdef";
    let patterns = [
        "{".to_string(),
        "[".to_string(),
        "{\n".to_string(),
        "\"\\".to_string(),
        "telepresence=".to_string(),
        format!("telepresence={}", &id[..31]),
        "\"telepresence\":        ".to_string(),
        format!("app-{}", &id[..31]),
        "   0.0   1 | {\n   0.0   2 | {\n".to_string(),
        "   0.0   1 | {\n".to_string(),
        "   0.0   1 | \"\n".to_string(),
        "0.0 a|b|c|d|".to_string(),
        "0.0 ".to_string(),
        "1".to_string(),
        ".".to_string(),
        " ".to_string(),
        "é|ü 0.0 ß | ∂{".to_string(),
        "\0\u{feff}\u{2028}}]]}".to_string(),
        rng.text(12),
    ];
    let pattern = rng.pick(&patterns).clone();
    let times = rng.len(100_000).max(1);
    let mut text = pattern.repeat(times);
    if rng.one_in(2) {
        // Something real after the garbage.
        text.push_str(&written(rng).text);
    }
    let deployment = rng.one_in(2).then(|| "app".to_string());
    (text, deployment)
}

fn random(rng: &mut Rng) -> (String, Option<String>) {
    let text = if rng.one_in(2) {
        String::from_utf8_lossy(&rng.bytes(4_096)).into_owned()
    } else {
        rng.text(4_096)
    };
    let deployment = match rng.below(3) {
        0 => None,
        1 => Some(rng.name()),
        _ => Some(rng.text(20)),
    };
    (text, deployment)
}

// ------------------------------------------------------------------------- properties

/// What any log gives is in the log: a session id that is one, written there; an original
/// only for a named deployment, with a count from 0 and a uid that is not empty.
fn check_any(text: &str, deployment: Option<&str>) {
    let facts = read_log(text, deployment);
    if let Some(id) = &facts.session_id {
        assert!(is_session_id(id), "session id {id:?}");
        assert!(
            text.contains(id.as_str()),
            "session id {id:?} is not in the log"
        );
    }
    if deployment.is_none_or(str::is_empty) {
        assert_eq!(
            facts.original_replicas, None,
            "an original without a deployment"
        );
        assert_eq!(facts.original_uid, None, "an original without a deployment");
    }
    assert!(facts.original_replicas.is_none_or(|n| n >= 0));
    if let Some(uid) = &facts.original_uid {
        assert!(!uid.is_empty());
        // Written as is, or with JSON escapes.
        assert!(
            text.contains(uid.as_str()) || text.contains('\\'),
            "uid {uid:?}"
        );
    }
}
