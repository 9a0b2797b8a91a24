#!/usr/bin/env bash
# Installs everything, then runs the whole test suite: unit tests and the end-to-end tests
# against a private containerd and real runc, for our shim and for containerd's Go shim.
# Every group runs even when one fails; the last line counts them all.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root: the end-to-end tests run real containers" >&2
  exit 1
fi
scripts/install.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The tests build with the light `ci` profile (Cargo.toml); the shim they run is the release
# binary install.sh has just built, the one users install.
export SHIM_UNDER_TEST=/usr/local/bin/containerd-shim-rust-v1
cargo test --profile ci --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?
# cargo's lines: "test result: ok. N passed; M failed; ..."; the e2e runner's:
# "e2e: N passed, M failed, K skipped".
awk '
  /^test result:/ { p += $4; f += $6 }
  /^e2e: [0-9]+ passed/ { p += $2; f += $4; s += $6 }
  END { printf "all: %d passed, %d failed, %d skipped\n", p, f, s }
' "$log"
exit "$status"
