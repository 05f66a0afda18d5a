#!/usr/bin/env bash
# A short fuzz run of every target (CI); the seeds are real files from this repository.
# Longer: SECS=600 fuzz/run-short.sh. The stable toolchain accepts cargo-fuzz's
# sanitizer flags with RUSTC_BOOTSTRAP=1 (no nightly here).
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECS:-20}"
log="$(mktemp)"
for t in spec_loader sops_parser rpc_request; do
  mkdir -p "corpus/$t"
  cp -n seeds/$t/* "corpus/$t/" 2>/dev/null || true
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -seed=1 >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz target $t failed (a crash is kept in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  echo "$t: $(grep -E '^Done' "$log" | tail -1)"
done
rm -f "$log"
