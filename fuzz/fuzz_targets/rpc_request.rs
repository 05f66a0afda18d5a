//! The daemon's RPC request path on arbitrary bytes: each line of an input is POSTed to
//! the router the socket serves (`hero_proc_daemon::rpc::Router`: jsonrpsee's HTTP
//! handling, then the real handlers on a real store and engine over a temporary root,
//! see `fuzz/rpc_harness.rs`). Every answer must be a well-formed JSON-RPC response that
//! is not an internal error; a panic in any thread (a handler, the engine) aborts.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../rpc_harness.rs"]
mod rpc_harness;

static HARNESS: OnceLock<rpc_harness::Harness> = OnceLock::new();

extern "C" fn at_exit() {
    // The processes inputs started, and the root (a crash skips this: run-short.sh runs
    // the fuzzer in its own PID namespace, which the kernel empties when it ends).
    rpc_harness::reap_descendants();
    if let Some(h) = HARNESS.get() {
        let _ = std::fs::remove_dir_all(h.root());
    }
}

fuzz_target!(
    init: {
        // SAFETY: libFuzzer calls init once, before any input, from its only thread.
        HARNESS.get_or_init(|| unsafe { rpc_harness::Harness::boot() });
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(at_exit) };
    },
    |data: &[u8]| {
        let h = HARNESS.get().expect("init ran");
        if let Err(e) = h.feed(data) {
            panic!("{e}");
        }
    }
);
