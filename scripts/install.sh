#!/usr/bin/env bash
# Installs what the shim needs and the shim itself. Idempotent and non-interactive.
#   - Debian packages: containerd, runc, crun (a second OCI runtime for the tests),
#     busybox-static (the test image), python3 (image builder), protobuf-compiler (protoc,
#     for the CRI client the tests build)
#   - the release binary at /usr/local/bin/containerd-shim-rust-v1, plus the alias
#     containerd-shim-rustshim-v1 that containerd looks up for io.containerd.rustshim.v1
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in containerd runc crun busybox-static python3 protobuf-compiler; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq "${missing[@]}" </dev/null
fi

cargo build --release --locked
install -m 0755 target/release/containerd-shim-rust-v1 /usr/local/bin/containerd-shim-rust-v1
ln -sfn containerd-shim-rust-v1 /usr/local/bin/containerd-shim-rustshim-v1
echo "installed $(/usr/local/bin/containerd-shim-rust-v1 -v | tr '\n' ' ')"
