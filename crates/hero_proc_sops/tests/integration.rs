//! hero_proc_sops's integration tests in one binary (one link instead of one per file):
//! each module is one file of this folder. Run one with `cargo test -p hero_proc_sops --test integration <module>::`.

#[path = "../../../tests/support/fuzz_replay.rs"]
mod fuzz_replay;
#[path = "../../../tests/support/rng.rs"]
mod rng;

#[macro_use]
mod common;

mod fuzz_corpus;
mod hostile;
mod interop;
mod leak;
