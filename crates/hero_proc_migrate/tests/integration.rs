//! hero_proc_migrate's integration tests in one binary (one link instead of one per file):
//! each module is one file of this folder. Run one with `cargo test -p hero_proc_migrate --test integration <module>::`.

#[macro_use]
mod common;

mod api;
mod dry_run;
mod guide;
mod runner;
mod sandbox;
