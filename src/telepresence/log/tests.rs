use super::*;

const SWAP_0109: &str = include_str!("../testdata/standin-0.109-swap.log");
const SWAP_0105_VERBOSE: &str = include_str!("../testdata/standin-0.105-verbose-swap.log");
const NEW_0109: &str = include_str!("../testdata/standin-0.109-new.log");
const UID: &str = "6f1c2a9e-3b7d-4c55-9a0e-1d2b3c4d5e6f";
const ID: &str = "0123456789abcdef0123456789abcdef";
const OTHER: &str = "fedcba9876543210fedcba9876543210";

fn facts(id: Option<&str>, replicas: Option<i32>, uid: Option<&str>) -> LogFacts {
    LogFacts {
        session_id: id.map(String::from),
        original_replicas: replicas,
        original_uid: uid.map(String::from),
    }
}

/// A log in the stand-in's format: each `(tag, text)` becomes `   0.1 <tag> | <line>`.
fn log(parts: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (tag, text) in parts {
        for line in text.lines() {
            out.push_str(&format!("{:>6.1} {tag:>3} | {line}\n", 0.1));
        }
    }
    out
}

fn deployment_json(name: &str, replicas: &str) -> String {
    format!(
        "{{\n  \"apiVersion\": \"apps/v1\",\n  \"kind\": \"Deployment\",\n  \"metadata\": \
         {{\n    \"name\": \"{name}\",\n    \"uid\": \"{UID}\"\n  }},\n  \"spec\": {{{replicas}\n    \
         \"template\": {{}}\n  }}\n}}"
    )
}

#[test]
fn stand_in_logs() {
    let cases = [
        (
            SWAP_0109,
            Some("very-long-deployment-name-api"),
            facts(Some("9dc6d5a80acf4e6dae1045b22bfdd1ef"), Some(3), Some(UID)),
        ),
        // Without the deployment: the id still comes from `-l telepresence=<id>`.
        (
            SWAP_0109,
            None,
            facts(Some("9dc6d5a80acf4e6dae1045b22bfdd1ef"), None, None),
        ),
        // Another deployment's name finds no original.
        (
            SWAP_0109,
            Some("very-long-deployment"),
            facts(Some("9dc6d5a80acf4e6dae1045b22bfdd1ef"), None, None),
        ),
        // 0.105 with --verbose also logs the proxy Deployment (replicas 1) on one line;
        // the original is the multi-line one with the original's name.
        (
            SWAP_0105_VERBOSE,
            Some("app"),
            facts(Some("1e4ddbdc577841eca02d57f82a66b710"), Some(3), Some(UID)),
        ),
        // The proxy's log, appended later, mentions another id: the first one wins.
        (
            NEW_0109,
            None,
            facts(Some("e0cedd148e80408aabf24dbf3b5f4593"), None, None),
        ),
    ];
    for (text, deployment, want) in cases {
        assert_eq!(read_log(text, deployment), want, "{deployment:?}");
    }
}

#[test]
fn a_log_cut_short_before_the_label_is_used() {
    // Killed right after creating the proxy pod: only the logged pod JSON has the id.
    let cut = NEW_0109
        .split_inclusive('\n')
        .take_while(|line| !line.contains("Waiting for the proxy pod"))
        .collect::<String>();
    assert_eq!(
        read_log(&cut, None).session_id.as_deref(),
        Some("e0cedd148e80408aabf24dbf3b5f4593")
    );
    // And a log cut before any kubectl output gives nothing.
    let start: String = SWAP_0109.lines().take(5).collect::<Vec<_>>().join("\n");
    assert_eq!(read_log(&start, Some("app")), LogFacts::default());
}

#[test]
fn original_replicas() {
    let with = |replicas: &str| {
        log(&[
            ("TEL", "[1] Running: kubectl get deploy app -o json"),
            ("1", &deployment_json("app", replicas)),
        ])
    };
    let cases = [
        ("\n    \"replicas\": 3,", Some(3)),
        ("\n    \"replicas\": 0,", Some(0)),
        ("", Some(1)),
        ("\n    \"replicas\": null,", Some(1)),
        ("\n    \"replicas\": \"3\",", None),
        ("\n    \"replicas\": -1,", None),
        ("\n    \"replicas\": 2.5,", None),
        ("\n    \"replicas\": 4294967296,", None),
    ];
    for (replicas, want) in cases {
        let got = read_log(&with(replicas), Some("app"));
        assert_eq!(got, facts(None, want, Some(UID)), "{replicas:?}");
    }
}

