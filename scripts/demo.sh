#!/usr/bin/env bash
# Installs the shim, then runs a busybox container through it with visible output.
# Uses the system containerd when one answers, else a private one that is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh

work=$(mktemp -d /tmp/shim-demo.XXXXXX)
ns=shim-demo
image=docker.io/library/busybox-shim-test:latest
address=/run/containerd/containerd.sock
daemon_pid=
cleanup() {
  ctr --address "$address" -n "$ns" tasks kill -s SIGKILL demo >/dev/null 2>&1 || true
  ctr --address "$address" -n "$ns" tasks rm -f demo >/dev/null 2>&1 || true
  ctr --address "$address" -n "$ns" containers rm demo >/dev/null 2>&1 || true
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! ctr --address "$address" version >/dev/null 2>&1; then
  address=$work/containerd.sock
  cat >"$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$address"
[ttrpc]
  address = "$address.ttrpc"
TOML
  containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do ctr --address "$address" version >/dev/null 2>&1 && break; sleep 0.1; done
  echo "started a private containerd at $address"
fi

python3 scripts/busybox-image.py "$work/busybox.tar" "$image"
ctr --address "$address" -n "$ns" images import "$work/busybox.tar" >/dev/null
echo "--- running a container through io.containerd.rustshim.v1:"
timeout -s KILL 60 ctr --address "$address" -n "$ns" run --rm --runtime io.containerd.rustshim.v1 \
  "$image" demo sh -c 'echo "hello from $(hostname), pid $$, in busybox $(busybox | head -1 | cut -d" " -f2)"; exit 0'
echo "--- exit status: $?"
