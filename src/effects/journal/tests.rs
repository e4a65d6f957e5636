use super::*;
use crate::session::{ProxyKind, State};

const ID: &str = "9dc6d5a80acf4e6dae1045b22bfdd1ef";

/// A journal in a fresh state directory (which `open` creates), and the temp dir that
/// holds it.
fn journal() -> (tempfile::TempDir, Journal) {
    let tmp = tempfile::tempdir().expect("creating a temp dir");
    let j = Journal::open(&tmp.path().join("state")).expect("opening the journal");
    (tmp, j)
}

fn state_dir(j: &Journal) -> &Path {
    j.dir().parent().expect("the journal dir has a parent")
}

/// A swap session of process `pid`, with a proxy and some history.
fn record(pid: u32) -> SessionRecord {
    SessionRecord::test()
        .with_process(pid, 1000)
        .swapping("app", 2)
        .with_id(ID)
        .with_proxy(
            ProxyKind::Pod,
            "app-9dc6d5a80acf4e6dae1045b22bfdd1ef",
            "uid-1",
        )
        .in_state(State::Active, "proxy pod found")
}

/// The names in `dir`, sorted; empty when it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("reading a dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn load(j: &Journal) -> (Vec<SessionRecord>, Vec<LoadProblem>) {
    j.load_all().expect("listing the journal")
}

#[test]
fn written_records_load_back_unchanged() {
    let (_tmp, j) = journal();
    let (a, b) = (record(4242), record(4243));
    j.write(&a).expect("writing a");
    j.write(&b).expect("writing b");
    let (records, problems) = load(&j);
    assert_eq!(problems, vec![]);
    assert_eq!(records, vec![a, b]);
}

#[test]
fn an_empty_journal_loads_nothing() {
    let (_tmp, j) = journal();
    let (records, problems) = load(&j);
    assert!(records.is_empty() && problems.is_empty());
}

#[test]
fn rewriting_replaces_the_record_and_leaves_no_temp_file() {
    let (_tmp, j) = journal();
    let mut rec = record(4242);
    j.write(&rec).expect("first write");
    rec.transition(State::Orphaned, "process exited");
    rec.act("delete pod/app-x (uid uid-1)", "done");
    j.write(&rec).expect("second write");
    let (records, problems) = load(&j);
    assert_eq!(problems, vec![]);
    assert_eq!(records, vec![rec]);
    assert_eq!(names_in(j.dir()), vec!["4242-1000.json"]);
}

#[cfg(unix)]
#[test]
fn records_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let (_tmp, j) = journal();
    let rec = record(4242);
    j.write(&rec).expect("writing");
    assert_eq!(mode(j.dir()), 0o700, "the journal dir");
    assert_eq!(mode(state_dir(&j)), 0o700, "the state dir open created");
    assert_eq!(mode(&j.dir().join("4242-1000.json")), 0o600, "the record");

    fs::write(j.dir().join("1-1.json"), b"{").expect("writing a corrupt record");
    let (_, problems) = load(&j);
    assert!(matches!(problems[..], [LoadProblem::Quarantined { .. }]));
    assert_eq!(
        mode(&state_dir(&j).join("quarantine")),
        0o700,
        "the quarantine dir"
    );
}

#[test]
fn corrupt_records_are_quarantined_and_the_good_ones_still_load() {
    let (_tmp, j) = journal();
    let good = record(4242);
    j.write(&good).expect("writing the good record");
    let full = serde_json::to_vec_pretty(&good).expect("encoding");
    let corrupt: [(&str, &[u8], &str); 4] = [
        ("1-1.json", &full[..full.len() / 2], "EOF"),
        ("2-2.json", b"\x00\xffnot json at all", ""),
        ("3-3.json", &full, "does not match its file name"),
        (
            "4-4.json",
            br#"{"schema": 1, "key": "4-4"}"#,
            "missing field",
        ),
    ];
    for (name, bytes, _) in corrupt {
        fs::write(j.dir().join(name), bytes).expect("writing a corrupt record");
    }

    let (records, problems) = load(&j);
    assert_eq!(records, vec![good]);
    assert_eq!(problems.len(), corrupt.len(), "{problems:#?}");
    let quarantine = state_dir(&j).join("quarantine");
    for ((name, bytes, why_has), problem) in corrupt.iter().zip(&problems) {
        let LoadProblem::Quarantined {
            path,
            moved_to,
            why,
        } = problem
        else {
            panic!("{name}: expected Quarantined, got {problem:?}");
        };
        assert_eq!(*path, j.dir().join(name));
        assert!(!path.exists(), "{name} was left in the journal");
        assert_eq!(moved_to.parent(), Some(quarantine.as_path()));
        assert!(
            moved_to.to_string_lossy().ends_with(name),
            "{name}: moved to {}",
            moved_to.display()
        );
        assert_eq!(
            fs::read(moved_to).expect("reading the quarantined file"),
            *bytes,
            "{name}: quarantined as it was"
        );
        assert!(why.contains(why_has), "{name}: {why:?} lacks {why_has:?}");
        assert!(problem.to_string().contains("corrupt"));
    }
    assert_eq!(names_in(j.dir()), vec!["4242-1000.json"]);

    // Quarantined once: the next load is clean.
    let (records, problems) = load(&j);
    assert_eq!((records.len(), problems), (1, vec![]));
}

