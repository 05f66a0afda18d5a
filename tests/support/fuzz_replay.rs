//! A fuzz target's committed corpus (`fuzz/corpus/<target>/`) and hand-written seeds
//! (`fuzz/seeds/<target>/`) replayed through the target's own check (`fuzz/checks/`),
//! then seeded mutations of them, under `cargo test`: every CI run checks the loader and
//! the SOPS parser against the corpus and a new seed, on the debug build it already has,
//! instead of a second, instrumented build. libFuzzer's coverage-guided runs are for
//! longer sessions (`fuzz/run-short.sh`, docs/RELIABILITY.md).
//!
//! The seed changes on every run and is printed; `HERO_PROC_FUZZ_SEED=<seed>` replays a
//! run and `HERO_PROC_FUZZ_CASES=<n>` sets the number of mutated inputs. A failing input
//! is written to `fuzz/artifacts/<target>/` and named in the failure.
//!
//! Included by path (`#[path]`) next to `rng.rs`, which it uses as `crate::rng`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::rng::Rng;

/// Replays and mutates `target`'s inputs through `check`, which panics on a finding.
/// `tokens` are fragments of the input language that byte mutations rarely produce.
pub fn replay_and_mutate(target: &str, default_cases: u64, tokens: &[&str], check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let (seed, cases) = seed_and_cases(default_cases);
    println!(
        "{target}: seed {seed}, {cases} mutated inputs (replay: HERO_PROC_FUZZ_SEED={seed} cargo test --workspace fuzz_corpus)"
    );

    let mut corpus = read_inputs(&fuzz.join("corpus").join(target));
    assert!(corpus.len() >= 20, "the committed corpus of {target} is missing: {} inputs", corpus.len());
    corpus.extend(read_inputs(&fuzz.join("seeds").join(target)));

    let run = |what: &str, input: &[u8]| {
        if let Err(p) = std::panic::catch_unwind(|| check(input)) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = fuzz.join("artifacts").join(target);
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("replay-{seed}-{}", what.replace(['/', ' '], "_")));
            let _ = std::fs::write(&file, input);
            panic!(
                "{target}: {what} panicked (input kept in {}; seed {seed}): {msg}\ninput: {}",
                file.display(),
                String::from_utf8_lossy(input)
            );
        }
    };

    let started = Instant::now();
    for (name, input) in &corpus {
        run(&format!("corpus {name}"), input);
    }
    let replayed = started.elapsed();
    let mut rng = Rng(seed);
    for i in 0..cases {
        let mut input = corpus[rng.below(corpus.len())].1.clone();
        for _ in 0..=rng.below(4) {
            input = mutate(&mut rng, input, &corpus, tokens);
        }
        run(&format!("mutation {i}"), &input);
    }
    println!(
        "{target}: {} corpus inputs in {:.2} s, {cases} mutated inputs in {:.2} s",
        corpus.len(),
        replayed.as_secs_f64(),
        (started.elapsed() - replayed).as_secs_f64()
    );
}

/// This run's seed (`HERO_PROC_FUZZ_SEED`, else a new one) and number of mutated inputs
/// (`HERO_PROC_FUZZ_CASES`, else `default_cases`).
pub fn seed_and_cases(default_cases: u64) -> (u64, u64) {
    let seed: u64 = match std::env::var("HERO_PROC_FUZZ_SEED") {
        Ok(s) => s.parse().expect("HERO_PROC_FUZZ_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    let cases: u64 = std::env::var("HERO_PROC_FUZZ_CASES").map_or(default_cases, |s| s.parse().expect("a number"));
    (seed, cases)
}

/// The files of `dir` (none if it is missing), by name.
pub fn read_inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// One mutation: of the bytes (as libFuzzer's), of the lines (the unit of YAML), a token
/// of the language inserted, or a splice with another input.
fn mutate(rng: &mut Rng, mut input: Vec<u8>, corpus: &[(String, Vec<u8>)], tokens: &[&str]) -> Vec<u8> {
    if input.is_empty() {
        input.extend_from_slice(tokens.first().map_or(&b"a"[..], |t| t.as_bytes()));
    }
    let at = rng.below(input.len());
    match rng.below(12) {
        0 => input[at] ^= 1 << rng.below(8),
        1 => input[at] = b":-#&*!|>'\"{}[], \t\n\r\\\x00\xff0aZ"[rng.below(25)],
        2 => {
            let end = (at + 1 + rng.below(32)).min(input.len());
            input.drain(at..end);
        }
        3 => {
            let end = (at + 1 + rng.below(32)).min(input.len());
            let piece = input[at..end].to_vec();
            input.splice(at..at, piece);
        }
        4 => {
            let piece: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            input.splice(at..at, piece);
        }
        5 | 6 if !tokens.is_empty() => {
            let t = tokens[rng.below(tokens.len())].as_bytes().to_vec();
            input.splice(at..at, t);
        }
        7..=9 => {
            // Line-wise: drop, repeat, swap, re-indent, or borrow a line of another input.
            let mut lines: Vec<Vec<u8>> = input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            let i = rng.below(lines.len());
            let j = rng.below(lines.len());
            match rng.below(5) {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.insert(j, l);
                }
                2 => lines.swap(i, j),
                3 => {
                    let indent = vec![b' '; rng.below(9)];
                    let l = &mut lines[i];
                    let body = l.iter().position(|b| *b != b' ').unwrap_or(l.len());
                    l.splice(..body, indent);
                }
                _ => {
                    let other = &corpus[rng.below(corpus.len())].1;
                    let theirs: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
                    lines.insert(j, theirs[rng.below(theirs.len())].to_vec());
                }
            }
            input = lines.join(&b'\n');
        }
        _ => {
            let other = &corpus[rng.below(corpus.len())].1;
            let cut = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[cut..]);
        }
    }
    input
}
