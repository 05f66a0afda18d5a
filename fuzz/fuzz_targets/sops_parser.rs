//! SOPS files on arbitrary bytes: structure inspection without a key and decryption with
//! a key that opens nothing. Typed errors only, no panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn keys() -> &'static hero_proc_sops::LoadedIdentities {
    static KEYS: OnceLock<hero_proc_sops::LoadedIdentities> = OnceLock::new();
    // A key that opens nothing an input can hold: every path up to the key unwrap runs.
    KEYS.get_or_init(|| hero_proc_sops::LoadedIdentities::from_identities(vec![hero_proc_sops::Identity::generate()]))
}

fuzz_target!(|data: &[u8]| {
    let _ = hero_proc_sops::inspect(data);
    let _ = hero_proc_sops::decrypt(data, keys());
});