#[test]
fn a_newer_schema_is_refused_and_left_in_place() {
    let (_tmp, j) = journal();
    let mut newer = serde_json::to_value(record(4242)).expect("encoding");
    newer["schema"] = 999.into();
    let path = j.dir().join("4242-1000.json");
    fs::write(&path, serde_json::to_vec(&newer).expect("encoding")).expect("writing");
    // A newer agent may also have changed the record's shape entirely.
    let reshaped = j.dir().join("5-5.json");
    fs::write(&reshaped, br#"{"schema": 2, "sessions": {}}"#).expect("writing");

    let (records, problems) = load(&j);
    assert_eq!(records, vec![]);
    assert_eq!(
        problems,
        vec![
            LoadProblem::NewerSchema {
                path: path.clone(),
                found: 999
            },
            LoadProblem::NewerSchema {
                path: reshaped.clone(),
                found: 2
            },
        ]
    );
    assert!(problems[0].to_string().contains("schema 999"));
    assert!(path.exists() && reshaped.exists(), "left in place");
    assert!(
        !state_dir(&j).join("quarantine").exists(),
        "nothing was quarantined"
    );
}

#[test]
fn hidden_temp_files_and_other_files_are_ignored() {
    let (_tmp, j) = journal();
    let rec = record(4242);
    j.write(&rec).expect("writing");
    let ignored = [
        ".4243-1000.json.tmp",
        ".4244-1000.json",
        "notes.txt",
        "4245-1000.json.bak",
    ];
    for name in ignored {
        fs::write(j.dir().join(name), b"{ torn").expect("writing");
    }
    let (records, problems) = load(&j);
    assert_eq!(problems, vec![]);
    assert_eq!(records, vec![rec]);
    for name in ignored {
        assert!(j.dir().join(name).exists(), "{name} was touched");
    }
}

#[test]
fn remove_deletes_a_record_and_accepts_a_missing_one() {
    let (_tmp, j) = journal();
    let rec = record(4242);
    j.write(&rec).expect("writing");
    j.remove(&rec.key).expect("removing an existing record");
    assert_eq!(names_in(j.dir()), Vec::<String>::new());
    j.remove(&rec.key).expect("removing it again");
    j.remove("9-9").expect("removing a record never written");
}

#[test]
fn reopening_keeps_the_records() {
    let tmp = tempfile::tempdir().expect("creating a temp dir");
    let rec = record(4242);
    Journal::open(tmp.path())
        .expect("opening")
        .write(&rec)
        .expect("writing");
    let (records, _) = load(&Journal::open(tmp.path()).expect("reopening"));
    assert_eq!(records, vec![rec]);
}

/// A record cut at any byte (a torn write, were the rename ever skipped) never loads as
/// something else and never disappears unreported.
#[test]
fn a_truncated_record_is_never_misread() {
    let (_tmp, j) = journal();
    let rec = record(4242);
    j.write(&rec).expect("writing");
    let path = j.dir().join("4242-1000.json");
    let full = fs::read(&path).expect("reading the record");
    for len in 0..=full.len() {
        fs::write(&path, &full[..len]).expect("writing a truncated record");
        let (records, problems) = load(&j);
        match (&records[..], &problems[..]) {
            ([r], []) => {
                assert_eq!(*r, rec, "cut at {len} of {}", full.len());
                assert_eq!(len, full.len(), "a cut record loaded");
            }
            ([], [LoadProblem::Quarantined { .. }]) => {
                assert!(len < full.len(), "the full record was quarantined");
            }
            _ => panic!("cut at {len}: records {records:?}, problems {problems:?}"),
        }
    }
}

/// The quarantine name has a one-second resolution, so a second corrupt file of the same
/// name in the same second overwrites the first one's evidence, while the first report
/// still points at it.
#[test]
fn quarantining_the_same_name_twice_keeps_both_copies() {
    let (_tmp, j) = journal();
    let path = j.dir().join("4242-1000.json");
    let mut moved = Vec::new();
    for bytes in [&b"first"[..], &b"second"[..]] {
        fs::write(&path, bytes).expect("writing a corrupt record");
        let (_, problems) = load(&j);
        let [LoadProblem::Quarantined { moved_to, .. }] = &problems[..] else {
            panic!("expected one Quarantined, got {problems:?}");
        };
        moved.push((moved_to.clone(), bytes));
    }
    for (moved_to, bytes) in moved {
        assert_eq!(
            fs::read(&moved_to).expect("reading the quarantined copy"),
            bytes,
            "{} holds another file's bytes",
            moved_to.display()
        );
    }
}
