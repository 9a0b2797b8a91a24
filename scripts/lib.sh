# Shared by demo.sh and bench.sh: a private containerd in a work dir, and the test image.
# Source it; call private_containerd_start WORK, then private_containerd_stop in an EXIT trap.

IMAGE=docker.io/library/busybox-shim-test:latest
daemon_pid=

# Starts containerd with its own root, state and socket under WORK; sets $address.
private_containerd_start() {
  local work=$1
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
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
TOML
  containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do
    ctr --address "$address" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "containerd did not start; see $work/containerd.log" >&2
  return 1
}

# Stops the private containerd, kills the shims it left and unmounts what is under WORK.
private_containerd_stop() {
  local work=$1
  [ -n "$daemon_pid" ] || return 0
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  pkill -KILL -f -- "-address $address" 2>/dev/null || true
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l || true
}

# Builds the busybox image archive and imports it into namespace NS.
import_test_image() {
  local work=$1 ns=$2
  [ -f "$work/busybox.tar" ] || python3 "$(dirname "${BASH_SOURCE[0]}")/busybox-image.py" "$work/busybox.tar" "$IMAGE"
  ctr --address "$address" -n "$ns" images import "$work/busybox.tar" >/dev/null
}

# Removes the (empty) cgroups that runc leaves for namespace NS in each v1 hierarchy.
remove_namespace_cgroups() {
  local ns=$1
  for dir in /sys/fs/cgroup/*/"$ns"; do
    [ -d "$dir" ] || continue
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