#[test]
fn which_object_is_the_original() {
    let three = deployment_json("app", "\n    \"replicas\": 3,");
    let zero = deployment_json("app", "\n    \"replicas\": 0,");
    let pod = three.replace("\"Deployment\"", "\"Pod\"");
    let other = deployment_json("app2", "\n    \"replicas\": 7,");
    let cases: Vec<(String, Option<i32>)> = vec![
        // The first wins: it was fetched before the scale-down.
        (log(&[("1", &three), ("5", &zero)]), Some(3)),
        (log(&[("1", &zero), ("5", &three)]), Some(0)),
        // Same name, other kind; other name, same kind.
        (log(&[("1", &pod), ("2", &other), ("3", &zero)]), Some(0)),
        (log(&[("1", &pod), ("2", &other)]), None),
        // Unprefixed (logged to a terminal and saved, or kubectl's own output).
        (format!("{three}\n"), Some(3)),
        // Windows line ends.
        (log(&[("1", &three)]).replace('\n', "\r\n"), Some(3)),
        // A bar with no blank before it, or none after.
        (log(&[("1", &three)]).replace("1 | ", "1| "), Some(3)),
        (log(&[("1", &three)]).replace("1 | ", "1 |"), Some(3)),
        // All on one line, as a `kubectl apply -f -` input is logged.
        (log(&[("1", &three.replace('\n', ""))]), Some(3)),
        // An opening brace that never closes, in another command's output, is given up
        // when that output ends.
        (
            log(&[("TEL", "T: {oops"), ("1", "{ \"half\": ["), ("2", &three)]),
            Some(3),
        ),
        // A line that ends inside a string is not JSON.
        (
            log(&[("1", "{\"a\": \"unterminated"), ("1", &three)]),
            Some(3),
        ),
        // Unprefixed lines (the proxy's log) between the lines of a prefixed object.
        (
            log(&[("1", &three)]).replacen("\n", "\nproxy: { \"ready\n", 3),
            Some(3),
        ),
    ];
    for (text, want) in cases {
        let got = read_log(&text, Some("app")).original_replicas;
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn session_id_mentions() {
    let cases: Vec<(String, Option<&str>, Option<&str>)> = vec![
        (
            format!("delete pod,service --selector=telepresence={ID}"),
            None,
            Some(ID),
        ),
        (
            format!("get pod -l telepresence={ID} -o json"),
            None,
            Some(ID),
        ),
        (format!("selector app=x,telepresence={ID}"), None, Some(ID)),
        (format!("telepresence={ID}"), None, Some(ID)),
        (format!("label telepresence={ID}."), None, Some(ID)),
        // Not our label key, or not a whole id.
        (format!("-l mytelepresence={ID}"), None, None),
        (format!("-l example.com/telepresence={ID}"), None, None),
        (format!("-l telepresence={ID}0"), None, None),
        (format!("-l telepresence={ID}-x"), None, None),
        (format!("-l telepresence={ID}.x"), None, None),
        (format!("-l telepresence={}", ID.to_uppercase()), None, None),
        (format!("-l telepresence={}", &ID[..31]), None, None),
        ("-l telepresence=".to_string(), None, None),
        // A swap proxy's name, for the right deployment only.
        (format!("delete pod app-{ID}"), Some("app"), Some(ID)),
        (format!("pod \"app-{ID}\" deleted"), Some("app"), Some(ID)),
        (format!("pod/app-{ID}-7d9f8b-x2k4q"), Some("app"), Some(ID)),
        (format!("for proxy app-{ID}."), Some("app"), Some(ID)),
        (format!("delete pod app-{ID}"), None, None),
        (format!("delete pod app-{ID}"), Some("api"), None),
        (format!("delete pod my-app-{ID}"), Some("app"), None),
        (format!("delete pod app-{ID}x"), Some("app"), None),
        (
            format!("delete pod very-long-deploym-{ID}"),
            Some("very-long-deployment-name-api"),
            Some(ID),
        ),
        (
            format!("delete pod very-long-deployment-name-api-{ID}"),
            Some("very-long-deployment-name-api"),
            None,
        ),
        // The first mention of either form wins.
        (
            format!("app-{ID}\n-l telepresence={OTHER}"),
            Some("app"),
            Some(ID),
        ),
        (
            format!("-l telepresence={OTHER}\napp-{ID}"),
            Some("app"),
            Some(OTHER),
        ),
        // Logged JSON counts only when nothing else does.
        (
            format!("{{\"labels\": {{\"telepresence\": \"{ID}\"}}}}"),
            None,
            Some(ID),
        ),
        (format!("\"telepresence\":\"{ID}\""), None, Some(ID)),
        (
            format!("{{\"telepresence\": \"{OTHER}\"}}\n-l telepresence={ID}"),
            None,
            Some(ID),
        ),
        (format!("\"telepresence\": \"{ID}0\""), None, None),
        // Escaped JSON inside an annotation does not count.
        (
            format!("\"a\": \"{{\\\"telepresence\\\":\\\"{ID}\\\"}}\""),
            None,
            None,
        ),
    ];
    for (text, deployment, want) in cases {
        assert_eq!(
            read_log(&text, deployment).session_id.as_deref(),
            want,
            "{text:?} {deployment:?}"
        );
    }
}

#[test]
fn prefixes() {
    let cases = [
        ("   0.0 TEL | text", Some("TEL"), "text"),
        ("   0.3   1 | {", Some("1"), "{"),
        (
            "   0.3   1 |     \"kind\": \"Deployment\",",
            Some("1"),
            "    \"kind\": \"Deployment\",",
        ),
        ("1234.5 12 |", Some("12"), ""),
        ("0.0 TEL|text", Some("TEL"), "text"),
        ("0.0 a|b | c", Some("a|b"), "c"),
        ("0.0 TEL text", None, "0.0 TEL text"),
        ("0.0TEL | text", None, "0.0TEL | text"),
        ("TEL | text", None, "TEL | text"),
        ("    \"replicas\": 3,", None, "    \"replicas\": 3,"),
        ("    3,", None, "    3,"),
        ("0.0 |x", None, "0.0 |x"),
        ("", None, ""),
        ("0.0 ", None, "0.0 "),
    ];
    for (line, tag, content) in cases {
        assert_eq!(split_prefix(line), (tag, content), "{line:?}");
    }
}

#[test]
fn garbage_is_harmless() {
    let deep = "[".repeat(200_000) + &"]".repeat(200_000);
    let cases = [
        String::new(),
        "\n\n\n".to_string(),
        "{".repeat(100_000),
        "{\n".repeat(100_000),
        "\"\\".repeat(100_000),
        format!("{{{deep}}}"),
        "   0.0   1 | {\n   0.0   2 | {\n".repeat(50_000),
        "telepresence=".repeat(100_000),
        format!("app-{}", "a".repeat(31)).repeat(10_000),
        "\"telepresence\":        ".repeat(10_000),
        "é|ü 0.0 ß | ∂{".repeat(10_000),
        "\0\u{feff}\u{2028}}]]}".repeat(10_000),
    ];
    for text in cases {
        let got = read_log(&text, Some("app"));
        assert_eq!(
            got,
            LogFacts::default(),
            "{:?}",
            &text[..text.len().min(40)]
        );
    }
}

#[test]
fn big_logs_are_read_up_to_the_cap() {
    let three = log(&[("1", &deployment_json("app", "\n    \"replicas\": 3,"))]);
    // An object that never closes swallows a lot, but not more than its cap, and the
    // object after it is still found.
    let unclosed = format!("{{\n{}", "\"x\": 1,\n".repeat(MAX_OBJECT_BYTES / 8 + 10));
    let text = format!("{unclosed}{three}");
    assert_eq!(read_log(&text, Some("app")).original_replicas, Some(3));
    // Past MAX_LOG_BYTES nothing is read; a multi-byte character on the cut is fine.
    let filler = format!("x{}", "é".repeat(MAX_LOG_BYTES / 2));
    let text = format!("{filler}\n{three}-l telepresence={ID}\n");
    assert_eq!(read_log(&text, Some("app")), LogFacts::default());
    let text = format!("{}\n{three}", "x".repeat(MAX_LOG_BYTES - three.len() - 1));
    assert_eq!(read_log(&text, Some("app")).original_replicas, Some(3));
}

#[test]
fn facts_round_trip_through_json() {
    let facts = read_log(SWAP_0109, Some("very-long-deployment-name-api"));
    let json = serde_json::to_string(&facts).expect("encodes");
    assert_eq!(serde_json::from_str::<LogFacts>(&json).ok(), Some(facts));
}
