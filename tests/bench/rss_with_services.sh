#!/usr/bin/env bash
# RSS of a daemon with N running services (default 50), after 3 s idle:
#   bash tests/bench/rss_with_services.sh target/release/hero_proc [N]
# Prints the VmRSS, RssAnon and RssFile lines of /proc/PID/status (docs/PERFORMANCE.md).
set -euo pipefail
B=$(realpath "$1"); N=${2:-50}
R=$(mktemp -d); export HERO_ROOTDIR=$R HERO_PROC_NO_AUTOSTART_DB=1
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$R"' EXIT
{
  echo "actions:"; for i in $(seq 0 $((N - 1))); do printf '  - name: s%s\n    script: /bin/sleep 100000\n    process: true\n' "$i"; done
  echo "services:"; for i in $(seq 0 $((N - 1))); do printf '  - name: s%s\n' "$i"; done
} > "$R/svc.yaml"
"$B" serve --stop-on-exit > "$R/log" 2>&1 &
P=$!
for _ in $(seq 200); do [ -S "$R/var/sockets/hero_proc.sock" ] && break; sleep 0.05; done
"$B" service set "$R/svc.yaml" > /dev/null
for _ in $(seq 200); do [ "$("$B" service list | grep -c running)" = "$N" ] && break; sleep 0.1; done
sleep 3
grep -E "VmRSS|RssAnon|RssFile" /proc/$P/status | tr -s ' \t\n' ' '; echo
