#!/usr/bin/env bash
# Provides a containerd line for the tests and prints the directory holding its containerd,
# ctr and containerd-shim-runc-v2 (the Go shim of that line, our reference):
#   scripts/containerd.sh 1.6   -> /usr/bin (Debian 12's own containerd, installed by install.sh)
#   scripts/containerd.sh 1.7   -> 1.7.24 from Debian trixie, extracted under the cache
#   scripts/containerd.sh 2.1   -> 2.1.9 from Debian sid, extracted under the cache
# Newer lines are fetched once by scripts/apt-fetch.sh (`apt-get download` from the archive
# this machine's apt uses) and extracted; nothing is installed, the system's containerd stays.
# Idempotent; offline once the cache holds the line.
set -euo pipefail
line=${1:?usage: containerd.sh 1.6|1.7|2.1}
cache=${SHIM_CONTAINERD_CACHE:-/var/cache/shim-containerd}

case "$line" in
  1.6) command -v containerd >/dev/null && dirname "$(command -v containerd)" && exit 0
       echo "containerd 1.6 is not installed (scripts/install.sh installs it)" >&2; exit 1 ;;
  1.7) suite=trixie version=1.7.24~ds1-6+deb13u1 ;;
  2.1) suite=sid version=2.1.9+ds1-5 ;;
  *) echo "unknown containerd line $line (known: 1.6 1.7 2.1)" >&2; exit 2 ;;
esac

dir=$cache/$line
if [ ! -x "$dir/usr/bin/containerd" ]; then
  "$(dirname "$0")/apt-fetch.sh" "$suite" "$dir" "containerd=$version"
fi
echo "$dir/usr/bin"
