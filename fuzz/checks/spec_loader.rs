//! What the `spec_loader` fuzz target asserts of one input, shared with the corpus replay
//! that `cargo test` runs (crates/hero_proc_spec/tests/fuzz_corpus.rs): the config
//! loader on arbitrary bytes (YAML tree, schema decoding, diagnostics) never panics, and
//! every input is either objects or errors.

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut diags = hero_proc_spec::Diagnostics::new();
    let set = hero_proc_spec::load::parse_objects("actions/fuzz.yaml", text, &mut diags);
    // Whatever was decoded round-trips through the store's JSON encoding.
    for a in &set.actions {
        let json = serde_json::to_string(a).expect("an action serialises");
        let back: hero_proc_spec::Action = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(&back, a.as_ref());
    }
    // Every diagnostic points into this file at a 1-based line and column that exist:
    // at most one line past the last (a line break is \r\n, \n or a lone \r, as in
    // YAML; the end of the text counts as a place).
    let lines = text.replace("\r\n", "\n").bytes().filter(|b| *b == b'\n' || *b == b'\r').count() as u64 + 1;
    for d in diags.finish() {
        assert_eq!(&*d.file, "actions/fuzz.yaml", "{d}");
        assert!(d.line >= 1 && u64::from(d.line) <= lines + 1, "line {} of {lines}: {d}", d.line);
        assert!(d.col >= 1 && u64::from(d.col) <= text.chars().count() as u64 + 1, "column {}: {d}", d.col);
    }
}
