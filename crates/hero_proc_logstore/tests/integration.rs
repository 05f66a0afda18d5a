//! hero_proc_logstore's integration tests in one binary (one link instead of one per file):
//! each module is one file of this folder. Run one with `cargo test -p hero_proc_logstore --test integration <module>::`.

mod caps;
mod events;
mod job_output;
mod write_cap;
