//! hero_proc_spec's integration tests in one binary (one link instead of one per file):
//! each module is one file of this folder. Run one with `cargo test -p hero_proc_spec --test integration <module>::`.

#[path = "../../../tests/support/fuzz_replay.rs"]
mod fuzz_replay;
#[path = "../../../tests/support/rng.rs"]
mod rng;

#[macro_use]
mod support;

mod checks;
mod fuzz_corpus;
mod parse_cache;
mod secrets_and_git;
