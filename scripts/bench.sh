#!/usr/bin/env bash
# Measures our shim against containerd's Go shim in one run, rounds interleaved, with every
# figure also given as a ratio ours / Go: scripts/bench/shimbench.sh (read its header) with
# the Go shim (io.containerd.runc.v2) as the baseline and the installed shim
# (io.containerd.rustshim.v1). Sections: latency (ctr run --rm, run -d + rm, exec, against runc
# alone), shim CPU per lifecycle and per exec, idle memory and CPU, stdout and stdin through
# the shim (against a pipe floor), and scale (200 idle containers with a shim each, 40 pods of
# 5 with a shim per pod). Figures, never a test.
#
# usage: scripts/bench.sh [--quick] [--only SECTION,...] [--keep]
#   RUST_EXT=/path/to/containerd-shim-runc-v2 adds the shim of containerd/rust-extensions as a
#   third column (cargo install containerd-runc-shim --version 0.1.1); as it copies nothing, it
#   also gives the relay floors under ctr (the shim's copies done by a C relay in its container).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/bin/containerd-shim-rustshim-v1 ] || scripts/install.sh >/dev/null
runtimes=(--runtime go=io.containerd.runc.v2 --runtime ours=io.containerd.rustshim.v1)
[ -z "${RUST_EXT:-}" ] || runtimes+=(--runtime "rust-ext=$RUST_EXT")
exec bash scripts/bench/shimbench.sh "${runtimes[@]}" "$@"
