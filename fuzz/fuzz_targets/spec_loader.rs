//! The config loader on arbitrary bytes: YAML tree, schema decoding, diagnostics.
//! Must never panic, hang or blow up memory; every input is either objects or errors.
#![no_main]

#[path = "../checks/spec_loader.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
