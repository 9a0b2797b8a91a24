#!/usr/bin/env bash
# Installs the shim, then runs a busybox container through it with visible output.
# Uses the system containerd when one answers, else a private one that is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
. scripts/lib.sh

work=$(mktemp -d /tmp/shim-demo.XXXXXX)
ns=shim-demo
address=/run/containerd/containerd.sock
cleanup() {
  ctr --address "$address" -n "$ns" tasks rm -f demo >/dev/null 2>&1 || true
  ctr --address "$address" -n "$ns" containers rm demo >/dev/null 2>&1 || true
  private_containerd_stop "$work"
  remove_namespace_cgroups "$ns"
  rm -rf "$work"
}
trap cleanup EXIT

if ! ctr --address "$address" version >/dev/null 2>&1; then
  private_containerd_start "$work"
  echo "started a private containerd at $address"
fi
import_test_image "$work" "$ns"
echo "--- running a container through io.containerd.rustshim.v1:"
timeout -s KILL 60 ctr --address "$address" -n "$ns" run --rm --runtime io.containerd.rustshim.v1 \
  "$IMAGE" demo sh -c 'echo "hello from busybox $(busybox | head -1 | cut -d" " -f2), pid $$"; exit 0'
echo "--- exit status: $?"
