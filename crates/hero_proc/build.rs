//! Link layout of the `hero_proc` binary, for the daemon's memory (docs/PERFORMANCE.md,
//! "Stop 29"):
//!
//! - `--symbol-ordering-file=hot-symbols.txt`: the ~3 MB of functions the daemon runs are
//!   packed at the start of `.text`. The kernel maps code in 64 KiB or larger windows around
//!   each page touched, so spread over 19 MB they made ~10 MB of the daemon's RSS.
//!   `tests/bench/hot_symbols.py` regenerates the list; names that no longer match are
//!   skipped (never an error), which only packs less.
//! - `-T hot-rodata.ld` (release builds): the read-only data those functions read (jump
//!   tables, string and other constants: ~190 KB of the 1.7 MB `.rodata`) first in
//!   `.rodata`, then the merged C strings and constants. Found page by page by the same
//!   script, natively (`tests/bench/hot_symbols.py`); a section it names that a build lacks
//!   is matched by nothing, which only packs less. Anchored `INSERT BEFORE .text`: lld
//!   fails a link whose anchor section is missing, and every link has a `.text`.
//!   `HERO_PROC_RODATA_ORDER=FILE` links with another script (the generator's own builds
//!   use it).
//! - `-z pack-relative-relocs` (RELR): the 1 MB of `R_X86_64_RELATIVE` relocations a PIE
//!   needs become 13 KB, read once at start instead of 1 MB. Needs glibc 2.36 at run time,
//!   so it is only used when the building host has it (a binary built here runs here).
//!
//! All three need rustc's own linker (rust-lld, the default on x86_64 Linux since Rust 1.90):
//! with a linker chosen in the environment or config, or `HERO_PROC_PLAIN_LINK=1`, none
//! is passed and the build links as before.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=HERO_PROC_PLAIN_LINK");
    println!("cargo:rerun-if-env-changed=HERO_PROC_RODATA_ORDER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let target_is = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let own_linker = std::env::var_os("RUSTC_LINKER").is_some() || var("CARGO_ENCODED_RUSTFLAGS").contains("linker");
    if !target_is || own_linker || var("HERO_PROC_PLAIN_LINK") == "1" || !rustc_links_with_lld() {
        return;
    }
    let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    if list.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", list.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // Release only: the names are a release build's, and matching them costs every link.
    let script = match var("HERO_PROC_RODATA_ORDER") {
        s if s.is_empty() => std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("hot-rodata.ld"),
        s => s.into(),
    };
    // The file in use, whichever it is: the generator rewrites its own under one name.
    println!("cargo:rerun-if-changed={}", script.display());
    if var("PROFILE") == "release" && script.is_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
    if var("HOST") == var("TARGET") && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// rustc links x86_64 Linux binaries with its bundled lld from 1.90 on.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    version_of(Command::new(rustc).arg("-V")) >= (1, 90)
}

fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    // "glibc 2.36"
    version_of(Command::new("getconf").arg("GNU_LIBC_VERSION")) >= (major, minor)
}

/// (major, minor) of the second word a command prints ("NAME 1.95.0 ..."); (0, 0) when
/// it cannot run or says something else.
fn version_of(cmd: &mut Command) -> (u32, u32) {
    let Ok(out) = cmd.output() else { return (0, 0) };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text.split_whitespace().nth(1).unwrap_or("").split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}
