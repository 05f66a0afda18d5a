//! The `sops_parser` fuzz target's corpus and seeded mutations of it, through the
//! target's own check (`fuzz/checks/sops_parser.rs`), on every `cargo test`.

#[path = "../../../fuzz/checks/sops_parser.rs"]
mod sops_parser;

/// SOPS structure that byte flips rarely build: encrypted values, the metadata block and
/// its keys, age stanzas.
const TOKENS: &[&str] = &[
    "ENC[AES256_GCM,data:",
    ",iv:",
    ",tag:",
    ",type:str]",
    ",type:int]",
    ",type:bytes]",
    "sops:\n",
    "  age:\n",
    "    - recipient: ",
    "      enc: |\n",
    "-----BEGIN AGE ENCRYPTED FILE-----\n",
    "-----END AGE ENCRYPTED FILE-----\n",
    "  mac: ",
    "  lastmodified: ",
    "  version: 3.9.0\n",
    "  unencrypted_suffix: _unencrypted\n",
    "  encrypted_regex: ",
    "AAAA",
    "====",
    ": ",
    "- ",
    "&a ",
    "*a",
    "{",
    "[",
    "'",
    "\"",
    "\t",
    "#",
];

#[test]
fn fuzz_corpus_and_seeded_mutations() {
    crate::fuzz_replay::replay_and_mutate("sops_parser", 20_000, TOKENS, sops_parser::check);
}
