//! Generated-input tests of everything that reads untrusted input (outside the library,
//! through its public API): the 0.x command line, the classification of other processes'
//! command lines and the matching of helpers, `telepresence.log`, journal records, and
//! Telepresence 2's session cache and daemon info.
//!
//! Each target generates a case from a seed, then checks it: no panic, and the target's
//! properties (what a parse reports is in its input, a valid record round-trips, ...).
//! Cases are bounded in size, so a hang shows as a run that does not finish; the slowest
//! case of each run is printed with its seed, and no test asserts on time.
//!
//! # Running
//! `cargo test --test tests fuzz::` runs 100 to 3,000 cases per target, about 2 s on a debug build
//! and two cores. Millions, with release optimisation and overflow checks (the `fuzz`
//! profile):
//!
//! ```sh
//! FUZZ_CASES=1000000 cargo test --profile fuzz -p telepolice-agent --test tests fuzz:: -- \
//!     --nocapture --test-threads 1
//! ```
//!
//! - `FUZZ_CASES`: cases per target (default: each target's own).
//! - `FUZZ_SEED`: the run's seed, decimal or `0x` hex (default: a fixed one, so CI is
//!   repeatable).
//! - `FUZZ_REPLAY`: one case's seed, as a failure prints it: runs only that case and shows
//!   its whole input.
//!
//! A failure prints the case's seed and input. A failing input found this way is kept as a
//! named test in the module that parses it, where it reads as a fixed example.
//!
//! # Layout
//! - `rng`: the per-case generator and the text and byte-mutation building blocks.
//! - `argv`: `parse_legacy_args`.
//! - `processes`: `classify`, `program_index`, `helpers::select`, `container_matches`.
//! - `log`: `read_log`.
//! - `journal`: `journal::decode` and `encode`.
//! - `cache2`: Telepresence 2's session cache and daemon info, and daemon ids.

mod argv;
mod cache2;
mod journal;
mod log;
mod processes;
mod rng;

use std::fmt::Debug;
use std::time::{Duration, Instant};

pub(crate) use rng::{Bytes, Rng};

/// The run's settings, from the environment.
#[derive(Debug)]
struct Settings {
    cases: Option<u64>,
    seed: u64,
    replay: Option<u64>,
}

/// The seed when `FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x7e1e_9011_ce00_0004;

fn parse_number(var: &str) -> Option<u64> {
    let text = std::env::var(var).ok()?;
    let text = text.trim().replace('_', "");
    let n = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(n.unwrap_or_else(|e| panic!("{var}={text:?} is not a number: {e}")))
}

fn settings() -> Settings {
    Settings {
        cases: parse_number("FUZZ_CASES"),
        seed: parse_number("FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        replay: parse_number("FUZZ_REPLAY"),
    }
}

/// Prints what is needed to replay a case if the thread panics while it is alive.
struct OnPanic<'a> {
    target: &'a str,
    seed: u64,
    input: Option<&'a dyn Debug>,
}

/// How much of a failing input is printed; the seed replays the rest.
const SHOWN_INPUT_CHARS: usize = 4_000;

impl Drop for OnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let input = self.input.map(|i| format!("{i:?}")).unwrap_or_default();
        let shown: String = input.chars().take(SHOWN_INPUT_CHARS).collect();
        let cut = if shown.len() < input.len() {
            " [cut]"
        } else {
            ""
        };
        eprintln!(
            "fuzz {}: the case with seed {:#x} failed; replay it with \
             FUZZ_REPLAY={:#x} cargo test --test tests fuzz::{}\ninput: {shown}{cut}",
            self.target, self.seed, self.seed, self.target
        );
    }
}

/// Runs `default_cases` cases (or `FUZZ_CASES`) of one target: each makes an input with
/// `generate` from its own seed and checks it with `check`, which panics on a violated
/// property. Prints the count, the time taken and the slowest check with its seed (a
/// slow outlier on a busy machine is usually the scheduler: replay it to see).
pub(crate) fn run<I: Debug>(
    target: &str,
    default_cases: u64,
    generate: impl Fn(&mut Rng) -> I,
    check: impl Fn(&I),
) {
    let settings = settings();
    let seeds: Box<dyn Iterator<Item = u64>> = match settings.replay {
        Some(seed) => Box::new(std::iter::once(seed)),
        None => {
            let base = settings.seed;
            let cases = settings.cases.unwrap_or(default_cases);
            Box::new((0..cases).map(move |i| rng::case_seed(base, i)))
        }
    };
    let started = Instant::now();
    let mut checking = Duration::ZERO;
    let mut slowest = (Duration::ZERO, 0);
    let mut cases = 0u64;
    for seed in seeds {
        let input;
        let mut guard = OnPanic {
            target,
            seed,
            input: None,
        };
        input = generate(&mut Rng::new(seed));
        guard.input = Some(&input);
        if settings.replay.is_some() {
            eprintln!("fuzz {target}: replaying {seed:#x}: {input:?}");
        }
        let at = Instant::now();
        check(&input);
        let took = at.elapsed();
        drop(guard);
        checking += took;
        if took > slowest.0 {
            slowest = (took, seed);
        }
        cases += 1;
    }
    let total = started.elapsed();
    let from = match settings.replay {
        Some(_) => "replayed".to_string(),
        None => format!("seed {:#x}", settings.seed),
    };
    // "Checking" is the code under test and the properties checked on its answer; the
    // rest of the total is generating the inputs.
    eprintln!(
        "fuzz {target}: {cases} cases ({from}) in {:.2} s, {:.2} s of it checking ({:.1} µs \
         a case; the slowest {:.1} ms, FUZZ_REPLAY={:#x})",
        total.as_secs_f64(),
        checking.as_secs_f64(),
        checking.as_secs_f64() * 1e6 / cases.max(1) as f64,
        slowest.0.as_secs_f64() * 1e3,
        slowest.1,
    );
}
