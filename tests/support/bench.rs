//! The mode of a benchmark (`tests/bench/*.rs` and the crates' `benches/`, `harness = false`).
//!
//! `cargo bench` passes `--bench`: full size. `cargo test` runs the same binary without
//! it (every `[[bench]]` has `test = true`): a tiny size that still goes through every
//! code path and every baseline once, panics if the product misbehaves, and prints its
//! figures only as information.

/// Full size (`--bench`) or smoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Smoke,
}

impl Mode {
    /// The mode of this run, or `None` when the run must do nothing: a `--list` (test
    /// listers), or a test-name filter that does not match `name` (as libtest would).
    pub fn from_args(name: &str) -> Option<Mode> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--list") {
            return None;
        }
        // Positional arguments are name filters; the value after `--skip` is not one.
        let filters: Vec<&String> = args
            .iter()
            .enumerate()
            .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--skip"))
            .map(|(_, a)| a)
            .collect();
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            return None;
        }
        Some(if args.iter().any(|a| a == "--bench") { Mode::Full } else { Mode::Smoke })
    }

    /// `full` in a full run, `smoke` in a smoke run; `env` (when set to a number)
    /// overrides either.
    pub fn size(self, env: &str, full: usize, smoke: usize) -> usize {
        std::env::var(env).ok().and_then(|v| v.parse().ok()).unwrap_or(match self {
            Mode::Full => full,
            Mode::Smoke => smoke,
        })
    }

    pub fn is_smoke(self) -> bool {
        self == Mode::Smoke
    }

    /// How the figures below were made, for the first line of the output.
    pub fn banner(self, bench: &str) -> String {
        match self {
            Mode::Full => format!(
                "{bench} benchmark (full size) — `cargo bench --workspace --bench {bench}`, {} cores",
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
            ),
            Mode::Smoke => format!(
                "{bench} benchmark, SMOKE size (figures for information only; `cargo bench --workspace --bench {bench}` runs it full size)"
            ),
        }
    }
}
