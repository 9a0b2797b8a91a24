#!/usr/bin/env bash
# Installs everything, then runs the whole test suite: unit tests and the end-to-end tests
# against a private containerd and real runc, for our shim and for containerd's Go shim.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root: the end-to-end tests run real containers" >&2
  exit 1
fi
scripts/install.sh
cargo test --release --locked -- --test-threads=2
