#!/usr/bin/env bash
# Downloads pinned Debian packages of another suite and extracts them into one directory:
#   scripts/apt-fetch.sh SUITE DEST PKG=VERSION...
# Fetched with `apt-get download` through a private sources list naming the archive this
# machine's apt uses (scripts/apt-source.sh: its mirror, proxy or snapshot); nothing is
# installed. The .debs are kept under the cache, so a second call is offline. DEST is
# replaced only once every package has been extracted.
set -euo pipefail
suite=${1:?usage: apt-fetch.sh SUITE DEST PKG=VERSION...}
dest=${2:?usage: apt-fetch.sh SUITE DEST PKG=VERSION...}
shift 2
cache=${SHIM_CONTAINERD_CACHE:-/var/cache/shim-containerd}
apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$cache/debs"
opts=(-o "Dir::Etc::sourcelist=$apt_dir/$suite.list" -o Dir::Etc::sourceparts=-
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir"
      -o "Dir::Cache::archives=$apt_dir/archives" -o APT::Get::List-Cleanup=0)
# apt names a .deb NAME_VERSION_ARCH.deb, with the version's ':' as '%3a'.
find_deb() { find "$cache/debs" -name "${1}_${2//:/%3a}_*.deb" | head -1; }

debs=()
updated=
for want in "$@"; do
  pkg=${want%%=*} version=${want#*=}
  deb=$(find_deb "$pkg" "$version")
  if [ -z "$deb" ]; then
    if [ -z "$updated" ]; then
      archive=$("$(dirname "$0")/apt-source.sh")
      read -r uri keyring <<<"$archive"
      echo "deb [signed-by=$keyring] $uri $suite main" >"$apt_dir/$suite.list"
      apt-get "${opts[@]}" update -qq </dev/null >&2
      updated=1
    fi
    (cd "$cache/debs" && apt-get "${opts[@]}" download "$pkg=$version" </dev/null >&2)
    deb=$(find_deb "$pkg" "$version")
    [ -n "$deb" ] || { echo "apt-fetch: $pkg=$version was not downloaded" >&2; exit 1; }
  fi
  debs+=("$deb")
done

rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$dest.tmp"; done
rm -rf "$dest" && mv "$dest.tmp" "$dest"
