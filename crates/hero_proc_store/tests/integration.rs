//! hero_proc_store's integration tests in one binary (one link instead of one per file):
//! each module is one file of this folder. Run one with `cargo test -p hero_proc_store --test integration <module>::`.

#[macro_use]
mod support;

mod batch;
mod compaction;
mod faults;
mod open;
mod roundtrip;
