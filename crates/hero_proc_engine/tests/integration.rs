//! hero_proc_engine's integration tests in one binary (one link instead of one per file):
//! each module is one file of this folder. Run one with `cargo test -p hero_proc_engine --test integration <module>::`.

mod output_cap;
mod process;
