#!/usr/bin/env bash
# Provides a containerd line for the tests and prints the directory holding its containerd,
# ctr and containerd-shim-runc-v2 (the Go shim of that line, our reference):
#   scripts/containerd.sh 1.6   -> /usr/bin (Debian 12's own containerd, installed by install.sh)
#   scripts/containerd.sh 1.7   -> 1.7.24 from Debian trixie, extracted under the cache
#   scripts/containerd.sh 2.1   -> 2.1.9 from Debian sid, extracted under the cache
# Newer lines are fetched once with `apt-get download` through a private sources list that
# names the archive this machine's apt uses (scripts/apt-source.sh: its mirror, proxy or
# snapshot) and extracted with dpkg-deb; nothing is installed, the system's containerd stays.
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
  apt_dir=$cache/apt
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/debs"
  opts=(-o "Dir::Etc::sourcelist=$apt_dir/$suite.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir"
        -o "Dir::Cache::archives=$apt_dir/archives" -o APT::Get::List-Cleanup=0)
  find_deb() { find "$cache/debs" -name "containerd_${version}_*.deb" | head -1; }
  deb=$(find_deb)
  if [ -z "$deb" ]; then
    archive=$("$(dirname "$0")/apt-source.sh")
    read -r uri keyring <<<"$archive"
    echo "deb [signed-by=$keyring] $uri $suite main" >"$apt_dir/$suite.list"
    apt-get "${opts[@]}" update -qq </dev/null >&2
    (cd "$cache/debs" && apt-get "${opts[@]}" download "containerd=$version" </dev/null >&2)
    deb=$(find_deb)
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  dpkg-deb -x "$deb" "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir/usr/bin"
