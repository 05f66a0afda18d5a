//! The `spec_loader` fuzz target's corpus and seeded mutations of it, through the
//! target's own check (`fuzz/checks/spec_loader.rs`), on every `cargo test`.

#[path = "../../../fuzz/checks/spec_loader.rs"]
mod spec_loader;

/// YAML that byte flips rarely build: anchors, aliases, merge keys, tags, block scalars,
/// flow collections, documents, and the schema's own keys.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!binary ",
    "!custom ",
    "|\n  ",
    ">-\n  ",
    "{",
    "}",
    "[",
    "]",
    "? ",
    "---\n",
    "...\n",
    "~",
    "%YAML 1.2\n",
    "\"\\u0000\"",
    "'",
    "#",
    "\t",
    "1e999",
    "-0x7f",
    "99999999999999999999",
    ": ",
    "- ",
    "name: ",
    "actions:\n  - ",
    "exec: ",
    "script: ",
    "env:\n    ",
    "secret: ",
    "schedule: \"* * * * *\"\n",
    "health:\n  ",
    "requires: [",
    "after: ",
    "timeout: ",
    "restart: ",
    "${",
    "$HERO_ROOTDIR/bin/x@1",
    "\u{feff}",
    "é",
    "\u{2028}",
];

#[test]
fn fuzz_corpus_and_seeded_mutations() {
    crate::fuzz_replay::replay_and_mutate("spec_loader", 20_000, TOKENS, spec_loader::check);
}
