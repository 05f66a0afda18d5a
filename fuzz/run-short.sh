#!/usr/bin/env bash
# Fuzz each target for SECS seconds (default 20, as CI runs it), starting from its
# committed, minimised corpus (fuzz/corpus/<target>/) and the hand-written seeds
# (fuzz/seeds/<target>/). The stable toolchain accepts cargo-fuzz's sanitizer flags with
# RUSTC_BOOTSTRAP=1 (no nightly here).
#
#   TARGETS="spec_loader sops_parser"   which targets (default: all three)
#   SEED=<n>      libFuzzer's seed (default: a new one per run, printed)
#   SECS=<n>      seconds per target
#   BUILD=--dev   build unoptimised (CI: 2 min instead of 7 cold on 2 cores, for about
#                 1/30 of the executions per second; default -O)
#   SANITIZER=none  no AddressSanitizer (CI: both targets are safe Rust over safe
#                 dependencies, where a fuzzer finds panics, overflows and hangs, not
#                 memory errors; ASan doubled the build and slowed each run). Default
#                 address, as cargo fuzz's.
#   KEEP=1        write new inputs into fuzz/corpus/<target>/ (to grow the committed
#                 corpus; minimise it afterwards, see docs/RELIABILITY.md); otherwise
#                 they go to fuzz/target/scratch-corpus/<target>/, which git ignores
#
# A crash fails the script; libFuzzer keeps the input in fuzz/artifacts/<target>/ and the
# script prints the command that replays it.
#
# rpc_request links the whole daemon (`--features daemon`) and starts the processes its
# inputs ask for; it runs in its own PID namespace where `unshare` allows it, so nothing
# it started outlives it even after a crash. CI leaves it out (a second, sanitizer build
# of the daemon) and runs its corpus and seeded mutations in `cargo test` instead
# (crates/hero_proc_daemon/tests/rpc_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECS:-20}"
targets="${TARGETS:-spec_loader sops_parser rpc_request}"
# libFuzzer's seed is an unsigned int; 0 would mean "pick one" (unprinted).
seed="${SEED:-$(( ( $(date +%s) * 32768 + RANDOM ) % 2147483646 + 1 ))}"
san="${SANITIZER:-address}"
echo "fuzz: seed $seed, ${secs}s per target (repeat: SEED=$seed SECS=$secs BUILD=${BUILD:--O} SANITIZER=$san TARGETS=\"$targets\" bash fuzz/run-short.sh)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in $targets; do
  features=()
  wrap=()
  if [ "$t" = rpc_request ]; then
    features=(--features daemon)
    if unshare --pid --fork --kill-child --mount-proc true 2>/dev/null; then
      wrap=(unshare --pid --fork --kill-child --mount-proc)
    else
      echo "fuzz: no PID namespace here; rpc_request kills what it started at exit, but not after a crash" >&2
    fi
  fi
  if [ "${KEEP:-}" = 1 ]; then
    out="corpus/$t"
    dirs=("seeds/$t")
  else
    out="target/scratch-corpus/$t"
    dirs=("corpus/$t" "seeds/$t")
  fi
  mkdir -p "$out" "corpus/$t"
  # The fuzz crate is its own workspace, so `cargo build --workspace` does not build it:
  # a target that no longer compiles is named as such, not reported as a crash.
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz build "${BUILD:--O}" -s "$san" "${features[@]}" "$t" >"$log" 2>&1; then
    grep -E -A12 '^error' "$log" | head -60 >&2
    echo "fuzz target $t does not build (fuzz/fuzz_targets/$t.rs against the workspace's current API)" >&2
    exit 1
  fi
  if ! RUSTC_BOOTSTRAP=1 "${wrap[@]}" cargo fuzz run "${BUILD:--O}" -s "$san" "${features[@]}" "$t" "$out" "${dirs[@]}" -- \
    -max_total_time="$secs" -seed="$seed" -timeout=120 >"$log" 2>&1; then
    tail -60 "$log" >&2
    crash="$(ls -t "artifacts/$t"/* 2>/dev/null | head -1 || true)"
    echo "fuzz target $t failed with seed $seed; the input is kept in fuzz/${crash:-artifacts/$t/}" >&2
    echo "replay it: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD:--O} -s $san ${features[*]} $t ${crash:-artifacts/$t/<file>}" >&2
    exit 1
  fi
  echo "$t: $(grep -E '^Done' "$log" | tail -1) (corpus $(ls "corpus/$t" | wc -l) files + $(ls "$out" | wc -l) new)"
done
