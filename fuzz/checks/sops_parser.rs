//! What the `sops_parser` fuzz target asserts of one input, shared with the corpus replay
//! that `cargo test` runs (crates/hero_proc_sops/tests/fuzz_corpus.rs): SOPS files on
//! arbitrary bytes, inspected without a key and decrypted with a key that opens nothing,
//! give typed errors only, never a panic.

use std::sync::OnceLock;

fn keys() -> &'static hero_proc_sops::LoadedIdentities {
    static KEYS: OnceLock<hero_proc_sops::LoadedIdentities> = OnceLock::new();
    // A key that opens nothing an input can hold: every path up to the key unwrap runs.
    KEYS.get_or_init(|| hero_proc_sops::LoadedIdentities::from_identities(vec![hero_proc_sops::Identity::generate()]))
}

pub fn check(data: &[u8]) {
    let _ = hero_proc_sops::inspect(data);
    let _ = hero_proc_sops::decrypt(data, keys());
}
