//! SOPS files on arbitrary bytes: structure inspection without a key and decryption with
//! a key that opens nothing. Typed errors only, no panic.
#![no_main]

#[path = "../checks/sops_parser.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
