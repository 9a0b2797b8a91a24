#!/usr/bin/env bash
# Provides Docker Engine for the tests and prints the directory holding its sbin/dockerd and bin/docker:
# Debian sid's docker.io and docker-cli (28.5), fetched once by scripts/apt-fetch.sh from the
# archive this machine's apt uses and extracted under the cache (their binaries run unchanged
# on Debian 12). Nothing is installed. Idempotent; offline once the cache holds them.
set -euo pipefail
cache=${SHIM_CONTAINERD_CACHE:-/var/cache/shim-containerd}
version=28.5.2+dfsg4-5
dir=$cache/docker-$version
if [ ! -x "$dir/usr/sbin/dockerd" ] || [ ! -x "$dir/usr/bin/docker" ]; then
  "$(dirname "$0")/apt-fetch.sh" sid "$dir" "docker.io=$version" "docker-cli=$version"
fi
echo "$dir/usr"
