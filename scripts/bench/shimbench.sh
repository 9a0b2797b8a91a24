#!/usr/bin/env bash
# shimbench.sh: containerd runtime v2 shims measured side by side, interleaved, against a floor.
#
# usage: shimbench.sh --runtime [LABEL=]RUNTIME [--runtime [LABEL=]RUNTIME ...] [--quick] [--keep]
#                     [--only SECTION,...]
#
#   RUNTIME  a runtime name (io.containerd.runc.v2: containerd runs containerd-shim-runc-v2 from
#            PATH) or an absolute path to a shim binary. LABEL names its column. The first
#            runtime is the baseline of every ratio.
#   --quick  fewer rounds, less data: a smoke run (under a minute; a full run of two runtimes
#            takes about 2 minutes on 2 cores)
#   --keep   keep the work dir /tmp/shimbench.XXXXXX (report.txt, raw samples in res/, logs)
#   --only   run only these sections: latency, cpu, memory, stdio, scale (default: all)
#   env      SHIMBENCH_N (rounds, 30), SHIMBENCH_IDLE_N (idle containers, 20), SHIMBENCH_REPS
#            (stdio repetitions, 5), SHIMBENCH_TP_MIB (stdout MiB, 1024), SHIMBENCH_ST_MIB (256),
#            SHIMBENCH_SCALE_N (idle containers with a shim each, 200), SHIMBENCH_PODS (pods of
#            5 containers with a shim per pod, 40)
#
# Needs root, containerd, ctr, runc, busybox, python3. Starts a private containerd (own root,
# state, socket, namespace) under a child subreaper (reaper.py), imports a busybox image
# (../busybox-image.py), checks that every runtime runs a container, then measures, with rounds
# interleaved and rotated across runtimes and floor so that machine noise hits all alike:
#   1. latency  ctr run --rm true; ctr run -d sleep + task rm -f + container rm; task exec true
#   2. CPU      shim CPU per lifecycle and per exec: the shim runs through a wrapper that puts it
#               (start, daemon, containerd's `shim delete`) in a cpuacct cgroup of its own, and
#               runc in another one, so runc and the container are not counted; rows "less
#               the runc wrapper's" also take out the wrapper's own exec (see runc_wrapper);
#               then execs 2 s apart, as probes come, each charged what the shim spent until
#               the next (timers, giving idle memory back and faulting it in again)
#   3. memory   RSS/PSS/USS (smaps_rollup) of 1 and of N idle shims, and their idle CPU
#   4. stdio    stdout MiB/s (timed inside the container), stdin round trip through cat,
#               against pipe floors and a splice relay standing in for the shim's hops; the
#               shim's CPU and ctr's own (it copies every byte as well); given a runtime that
#               hands the container ctr's FIFOs (rust-extensions' shim), the same relay
#               inside its containers, on ctr's FIFOs: the relay floors under ctr
#   5. scale    SCALE_N idle containers with a shim each, then PODS pods of 5 containers that
#               share a shim (the io.containerd.runc.v2.group annotation, as a pod's containers
#               do under CRI): the time to start them all, one after another, and the shims'
#               total PSS
# Floor: runc alone on the same rootfs (run; run -d + kill + delete; exec), busybox dd | cat.
# Prints one table with ratios against the first runtime; removes everything it started.
set -u -o pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=shimbench
usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# ================================================================ arguments
CMDLINE="$(basename "$0") $*"; ARGS=("$@")
RT_SPEC=(); QUICK=0; KEEP=0; ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --runtime) [ $# -ge 2 ] || die "--runtime needs a value"; RT_SPEC+=("$2"); shift 2 ;;
    --runtime=*) RT_SPEC+=("${1#--runtime=}"); shift ;;
    --quick) QUICK=1; shift ;;
    --keep) KEEP=1; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs a value"; ONLY=$2; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
for sec in ${ONLY//,/ }; do
  case $sec in latency|cpu|memory|stdio|scale) ;; *) die "--only: unknown section '$sec'" ;; esac
done
[ ${#RT_SPEC[@]} -ge 1 ] || die "give at least one --runtime (see --help)"
[ "$(id -u)" = 0 ] || die "must run as root (containerd, runc, cgroups)"
for tool in containerd ctr runc busybox python3 sha256sum awk timeout strip; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install containerd runc busybox-static python3 binutils)"
done
MKIMAGE=$HERE/../busybox-image.py
[ -f "$MKIMAGE" ] || die "image builder $MKIMAGE is missing"

# Every process we start ends up below reaper.py, which reaps the orphans (a shim daemon whose
# `start` copy exited, a detached runc container) as PID 1 does on a real host.
if [ "${SHIMBENCH_REAPER:-}" != "$PPID" ]; then
  export SHIMBENCH_REAPER=$$   # exec keeps the pid: the reaper is our parent after this
  exec python3 "$HERE/reaper.py" bash "${BASH_SOURCE[0]}" "${ARGS[@]}"
fi

if [ $QUICK = 1 ]; then N=10; WARM=1; IDLE_N=5; IDLE_S=3; TP_MIB=256; ST_MIB=64; REPS=2; SCALE_N=20; PODS=4; PROBE_N=3; MODE=quick
else N=30; WARM=2; IDLE_N=20; IDLE_S=10; TP_MIB=1024; ST_MIB=256; REPS=5; SCALE_N=200; PODS=40; PROBE_N=8; MODE=full; fi
PROBE_S=2     # seconds between the spaced execs of section 2
SCALE_N=${SHIMBENCH_SCALE_N:-$SCALE_N}; PODS=${SHIMBENCH_PODS:-$PODS}; POD_SIZE=5
N=${SHIMBENCH_N:-$N}; IDLE_N=${SHIMBENCH_IDLE_N:-$IDLE_N}; REPS=${SHIMBENCH_REPS:-$REPS}
TP_MIB=${SHIMBENCH_TP_MIB:-$TP_MIB}; ST_MIB=${SHIMBENCH_ST_MIB:-$ST_MIB}
SETTLE=2      # seconds an idle container is left alone before its shim is measured
BS=65536      # dd block size (64 KiB)
BUSYBOX=$(command -v busybox); RUNC_BIN=$(command -v runc)

# ================================================================ runtimes
# RT_COPY: the private copy of the shim binary that runs (PSS is not shared with shims of other
# daemons; our shims are recognisable by executable); RT_NAME: what ctr gets as --runtime;
# RT_WRAP: the CPU accounting wrapper around RT_COPY.
K=${#RT_SPEC[@]}
declare -a RT_LABEL RT_GIVEN RT_ORIG RT_BINNAME RT_NAME RT_COPY RT_WRAP LEFT_RM STDIO_KIND
for k in "${!RT_SPEC[@]}"; do
  spec=${RT_SPEC[$k]}; label=
  case $spec in *=*) label=${spec%%=*}; spec=${spec#*=} ;; esac
  if [[ $spec == /* ]]; then
    [ -f "$spec" ] && [ -x "$spec" ] || die "runtime '$spec': no executable shim binary at that path"
    orig=$spec; binname=$(basename "$spec"); [ -n "$label" ] || label=$binname
  else
    IFS=. read -ra parts <<<"$spec"
    [ ${#parts[@]} -ge 2 ] || die "runtime '$spec' is neither a name like io.containerd.runc.v2 nor an absolute path"
    binname="containerd-shim-${parts[-2]}-${parts[-1]}"
    orig=$(command -v "$binname") || die "runtime '$spec': shim binary '$binname' not found on PATH ($PATH)"
    [ -n "$label" ] || label=${spec#io.containerd.}
  fi
  for ((j = 0; j < k; j++)); do [ "${RT_LABEL[$j]}" = "$label" ] && label="$label#$k"; done
  RT_LABEL[$k]=$label; RT_GIVEN[$k]=$spec; RT_ORIG[$k]=$(readlink -f "$orig"); RT_BINNAME[$k]=$binname
done

# ================================================================ work dir, cleanup
D=$(mktemp -d /tmp/shimbench.XXXXXX) || die "mktemp failed"
NS=shimbench-$$
SOCK=$D/c.sock
IMG=docker.io/library/shimbench:latest
RES=$D/res
CTD_PID=; CG=; CPU_ACCT=none; CLEANED=0
mkdir -p "$D"/{bin,wrap,runcwrap,fifo,res,rootfs,img,runc} || die "cannot create $D"
: >"$D/ids"; : >"$D/wrap.log"; : >"$D/failures"
# Sockets straight under /run/containerd before we start: rust-extensions' shim 0.1.1 puts its
# own there and leaves them when it exits; cleanup removes those that appear during the run.
ls /run/containerd/*.sock >"$D/socks.before" 2>/dev/null

C() { ctr -a "$SOCK" -n "$NS" "$@"; }
sock_of() { printf '/run/containerd/s/%s' "$(printf '%s' "$SOCK/$NS/$1" | sha256sum | cut -c1-64)"; }
our_mounts() { awk -v d="$D/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo; }
shims_of() { python3 "$HERE/shimprocs.py" find "${RT_COPY[$1]}" "${@:2}"; }   # K [ID] -> "PID PPID ID"

cleanup() {
  [ $CLEANED = 1 ] && return; CLEANED=1
  set +e; trap - EXIT INT TERM HUP
  log "cleanup: containers, daemon, shims, mounts, cgroups"
  if [ -n "$CTD_PID" ] && kill -0 "$CTD_PID" 2>/dev/null; then
    for t in $(C tasks ls -q 2>/dev/null); do timeout 20 ctr -a "$SOCK" -n "$NS" tasks rm -f "$t" >/dev/null 2>&1; done
    for c in $(C containers ls -q 2>/dev/null); do timeout 20 ctr -a "$SOCK" -n "$NS" containers rm "$c" >/dev/null 2>&1; done
    kill -TERM "$CTD_PID"
    for _ in $(seq 50); do kill -0 "$CTD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$CTD_PID" 2>/dev/null; wait "$CTD_PID" 2>/dev/null
  fi
  for k in "${!RT_COPY[@]}"; do
    for p in $(shims_of "$k" | awk '{print $1}'); do log "cleanup: killing left-over shim pid $p"; kill -9 "$p"; done
  done
  for root in "$D/runc" "/run/containerd/runc/$NS"; do
    for c in $(runc --root "$root" list -q 2>/dev/null); do runc --root "$root" delete -f "$c" >/dev/null 2>&1; done
  done
  # whatever else our reaper adopted is ours too (e.g. the container of a shim killed above)
  for p in $(cat /proc/"$PPID"/task/*/children 2>/dev/null); do
    [ "$p" = $$ ] || { log "cleanup: killing left-over pid $p ($(cat "/proc/$p/comm" 2>/dev/null))"; kill -9 "$p"; }
  done
  our_mounts | sort -r | while read -r m; do umount -l "$m"; done
  for h in "$CG" /sys/fs/cgroup/*/"$NS" /sys/fs/cgroup/"$NS"; do
    [ -n "$h" ] && [ -d "$h" ] && { find "$h" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null; rmdir "$h"; }
  done
  while read -r id; do [ -n "$id" ] && rm -f "$(sock_of "$id")"; done <"$D/ids"
  rm -rf "/run/containerd/runc/$NS"
  n=0; for f in /run/containerd/*.sock; do
    [ -S "$f" ] && ! grep -qxF "$f" "$D/socks.before" && ! ss -xlH "src $f" 2>/dev/null | grep -q . \
      && rm -f "$f" && n=$((n + 1))
  done
  [ $n = 0 ] || log "cleanup: removed $n sockets that shims left in /run/containerd"
  [ "$(our_mounts | wc -l)" = 0 ] || log "cleanup: WARNING: mounts under $D remain"
  if [ $KEEP = 1 ]; then log "kept work dir $D"; else rm -rf --one-file-system "$D"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

fail_note() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$D/failures"; log "FAIL [$1] $2: $3"; }
force_rm() { # kill and remove one container whatever state it is in
  timeout 20 ctr -a "$SOCK" -n "$NS" tasks rm -f "$1" >/dev/null 2>&1
  timeout 20 ctr -a "$SOCK" -n "$NS" containers rm "$1" >/dev/null 2>&1
}
# a shim must exit once its container is removed: record, then kill, those that stay
check_shims_gone() { # K ID...
  local k=$1 alive='' i pa; shift
  for ((i = 0; i < 30; i++)); do
    alive=$(shims_of "$k" | awk -v ids=" $* " 'index(ids, " " $3 " ") {print $1 ":" $3}')
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  for pa in $alive; do
    echo "${pa#*:}" >>"$RES/outlived.$k"
    fail_note "${RT_LABEL[$k]}" "shim of ${pa#*:}" "still running 3 s after its container was removed (pid ${pa%%:*}, killed)"
    kill -9 "${pa%%:*}"
  done
}
# containerd 1.6 runs `shim delete` once a shim has exited: let it finish before the next sample
wait_no_shim() { # K
  local i; sleep 0.05
  for ((i = 0; i < 60; i++)); do [ -z "$(shims_of "$1")" ] && return 0; sleep 0.05; done
}

# ================================================================ helpers: numbers
rec() { echo "$3" >>"$RES/$1.$2"; }   # rec METRIC COLUMN VALUE
ms_since() { local d=$(( ${EPOCHREALTIME/./} - $1 )); printf '%d.%03d' $((d / 1000)) $((d % 1000)); }
stats() { # FILE -> "median p90 mean min max n" (p90: nearest rank)
  [ -s "$1" ] || { echo "nan nan nan nan nan 0"; return; }
  sort -g "$1" | awk '{v[NR] = $1; s += $1}
    END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         i = int(0.9 * NR); if (i < 0.9 * NR) i++; if (i < 1) i = 1
         printf "%.6f %.6f %.6f %.6f %.6f %d\n", m, v[i], s / NR, v[1], v[NR], NR}'
}
# rotated order of slots for round R: slots "0 1 F" -> round 1: "1 F 0", round 2: "F 0 1" ...
rotate() { local r=$1; shift; local slots=("$@") n=$# j; for ((j = 0; j < n; j++)); do echo "${slots[$(( (r + j) % n ))]}"; done; }
mib_s() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {if (b > a) printf "%.1f", n / (b - a) / 1048576; else print "nan"}'; }
ms_of_ns() { awk -v n="$1" 'BEGIN {printf "%.3f", n / 1e6}'; }

# ================================================================ helpers: CPU accounting
cg_usage_ns() { # cumulative CPU of a cgroup, ns
  if [ $CPU_ACCT = v1 ]; then cat "$1/cpuacct.usage" 2>/dev/null || echo 0
  else awk '$1 == "usage_usec" {printf "%d\n", $2 * 1000}' "$1/cpu.stat" 2>/dev/null || echo 0; fi
}
# wait until the shim of container ID (runtime K) has no process left and containerd's follow-up
# `shim delete` has run (or 1.5 s passed without one); 1 = a shim process is still alive
wait_shim_done() { # K ID
  local i
  for ((i = 0; i < 100; i++)); do
    if ! read -r _ <"$CG/$1/$2/cgroup.procs" 2>/dev/null; then
      grep -qx "$2 delete" "$D/wrap.log" && return 0
      [ $i -ge 30 ] && return 0
    fi
    sleep 0.05
  done
  return 1
}
# the static runc wrapper's log of its CPU before it moved (see runc_wrapper), per runtime
pre_mark() { [ "$WRAP_KIND" = static ] || { echo none; return; }; cat "$D/runcwrap/$1/pre.log" 2>/dev/null | wc -l; }
pre_since() { # K MARK -> "CALLS NS" of the wrapper runs logged since MARK, or "none"
  [ "$2" = none ] && { echo none; return; }
  tail -n +"$(($2 + 1))" "$D/runcwrap/$1/pre.log" 2>/dev/null | awk '{n++; s += $1} END {printf "%d %d\n", n, s}'
}
rec_net() { # METRIC K SHIM_MS PRE: the shim's CPU less the wrapper's, and the wrapper's calls and CPU
  local calls ns
  [ "$4" = none ] && return
  read -r calls ns <<<"$4"
  rec "${1}_net" "$2" "$(awk -v v="$3" -v p="$ns" 'BEGIN {printf "%.3f", v - p / 1e6}')"
  rec "${1}_wrap" "$2" "$(ms_of_ns "$ns")"; rec "${1}_calls" "$2" "$calls"
}
shim_cpu_ms() { # K ID -> CPU of that container's shim, ms, once it is gone
  wait_shim_done "$1" "$2" || fail_note "${RT_LABEL[$1]}" "shim of $2" "still running 5 s after ctr returned"
  ms_of_ns "$(cg_usage_ns "$CG/$1/$2")"
}

# ================================================================ set-up
log "work dir $D, namespace $NS, mode $MODE, load $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

for k in "${!RT_SPEC[@]}"; do   # private copies (see RT_COPY)
  if [[ ${RT_GIVEN[$k]} == /* ]]; then
    mkdir -p "$D/bin/$k"; RT_COPY[$k]=$D/bin/$k/${RT_BINNAME[$k]}; RT_NAME[$k]=${RT_COPY[$k]}
  else   # containerd finds it first on its PATH
    RT_COPY[$k]=$D/bin/${RT_BINNAME[$k]}; RT_NAME[$k]=${RT_GIVEN[$k]}
  fi
  cp "${RT_ORIG[$k]}" "${RT_COPY[$k]}" || die "cannot copy ${RT_ORIG[$k]}"
done

# CPU accounting cgroups: $CG/K/ID for the shim of container ID, $CG/K/runc for its runc calls
if [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then CPU_ACCT=v1; CG=/sys/fs/cgroup/cpuacct/$NS-acct
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then CPU_ACCT=v2; CG=/sys/fs/cgroup/$NS-acct; fi
if [ $CPU_ACCT != none ]; then
  mkdir -p "$CG/probe" 2>/dev/null && sh -c "echo \$\$ > '$CG/probe/cgroup.procs' && exec true" 2>/dev/null \
    || { log "WARNING: cannot use cgroup $CG: shim CPU is not measured"; CPU_ACCT=none; }
  rmdir "$CG/probe" 2>/dev/null
fi
# The wrapper: containerd runs it as the shim binary. It moves itself into $CG/K/ID (so the
# shim's start copy, daemon and `delete` calls are counted there), puts a runc wrapper first on
# the shim's PATH (runc moves to $CG/K/runc before it execs), logs "ID ACTION", execs the shim.
# Known bias: what the runc wrapper does before it moves (its exec and start, and the shim's
# child from its spawn to that exec) is charged to the shim's cgroup: an exec of any static
# program costs about 0.5 ms of CPU on a 2-vCPU VM. A real runc's own exec would be runc's,
# so the static wrapper reads its process CPU clock once it has moved and appends it (ns) to
# PRE_LOG; the "less the wrapper" rows subtract those from the shim's CPU. Without a C compiler
# the wrapper is /bin/sh and those rows are n/a.
runc_wrapper() { # CGROUP_PROCS OUT PRE_LOG: a runc that first moves itself into CGROUP_PROCS
  cat >"$2.c" <<EOF
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  (void)argc;
  int fd = open("$1", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\\n", (int)getpid());
    if (write(fd, pid, (size_t)n) < 0) {}
    close(fd);
  }
  struct timespec t;
  int log = open("$3", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (log >= 0 && clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) == 0) {
    char ns[32];
    int n = snprintf(ns, sizeof ns, "%lld\\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    if (write(log, ns, (size_t)n) < 0) {}
  }
  if (log >= 0) close(log);
  argv[0] = "$RUNC_BIN";
  execv("$RUNC_BIN", argv);
  return 127;
}
EOF
  if command -v cc >/dev/null && cc -O2 -static -o "$2" "$2.c" 2>/dev/null; then WRAP_KIND=static; return; fi
  printf '#!/bin/sh\necho $$ > %s 2>/dev/null\nexec %s "$@"\n' "'$1'" "'$RUNC_BIN'" >"$2"; WRAP_KIND=sh
}
WRAP_KIND=sh
for k in "${!RT_SPEC[@]}"; do
  RT_WRAP[$k]=$D/wrap/$k/shim; mkdir -p "$D/wrap/$k" "$D/runcwrap/$k"
  [ $CPU_ACCT != none ] && mkdir -p "$CG/$k/runc"
  runc_wrapper "$CG/$k/runc/cgroup.procs" "$D/runcwrap/$k/runc" "$D/runcwrap/$k/pre.log"
  cat >"${RT_WRAP[$k]}" <<EOF
#!/bin/sh
# shimbench accounting wrapper for runtime $((k + 1)): see shimbench.sh
id=unknown; prev=; act=
for a in "\$@"; do [ "\$prev" = -id ] && id=\$a; prev=\$a; act=\$a; done
if [ '$CPU_ACCT' != none ]; then
  mkdir -p '$CG/$k/'"\$id" 2>/dev/null
  echo \$\$ > '$CG/$k/'"\$id/cgroup.procs"
  PATH='$D/runcwrap/$k':\$PATH; export PATH
fi
echo "\$id \$act" >> '$D/wrap.log'
exec '${RT_COPY[$k]}' "\$@"
EOF
  chmod +x "${RT_WRAP[$k]}" "$D/runcwrap/$k/runc"
done

# the busybox image, and its layer unpacked as the rootfs of the runc floor
python3 "$MKIMAGE" "$D/image.tar" "$IMG" >/dev/null || die "could not build the busybox image"
tar -xf "$D/image.tar" -C "$D/img" || die "cannot unpack $D/image.tar"
layer=$(python3 -c 'import json, sys; b = sys.argv[1] + "/blobs/sha256/"
ix = json.load(open(sys.argv[1] + "/index.json")); m = json.load(open(b + ix["manifests"][0]["digest"][7:]))
print(b + m["layers"][0]["digest"][7:])' "$D/img") && tar -xf "$layer" -C "$D/rootfs" || die "cannot unpack the image layer"

# our own containerd; CRI off (ctr does not use it)
cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
EOF
PATH=$D/bin:$PATH containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 100); do ctr -a "$SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
ctr -a "$SOCK" version >/dev/null 2>&1 || { tail -20 "$D/containerd.log" >&2; die "containerd did not start (log above)"; }
C images import "$D/image.tar" >"$D/import.log" 2>&1 || { cat "$D/import.log" >&2; die "image import failed"; }
CTD_LOG_MARK=$(wc -l <"$D/containerd.log")

# bundles for the runc floor: containerd's default spec, on the unpacked rootfs
floor_bundle() { # DIR ARGS...
  local dir=$D/$1; shift; mkdir -p "$dir"
  ctr -n "$NS" oci spec >"$dir/spec.json" || return 1
  python3 - "$dir" "$D/rootfs" "/$NS/$(basename "$dir")" "$@" <<'PY'
import json, sys
d, rootfs, cg, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
s = json.load(open(f"{d}/spec.json"))
s["root"] = {"path": rootfs, "readonly": False}
s["process"].update(args=args, terminal=False, env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
s["linux"]["cgroupsPath"] = cg
json.dump(s, open(f"{d}/config.json", "w"), indent=1)
PY
}
floor_bundle floor-true /bin/true && floor_bundle floor-sleep sleep 1000 || die "cannot write the runc floor bundles"
R() { timeout 60 runc --root "$D/runc" "$@"; }   # runc of the floor
wait_gone() { # PID: until our reaper has reaped it (10 s at most), as a shim waits for the exit
  local t=$((${EPOCHREALTIME/./} + 10000000))
  while kill -0 "$1" 2>/dev/null; do [ ${EPOCHREALTIME/./} -lt $t ] || return 1; done
}

# every runtime must run a container, plain and through the wrapper, before anything is measured
for k in "${!RT_SPEC[@]}"; do
  for rt in "${RT_NAME[$k]}" "${RT_WRAP[$k]}"; do
    id=smoke-r$k-$([ "$rt" = "${RT_WRAP[$k]}" ] && echo wrapped || echo plain); echo "$id" >>"$D/ids"
    timeout 60 ctr -a "$SOCK" -n "$NS" run --rm --fifo-dir "$D/fifo" --runtime "$rt" "$IMG" "$id" \
      sh -c 'echo shimbench-ok; exit 7' </dev/null >"$D/smoke.out" 2>&1; rc=$?
    out=$(tr -d '\0' <"$D/smoke.out")
    if [ "$out" != shimbench-ok ] || [ $rc != 7 ]; then
      force_rm "$id"; printf '%s\n' "$out" >&2; tail -5 "$D/containerd.log" >&2
      die "runtime '${RT_GIVEN[$k]}' (${RT_ORIG[$k]}) does not run a container through containerd $(containerd --version | awk '{print $3}') (--runtime $rt: exit $rc, output above)"
    fi
    wait_no_shim "$k"
  done
  [ $CPU_ACCT != none ] && [ "$(cg_usage_ns "$CG/$k/runc")" = 0 ] \
    && log "WARNING: runtime ${RT_LABEL[$k]} did not run runc from PATH: its shim CPU includes runc"
done
RUNS=(); for k in "${!RT_SPEC[@]}"; do RUNS+=("$k"); done   # slots of a round, before the floor F
log "set-up done: $K runtime(s) run containers; load $(cut -d' ' -f1-3 /proc/loadavg)"

# ================================================================ 1. latency
if want latency; then
# one sample: SLOT (runtime K or floor F) ROUND METRIC; metrics: lc (run --rm true), dl (detached:
# run -d sleep, task rm -f = SIGKILL + wait + delete, container rm), exec (into ex-rK / floor-exec)
sample() {
  local s=$1 i=$2 m=$3 id t0 rc=0
  if [ "$s" = F ]; then
    id=$m-floor-$i; t0=${EPOCHREALTIME/./}
    case $m in
      lc) R run --bundle "$D/floor-true" "$id" </dev/null >/dev/null 2>"$D/last.err" || rc=$? ;;
      dl) { R run -d --pid-file "$D/floor.pid" --bundle "$D/floor-sleep" "$id" && R kill --all "$id" KILL \
            && wait_gone "$(cat "$D/floor.pid")" && R delete "$id"; } </dev/null >/dev/null 2>"$D/last.err" || rc=$? ;;
      exec) R exec floor-exec /bin/true </dev/null >/dev/null 2>"$D/last.err" || rc=$? ;;
    esac
    [ $rc = 0 ] && rec "$m" floor "$(ms_since "$t0")" \
      || { fail_note floor "$m $id" "exit $rc: $(head -c 300 "$D/last.err")"; [ $m = exec ] || R delete -f "$id" >/dev/null 2>&1; }
    return
  fi
  local c=(timeout 60 ctr -a "$SOCK" -n "$NS")
  id=$m-r$s-$i; [ $m = exec ] || echo "$id" >>"$D/ids"; t0=${EPOCHREALTIME/./}
  case $m in
    lc) "${c[@]}" run --rm --fifo-dir "$D/fifo" --runtime "${RT_NAME[$s]}" "$IMG" "$id" /bin/true </dev/null >/dev/null 2>"$D/last.err" || rc=$? ;;
    dl) { "${c[@]}" run -d --fifo-dir "$D/fifo" --runtime "${RT_NAME[$s]}" "$IMG" "$id" sleep 1000 \
          && "${c[@]}" tasks rm -f "$id" && "${c[@]}" containers rm "$id"; } </dev/null >/dev/null 2>"$D/last.err" || rc=$? ;;
    exec) "${c[@]}" tasks exec --fifo-dir "$D/fifo" --exec-id "x$i" "ex-r$s" /bin/true </dev/null >/dev/null 2>"$D/last.err" || rc=$? ;;
  esac
  if [ $rc = 0 ]; then rec "$m" "$s" "$(ms_since "$t0")"
  else fail_note "${RT_LABEL[$s]}" "$m $id" "exit $rc$([ $rc = 124 ] && echo ' (timeout)'): $(head -c 300 "$D/last.err")"; [ $m = exec ] || force_rm "$id"; fi
  [ $m = exec ] || wait_no_shim "$s"
}
rounds() { # METRIC: warm-up rounds (not recorded), then N rotated rounds
  local m=$1 i s
  for ((i = 1; i <= WARM; i++)); do for s in "${RUNS[@]}" F; do sample "$s" "w$i" "$m"; done; done
  rm -f "$RES/$m".*
  for ((i = 1; i <= N; i++)); do for s in $(rotate "$i" "${RUNS[@]}" F); do sample "$s" "$i" "$m"; done; done
}
# what the runs left behind, per runtime: shim processes, mounts, bundles, runc state, sockets, cgroups
leftovers() { # K -> "procs/mounts/bundles/runc/sockets/cgroups"
  local k=$1 re="^(lc|dl)-r$1-" id socks=0 mounts bundles runcs cgs
  while read -r id; do [ -e "$(sock_of "$id")" ] && socks=$((socks + 1)); done < <(grep -E "$re" "$D/ids")
  mounts=$(our_mounts | grep -cE "/(lc|dl)-r$k-")
  bundles=$(ls "$D/state/io.containerd.runtime.v2.task/$NS" 2>/dev/null | grep -cE "$re")
  runcs=$(ls "/run/containerd/runc/$NS" 2>/dev/null | grep -cE "$re")
  cgs=$(ls /sys/fs/cgroup/*/"$NS" /sys/fs/cgroup/"$NS" 2>/dev/null | grep -cE "$re")
  echo "$(shims_of "$k" | wc -l)/$mounts/$bundles/$runcs/$socks/$cgs"
}
log "1. latency: $WARM warm-up + $N rounds each of ctr run --rm true; run -d + task rm -f + c rm; task exec"
rounds lc
rounds dl
sleep 2; for k in "${!RT_SPEC[@]}"; do LEFT_RM[$k]=$(leftovers "$k"); done
for k in "${!RT_SPEC[@]}"; do
  echo "ex-r$k" >>"$D/ids"
  timeout 60 ctr -a "$SOCK" -n "$NS" run -d --fifo-dir "$D/fifo" --runtime "${RT_NAME[$k]}" "$IMG" "ex-r$k" sleep 1000 \
    </dev/null >/dev/null 2>"$D/last.err" || fail_note "${RT_LABEL[$k]}" "ctr run -d ex-r$k" "$(head -c 300 "$D/last.err")"
done
R run -d --bundle "$D/floor-sleep" floor-exec </dev/null >/dev/null 2>"$D/last.err" || fail_note floor "runc run -d floor-exec" "$(head -c 300 "$D/last.err")"
rounds exec
for k in "${!RT_SPEC[@]}"; do force_rm "ex-r$k"; check_shims_gone "$k" "ex-r$k"; done
R delete -f floor-exec >/dev/null 2>&1

fi

# ================================================================ 2. shim CPU per lifecycle, per exec
if want cpu; then
if [ $CPU_ACCT != none ]; then
  log "2. shim CPU: $WARM warm-up + $N rounds of ctr run --rm true and of ctr task exec, through the wrapper"
  cpu_lifecycle() { # K ROUND
    local k=$1 i=$2 id=cl-r$1-$2 r0 r1 v p0
    echo "$id" >>"$D/ids"; r0=$(cg_usage_ns "$CG/$k/runc"); p0=$(pre_mark "$k")
    if ! timeout 60 ctr -a "$SOCK" -n "$NS" run --rm --fifo-dir "$D/fifo" --runtime "${RT_WRAP[$k]}" "$IMG" "$id" /bin/true \
        </dev/null >/dev/null 2>"$D/last.err"; then
      fail_note "${RT_LABEL[$k]}" "ctr run --rm $id (wrapped)" "$(head -c 300 "$D/last.err")"; force_rm "$id"; return
    fi
    v=$(shim_cpu_ms "$k" "$id"); r1=$(cg_usage_ns "$CG/$k/runc")
    if [[ $i != w* ]]; then
      rec cpu_lc "$k" "$v"; rec runc_lc "$k" "$(ms_of_ns $((r1 - r0)))"; rec delcalls "$k" "$(grep -cx "$id delete" "$D/wrap.log")"
      rec_net cpu_lc "$k" "$v" "$(pre_since "$k" "$p0")"
    fi
    rmdir "$CG/$k/$id" 2>/dev/null
  }
  for ((i = 1; i <= WARM; i++)); do for k in "${RUNS[@]}"; do cpu_lifecycle "$k" "w$i"; done; done
  for ((i = 1; i <= N; i++)); do for k in $(rotate "$i" "${RUNS[@]}"); do cpu_lifecycle "$k" "$i"; done; done
  for k in "${!RT_SPEC[@]}"; do
    echo "ce-r$k" >>"$D/ids"
    timeout 60 ctr -a "$SOCK" -n "$NS" run -d --fifo-dir "$D/fifo" --runtime "${RT_WRAP[$k]}" "$IMG" "ce-r$k" sleep 1000 \
      </dev/null >/dev/null 2>"$D/last.err" || fail_note "${RT_LABEL[$k]}" "ctr run -d ce-r$k" "$(head -c 300 "$D/last.err")"
  done
  sleep 0.5
  for ((i = 0; i <= N; i++)); do   # round 0 is a warm-up
    for k in $(rotate "$i" "${RUNS[@]}"); do
      s0=$(cg_usage_ns "$CG/$k/ce-r$k"); r0=$(cg_usage_ns "$CG/$k/runc"); p0=$(pre_mark "$k")
      timeout 30 ctr -a "$SOCK" -n "$NS" tasks exec --fifo-dir "$D/fifo" --exec-id "c$i" "ce-r$k" /bin/true \
        </dev/null >/dev/null 2>"$D/last.err" || { fail_note "${RT_LABEL[$k]}" "ctr task exec c$i (wrapped)" "$(head -c 300 "$D/last.err")"; continue; }
      sleep 0.05   # let the shim finish publishing the exec's events
      s1=$(cg_usage_ns "$CG/$k/ce-r$k"); r1=$(cg_usage_ns "$CG/$k/runc")
      [ $i = 0 ] || { rec cpu_ex "$k" "$(ms_of_ns $((s1 - s0)))"; rec runc_ex "$k" "$(ms_of_ns $((r1 - r0)))"
                      rec_net cpu_ex "$k" "$(ms_of_ns $((s1 - s0)))" "$(pre_since "$k" "$p0")"; }
    done
  done
  # An exec every PROBE_S seconds, as Kubernetes' exec probes come: the shim's CPU from just
  # before one exec to just before the next, so what it does in between counts too (a timer,
  # giving back idle memory and faulting it in again at the next exec, a garbage collection).
  log "   then $PROBE_N execs $PROBE_S s apart"
  declare -A pr0=() pp0=()
  for ((i = 0; i <= PROBE_N; i++)); do
    for k in $(rotate "$i" "${RUNS[@]}"); do
      s1=$(cg_usage_ns "$CG/$k/ce-r$k")
      if [ -n "${pr0[$k]:-}" ]; then
        v=$(ms_of_ns $((s1 - pr0[$k]))); rec cpu_pr "$k" "$v"; rec_net cpu_pr "$k" "$v" "$(pre_since "$k" "${pp0[$k]}")"
      fi
      pr0[$k]=$s1; pp0[$k]=$(pre_mark "$k")
      [ "$i" = "$PROBE_N" ] && continue
      timeout 30 ctr -a "$SOCK" -n "$NS" tasks exec --fifo-dir "$D/fifo" --exec-id "p$i" "ce-r$k" /bin/true \
        </dev/null >/dev/null 2>"$D/last.err" \
        || { fail_note "${RT_LABEL[$k]}" "ctr task exec p$i (wrapped)" "$(head -c 300 "$D/last.err")"; unset "pr0[$k]"; }
    done
    [ "$i" = "$PROBE_N" ] || sleep "$PROBE_S"
  done
  for k in "${!RT_SPEC[@]}"; do force_rm "ce-r$k"; check_shims_gone "$k" "ce-r$k"; done
else
  log "2. shim CPU: skipped (no usable cpuacct cgroup)"
fi

fi

# ================================================================ 3. memory of idle shims
if want memory; then
init_pid_of() { C tasks ls 2>/dev/null | awk -v id="$1" '$1 == id {print $2}'; }
stdio_kind() { # INIT_PID -> what its stdin/stdout are, e.g. "pipe/pipe" (the shim copies) or "fifo/fifo"
  local fd t out=
  for fd in 0 1; do
    t=$(readlink "/proc/$1/fd/$fd" 2>/dev/null)
    case $t in pipe:*) t=pipe ;; "$D/fifo/"*) t=fifo ;; /dev/null) t=null ;; socket:*) t=socket ;; /dev/pts/*) t=pty ;; "") t=none ;; *) t=other ;; esac
    out+=${out:+/}$t
  done
  echo "$out"
}
run_idle() { # K ID: start an idle container through the wrapper
  echo "$2" >>"$D/ids"
  timeout 60 ctr -a "$SOCK" -n "$NS" run -d --fifo-dir "$D/fifo" --runtime "${RT_WRAP[$1]}" "$IMG" "$2" sleep 1000 \
    </dev/null >/dev/null 2>"$D/last.err" || fail_note "${RT_LABEL[$1]}" "ctr run -d $2" "$(head -c 300 "$D/last.err")"
}
rec_mem() { # PREFIX K PIDS...: RSS, PSS, USS per shim process (MiB), threads, process count
  local p=$1 k=$2 mem i m=(rss pss uss); shift 2
  read -r -a mem <<<"$(python3 "$HERE/shimprocs.py" mem "$@")"   # RSS PSS USS (KiB) THREADS NPROCS
  for i in 0 1 2; do rec "${p}_${m[$i]}" "$k" "$(awk -v v="${mem[$i]}" -v n="${mem[4]}" 'BEGIN {printf "%.3f", v / 1024 / (n ? n : 1)}')"; done
  rec "${p}_thr" "$k" "${mem[3]}"; rec "${p}_np" "$k" "${mem[4]}"
}
log "3. memory: one idle container, then $IDLE_N idle containers, per runtime (sleep 1000)"
for k in "${!RT_SPEC[@]}"; do
  id=m1-r$k; run_idle "$k" "$id"; sleep $SETTLE
  pids=$(shims_of "$k" "$id" | awk '{print $1}' | xargs)
  # Measured before anything asks the shim a question (ctr tasks ls asks each shim for its
  # state): what an idle shim holds, not what answering a request brought in.
  [ -n "$pids" ] && rec_mem mem1 "$k" $pids
  init=$(init_pid_of "$id"); ppid=$(awk '/^PPid:/ {print $2}' "/proc/$init/status" 2>/dev/null)
  if [ -z "$pids" ]; then fail_note "${RT_LABEL[$k]}" "memory" "no shim process found for $id"
  else
    [[ " $pids " == *" $ppid "* ]] || log "WARNING: ${RT_LABEL[$k]} $id: init $init has parent $ppid, not a shim we found ($pids)"
    STDIO_KIND[$k]=$(stdio_kind "$init")
  fi
  force_rm "$id"; check_shims_gone "$k" "$id"; sleep 1
  ids=(); for ((j = 1; j <= IDLE_N; j++)); do ids+=("mi-r$k-$j"); run_idle "$k" "mi-r$k-$j"; done
  sleep $SETTLE
  pids=$(for id in "${ids[@]}"; do shims_of "$k" "$id"; done | awk '{print $1}' | sort -u | xargs)
  rec_mem memN "$k" $pids
  if [ $CPU_ACCT != none ]; then
    c0=0; for id in "${ids[@]}"; do c0=$((c0 + $(cg_usage_ns "$CG/$k/$id"))); done
    sleep "$IDLE_S"
    c1=0; for id in "${ids[@]}"; do c1=$((c1 + $(cg_usage_ns "$CG/$k/$id"))); done
    rec idle_cpu "$k" "$(awk -v a="$c0" -v b="$c1" -v n="$IDLE_N" -v s="$IDLE_S" 'BEGIN {printf "%.3f", (b - a) / 1e6 / n / s * 60}')"
  fi
  for id in "${ids[@]}"; do force_rm "$id"; done
  check_shims_gone "$k" "${ids[@]}"
done

fi

# ================================================================ 4. stdout throughput, stdin round trip
if want stdio; then
TP_CNT=$((TP_MIB * 1048576 / BS)); TP_BYTES=$((TP_CNT * BS)); ST_CNT=$((ST_MIB * 1048576 / BS)); ST_BYTES=$((ST_CNT * BS))
# the container times its own writer/reader with $EPOCHREALTIME: its start and stop are not counted
TP_SCRIPT='a=$EPOCHREALTIME; dd if=/dev/zero bs='$BS' count='$TP_CNT' 2>/dev/null; b=$EPOCHREALTIME; echo "shimbench-t $a $b" >&2'
ST_SCRIPT='a=$EPOCHREALTIME; cat; b=$EPOCHREALTIME; echo "shimbench-t $a $b" >&2'
# ctr's own CPU (user + system, ms) in the run just done: the subshell around it wrote `times`,
# whose second line is its children's. ctr copies every byte too (io.Copy, 32 KiB at a time),
# so this is the part of a stdio run no shim can take away.
ctr_cpu_ms() { tail -1 "$D/ctr.times" | awk '{t = 0; for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]}; printf "%.1f", t * 1000}'; }
inner_mib_s() { # BYTES ERRFILE: rate from the container's own timestamps
  local t; t=$(grep -a '^shimbench-t ' "$2" | tail -1)
  [ -n "$t" ] && mib_s "$1" "$(echo "$t" | cut -d' ' -f2)" "$(echo "$t" | cut -d' ' -f3)"
}
log "4. stdio: $REPS x a container writing $TP_MIB MiB to ctr > /dev/null; $REPS x $ST_MIB MiB through cat"
# The relay floor: what a copy that holds both ends and delays no output costs at the least. It
# splices its stdin to its stdout, blocking, so it wakes once per write of its writer or read
# of its reader (no epoll), with pipes of 256 KiB as the shim's; at EOF it appends its own CPU
# (us) to a file. Around it, `dd bs=32k` stands for ctr, whose io.Copy moves 32 KiB at a time:
# a reader that small wakes the writer of a full pipe once per read, relay or shim alike.
RELAY=
cat >"$D/relay.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
int main(int argc, char **argv) {
  fcntl(0, F_SETPIPE_SZ, 256 << 10);
  fcntl(1, F_SETPIPE_SZ, 256 << 10);
  while (splice(0, NULL, 1, NULL, 1 << 20, SPLICE_F_MOVE) > 0) {}
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  FILE *f = argc > 1 ? fopen(argv[1], "a") : NULL;
  if (f) {
    fprintf(f, "%ld\n", (long)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000L + u.ru_utime.tv_usec + u.ru_stime.tv_usec);
    fclose(f);
  }
  return 0;
}
EOF
command -v cc >/dev/null && cc -O2 -o "$D/relay" "$D/relay.c" 2>/dev/null && RELAY=$D/relay
[ -n "$RELAY" ] || log "no C compiler: the relay floors are n/a"
# The relay floors under ctr: a runtime that hands ctr's FIFOs to the container and copies
# nothing (rust-extensions' shim) runs the same relays inside the container, where they read
# and write ctr's FIFOs as a shim would. ctr then stands on both sides as it does for any shim,
# Go's poller and all, which dd does not. Only with such a runtime among those given.
NOCOPY=
if [ -n "$RELAY" ] && cc -O2 -static -o "$D/relay-static" "$D/relay.c" 2>/dev/null; then
  mkdir -p "$D/rcpu"
  for k in "${!RT_SPEC[@]}"; do
    echo "nc-r$k" >>"$D/ids"
    out=$(timeout 60 ctr -a "$SOCK" -n "$NS" run --rm --fifo-dir "$D/fifo" --runtime "${RT_NAME[$k]}" "$IMG" "nc-r$k" \
      readlink /proc/self/fd/1 </dev/null 2>/dev/null) || { force_rm "nc-r$k"; continue; }
    case $out in ""|pipe:*|socket:*) ;; *) NOCOPY=$k; break ;; esac
  done
fi
[ -n "$NOCOPY" ] && log "   relays under ctr: in containers of ${RT_LABEL[$NOCOPY]}, which gets ctr's FIFOs" \
  || log "   no runtime given hands the container ctr's FIFOs: the relay floors under ctr are n/a"
# RUNTIME-K SCRIPT: ctr run --rm on the no-copy runtime with the static relay at /relay and a
# directory at /cpu for its CPU figures; stdin from the caller
run_with_relay() {
  timeout 600 ctr -a "$SOCK" -n "$NS" run --rm --fifo-dir "$D/fifo" --runtime "${RT_NAME[$NOCOPY]}" \
    --mount "type=bind,src=$D/relay-static,dst=/relay,options=rbind:ro" \
    --mount "type=bind,src=$D/rcpu,dst=/cpu,options=rbind:rw" "$IMG" "$1" sh -c "$2"
}
relay_cpu_ms() { awk '{s += $1} END {printf "%.3f", s / 1000}' "$1"; }   # FILE: the relays' lines (us)
per_gib() { awk -v m="$TP_MIB" '{printf "%.3f", $1 * 1024 / m}'; }   # ms for TP_MIB -> ms per GiB
for ((r = 1; r <= REPS; r++)); do
  for s in $(rotate "$r" "${RUNS[@]}" F F2 ${RELAY:+FR} ${NOCOPY:+FC}); do
    if [ "$s" = FC ]; then   # floor: the relay under ctr, between the container's dd and ctr
      id=tpc-$r; echo "$id" >>"$D/ids"; : >"$D/rcpu/relay.cpu"
      if ( run_with_relay "$id" "${TP_SCRIPT/ 2>\/dev\/null;/ 2>\/dev\/null | \/relay \/cpu\/relay.cpu;}" \
          </dev/null >/dev/null 2>"$D/tp.err"; rc=$?; times >"$D/ctr.times"; exit $rc ); then
        v=$(inner_mib_s "$TP_BYTES" "$D/tp.err"); [ -n "$v" ] && rec tp floorC "$v"
        rec cpu_gib floorC "$(relay_cpu_ms "$D/rcpu/relay.cpu" | per_gib)"
        rec ctr_gib floorC "$(ctr_cpu_ms | per_gib)"
      else fail_note floorC "stdout $id" "$(grep -v '^shimbench-t' "$D/tp.err" | head -c 300)"; force_rm "$id"; fi
      continue
    fi
    if [ "$s" = FR ]; then   # floor: dd | relay | dd bs=32k (ctr), and the relay's CPU per GiB
      : >"$D/relay.cpu"; a=$EPOCHREALTIME
      "$BUSYBOX" dd if=/dev/zero bs=$BS count=$TP_CNT 2>/dev/null | "$RELAY" "$D/relay.cpu" \
        | "$BUSYBOX" dd bs=32768 of=/dev/null 2>/dev/null
      rec tp floorR "$(mib_s "$TP_BYTES" "$a" "$EPOCHREALTIME")"
      rec cpu_gib floorR "$(relay_cpu_ms "$D/relay.cpu" | per_gib)"; continue
    fi
    if [ "$s" = F ] || [ "$s" = F2 ]; then   # floors: dd | cat (one copy), dd | cat | cat (two: shim, ctr)
      a=$EPOCHREALTIME
      if [ "$s" = F ]; then "$BUSYBOX" dd if=/dev/zero bs=$BS count=$TP_CNT 2>/dev/null | cat >/dev/null
      else "$BUSYBOX" dd if=/dev/zero bs=$BS count=$TP_CNT 2>/dev/null | cat | cat >/dev/null; fi
      rec tp "$([ "$s" = F ] && echo floor || echo floor2)" "$(mib_s "$TP_BYTES" "$a" "$EPOCHREALTIME")"; continue
    fi
    id=tp-r$s-$r; echo "$id" >>"$D/ids"
    if ( timeout 600 ctr -a "$SOCK" -n "$NS" run --rm --fifo-dir "$D/fifo" --runtime "${RT_WRAP[$s]}" "$IMG" "$id" \
        sh -c "$TP_SCRIPT" </dev/null >/dev/null 2>"$D/tp.err"; rc=$?; times >"$D/ctr.times"; exit $rc ); then
      v=$(inner_mib_s "$TP_BYTES" "$D/tp.err"); [ -n "$v" ] && rec tp "$s" "$v"
      rec ctr_gib "$s" "$(ctr_cpu_ms | per_gib)"
      if [ $CPU_ACCT != none ]; then
        v=$(shim_cpu_ms "$s" "$id"); rec cpu_tp "$s" "$v"
        rec cpu_gib "$s" "$(awk -v v="$v" -v m="$TP_MIB" 'BEGIN {printf "%.3f", v * 1024 / m}')"
      fi
    else fail_note "${RT_LABEL[$s]}" "stdout $id" "$(grep -v '^shimbench-t' "$D/tp.err" | head -c 300)"; force_rm "$id"; fi
  done
  for s in $(rotate "$r" "${RUNS[@]}" F ${RELAY:+FR} ${NOCOPY:+FC}); do
    if [ "$s" = FC ]; then   # floor: ctr | relay | cat | relay | ctr, the relays in the container
      id=stc-$r; echo "$id" >>"$D/ids"; : >"$D/rcpu/relay.cpu"
      "$BUSYBOX" dd if=/dev/zero bs=$BS count=$ST_CNT 2>/dev/null \
        | ( run_with_relay "$id" "${ST_SCRIPT/ cat;/ \/relay \/cpu\/relay.cpu | cat | \/relay \/cpu\/relay.cpu;}" 2>"$D/st.err"
            rc=$?; times >"$D/ctr.times"; exit $rc ) | wc -c >"$D/st.count"; rcs=("${PIPESTATUS[@]}")
      if [ "${rcs[1]}" = 0 ] && [ "$(cat "$D/st.count")" = "$ST_BYTES" ]; then
        v=$(inner_mib_s "$ST_BYTES" "$D/st.err"); [ -n "$v" ] && rec st floorC "$v"
        rec cpu_st floorC "$(relay_cpu_ms "$D/rcpu/relay.cpu")"; rec ctr_st floorC "$(ctr_cpu_ms)"
      else fail_note floorC "stdin $id" "ctr exit ${rcs[1]}, $(cat "$D/st.count") of $ST_BYTES bytes back"; force_rm "$id"; fi
      continue
    fi
    if [ "$s" = FR ]; then   # floor with ctr's and the shim's hops: dd | ctr | relay | cat | relay | ctr | wc -c
      : >"$D/relay.cpu"; a=$EPOCHREALTIME
      "$BUSYBOX" dd if=/dev/zero bs=$BS count=$ST_CNT 2>/dev/null | "$BUSYBOX" dd bs=32768 2>/dev/null | "$RELAY" "$D/relay.cpu" \
        | cat | "$RELAY" "$D/relay.cpu" | "$BUSYBOX" dd bs=32768 2>/dev/null | wc -c >/dev/null
      rec st floorR "$(mib_s "$ST_BYTES" "$a" "$EPOCHREALTIME")"
      rec cpu_st floorR "$(relay_cpu_ms "$D/relay.cpu")"; continue
    fi
    if [ "$s" = F ]; then
      a=$EPOCHREALTIME; "$BUSYBOX" dd if=/dev/zero bs=$BS count=$ST_CNT 2>/dev/null | cat | wc -c >/dev/null
      rec st floor "$(mib_s "$ST_BYTES" "$a" "$EPOCHREALTIME")"; continue
    fi
    id=st-r$s-$r; echo "$id" >>"$D/ids"
    # ctr 1.6 `run` always attaches its stdin and CloseIO()s the container's stdin at EOF
    "$BUSYBOX" dd if=/dev/zero bs=$BS count=$ST_CNT 2>/dev/null \
      | ( timeout 600 ctr -a "$SOCK" -n "$NS" run --rm --fifo-dir "$D/fifo" --runtime "${RT_WRAP[$s]}" "$IMG" "$id" \
          sh -c "$ST_SCRIPT" 2>"$D/st.err"; rc=$?; times >"$D/ctr.times"; exit $rc ) | wc -c >"$D/st.count"; rcs=("${PIPESTATUS[@]}")
    got=$(cat "$D/st.count")
    if [ "${rcs[1]}" != 0 ]; then
      fail_note "${RT_LABEL[$s]}" "stdin $id" "ctr exit ${rcs[1]}, $got of $ST_BYTES bytes back: $(grep -v '^shimbench-t' "$D/st.err" | head -c 300)"
      force_rm "$id"; rec st_ok "$s" 0; continue
    fi
    [ "$got" = "$ST_BYTES" ] && rec st_ok "$s" 1 || { rec st_ok "$s" 0; fail_note "${RT_LABEL[$s]}" "stdin $id" "$got bytes came back, $ST_BYTES went in"; }
    v=$(inner_mib_s "$ST_BYTES" "$D/st.err"); [ -n "$v" ] && rec st "$s" "$v"
    [ $CPU_ACCT != none ] && rec cpu_st "$s" "$(shim_cpu_ms "$s" "$id")"
    rec ctr_st "$s" "$(ctr_cpu_ms)"
  done
done

fi

# ================================================================ 5. scale
if want scale; then
log "5. scale: $SCALE_N idle containers with a shim each, then $PODS pods of $POD_SIZE with a shim per pod"
# METRIC K IDS...: start each (group annotation "-" for none) one after another, then record the
# time it took, the shims' total PSS and their number; then remove them all
scale_run() {
  local m=$1 k=$2 id group t0 t1 one slowest=0 pids mem extra; shift 2
  t0=${EPOCHREALTIME/./}
  for id in "$@"; do
    t1=${EPOCHREALTIME/./}
    group=${id%%:*}; id=${id#*:}; extra=()
    [ "$group" = - ] || extra=(--annotation "io.containerd.runc.v2.group=$group")
    echo "$id" >>"$D/ids"
    timeout 60 ctr -a "$SOCK" -n "$NS" run -d --fifo-dir "$D/fifo" "${extra[@]}" --runtime "${RT_NAME[$k]}" "$IMG" "$id" sleep 1000 \
      </dev/null >/dev/null 2>"$D/last.err" || fail_note "${RT_LABEL[$k]}" "ctr run -d $id" "$(head -c 300 "$D/last.err")"
    # A total can hide one stall: the slowest single start says whether it did.
    one=$(( (${EPOCHREALTIME/./} - t1) / 1000 ))
    (( one > slowest )) && slowest=$one
  done
  rec "${m}_start" "$k" "$(awk -v ms="$(ms_since "$t0")" 'BEGIN {printf "%.3f", ms / 1000}')"
  rec "${m}_slowest" "$k" "$slowest"
  sleep $SETTLE
  pids=$(shims_of "$k" | awk '{print $1}' | xargs)
  read -r -a mem <<<"$(python3 "$HERE/shimprocs.py" mem $pids)"   # RSS PSS USS (KiB) THREADS NPROCS
  rec "${m}_pss" "$k" "$(awk -v v="${mem[1]}" 'BEGIN {printf "%.3f", v / 1024}')"
  rec "${m}_np" "$k" "${mem[4]}"
  for id in "$@"; do force_rm "${id#*:}"; done
  wait_no_shim "$k"
}
for k in "${RUNS[@]}"; do
  ids=(); for ((j = 1; j <= SCALE_N; j++)); do ids+=("-:sc-r$k-$j"); done
  scale_run scale1 "$k" "${ids[@]}"
  ids=(); for ((p = 1; p <= PODS; p++)); do for ((j = 1; j <= POD_SIZE; j++)); do ids+=("pod-r$k-$p:sp-r$k-$p-$j"); done; done
  scale_run scalep "$k" "${ids[@]}"
done
fi

# ================================================================ what is left, binaries
sleep 2
for k in "${!RT_SPEC[@]}"; do
  shims_of "$k" | awk '{print $3}' >>"$RES/outlived.$k"
  cp "${RT_ORIG[$k]}" "$D/strip.tmp" && strip -s "$D/strip.tmp" 2>/dev/null
  rec size "$k" "$(stat -c %s "${RT_ORIG[$k]}" | awk '{printf "%.3f", $1 / 1048576}')"
  rec size_stripped "$k" "$(stat -c %s "$D/strip.tmp" | awk '{printf "%.3f", $1 / 1048576}')"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ================================================================ report
# row: METRIC|STAT|DECIMALS|LABEL|UNIT|FLOOR  (STAT: med p90 val sum mean added=med-floor med)
ROWS=(
  "lc|med|1|ctr run --rm true: latency, median|ms|floor"
  "lc|p90|1|ctr run --rm true: latency, p90|ms|floor"
  "lc|added|1|ctr run --rm true: median minus floor median|ms|"
  "dl|med|1|ctr run -d sleep + task rm -f + c rm: median|ms|floor"
  "dl|p90|1|ctr run -d sleep + task rm -f + c rm: p90|ms|floor"
  "exec|med|1|ctr task exec true: latency, median|ms|floor"
  "exec|p90|1|ctr task exec true: latency, p90|ms|floor"
  "cpu_lc|med|2|shim CPU per lifecycle (start+daemon+delete), median|ms|"
  "cpu_lc|p90|2|shim CPU per lifecycle, p90|ms|"
  "cpu_lc_net|med|2|shim CPU per lifecycle, less the runc wrapper's, median|ms|"
  "cpu_lc_wrap|med|2|  of which the runc wrapper's start, per lifecycle|ms|"
  "cpu_lc_calls|mean|1|  runc calls per lifecycle|#|"
  "runc_lc|med|1|runc CPU per lifecycle (not in shim CPU), median|ms|"
  "delcalls|mean|2|'shim delete' calls per lifecycle (by containerd)|#|"
  "cpu_ex|med|2|shim CPU per exec, median|ms|"
  "cpu_ex_net|med|2|shim CPU per exec, less the runc wrapper's, median|ms|"
  "cpu_ex_wrap|med|2|  of which the runc wrapper's start, per exec|ms|"
  "cpu_ex_calls|mean|1|  runc calls per exec|#|"
  "runc_ex|med|1|runc CPU per exec (not in shim CPU), median|ms|"
  "cpu_pr|med|2|shim CPU per exec, one every $PROBE_S s (as probes), median|ms|"
  "cpu_pr_net|med|2|the same, less the runc wrapper's, median|ms|"
  "mem1_rss|val|2|1 idle shim: RSS|MiB|"
  "mem1_pss|val|2|1 idle shim: PSS|MiB|"
  "mem1_uss|val|2|1 idle shim: USS (private)|MiB|"
  "mem1_thr|val|0|1 idle shim: threads|#|"
  "memN_rss|val|2|$IDLE_N idle shims: RSS per shim|MiB|"
  "memN_pss|val|2|$IDLE_N idle shims: PSS per shim|MiB|"
  "memN_uss|val|2|$IDLE_N idle shims: USS per shim|MiB|"
  "memN_np|val|0|$IDLE_N idle containers: shim processes|#|"
  "idle_cpu|val|2|idle shim CPU, per shim per minute|ms|"
  "tp|med|0|stdout $TP_MIB MiB: throughput (timed in container)|MiB/s|floor"
  "tp|med|0|stdout, against the relay floor (see below)|MiB/s|floorR"
  "cpu_tp|med|1|stdout $TP_MIB MiB: shim CPU for the whole run|ms|"
  "cpu_gib|med|0|stdout: shim CPU per GiB (floor: the relay's)|ms|floorR"
  "tp|med|0|stdout, against the relay under ctr (see below)|MiB/s|floorC"
  "cpu_gib|med|0|stdout: shim CPU per GiB (floor: the relay's under ctr)|ms|floorC"
  "ctr_gib|med|0|stdout: ctr's own CPU per GiB (floor: beside the relay)|ms|floorC"
  "st|med|0|stdin $ST_MIB MiB through cat (timed in container)|MiB/s|floor"
  "st|med|0|stdin, against the relay floor (see below)|MiB/s|floorR"
  "cpu_st|med|1|stdin $ST_MIB MiB: shim CPU, whole run (floor: the relays')|ms|floorR"
  "st|med|0|stdin, against the relays under ctr (see below)|MiB/s|floorC"
  "cpu_st|med|1|stdin: shim CPU (floor: the relays' under ctr)|ms|floorC"
  "ctr_st|med|1|stdin $ST_MIB MiB: ctr's own CPU (floor: beside the relays)|ms|floorC"
  "st_ok|sum|0|stdin runs with every byte back (of $REPS)|#|"
  "scale1_start|val|1|$SCALE_N idle containers, a shim each: time to start all|s|"
  "scale1_slowest|val|0|  the slowest single start of them|ms|"
  "scale1_pss|val|1|$SCALE_N idle containers, a shim each: total shim PSS|MiB|"
  "scale1_np|val|0|$SCALE_N idle containers, a shim each: shim processes|#|"
  "scalep_start|val|1|$PODS pods of $POD_SIZE: time to start all|s|"
  "scalep_slowest|val|0|  the slowest single start of them|ms|"
  "scalep_pss|val|1|$PODS pods of $POD_SIZE: total shim PSS|MiB|"
  "scalep_np|val|0|$PODS pods of $POD_SIZE: shim processes|#|"
  "size|val|2|binary size, as installed|MiB|"
  "size_stripped|val|2|binary size, stripped|MiB|"
)
value_of() { # METRIC COLUMN STAT DECIMALS
  local f=$RES/$1.$2 med p90 mean fm
  [ -s "$f" ] || { echo "n/a"; return; }
  [ "$3" = sum ] && { awk -v d="$4" '{s += $1} END {printf "%.*f", d, s}' "$f"; return; }
  read -r med p90 mean _ <<<"$(stats "$f")"
  case $3 in
    med|val) awk -v v="$med" -v d="$4" 'BEGIN {printf "%.*f", d, v}' ;;
    p90) awk -v v="$p90" -v d="$4" 'BEGIN {printf "%.*f", d, v}' ;;
    mean) awk -v v="$mean" -v d="$4" 'BEGIN {printf "%.*f", d, v}' ;;
    added) read -r fm _ <<<"$(stats "$RES/$1.floor")"; awk -v v="$med" -v f="$fm" -v d="$4" 'BEGIN {printf "%.*f", d, v - f}' ;;
  esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a + 0 > 0) printf "%.2f", b / a; else print "-"}'; }
W=12
extra_row() { # LABEL UNIT VALUE...: a row without ratios
  local line v; line=$(printf '%-56s %-5s' "$1" "$2"); shift 2
  for v in "$@"; do line+=$(printf " %${W}s" "$v"); done; echo "$line"
}
{
  echo "== shimbench: containerd runtime v2 shims, side by side =="
  echo "command: $CMDLINE"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: Linux $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)  mode: $MODE"
  echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR == 1 {print $3}'), overlayfs, busybox $("$BUSYBOX" | awk 'NR == 1 {print $2}') image"
  echo "rounds: $N per latency/CPU metric (+$WARM warm-up), $IDLE_N idle containers, $REPS x stdout $TP_MIB MiB, $REPS x stdin $ST_MIB MiB"
  echo "load average: start $LOAD_START, end $LOAD_END; CPU accounting: $([ $CPU_ACCT = none ] && echo 'none (CPU rows n/a)' || echo "cgroup $CPU_ACCT")"
  for k in "${!RT_SPEC[@]}"; do
    echo "runtime $((k + 1)) [${RT_LABEL[$k]}]: ${RT_GIVEN[$k]} -> ${RT_ORIG[$k]} (sha256 $(sha256sum <"${RT_ORIG[$k]}" | cut -c1-12))"
  done
  echo
  hdr=$(printf '%-56s %-5s' metric unit)
  for k in "${!RT_SPEC[@]}"; do hdr+=$(printf " %${W}s" "${RT_LABEL[$k]:0:$W}"); done
  for ((k = 1; k < K; k++)); do hdr+=$(printf " %7s" "$((k + 1))/1"); done
  hdr+=$(printf " %9s" floor)
  echo "$hdr"; printf '%*s\n' "${#hdr}" '' | tr ' ' -
  for row in "${ROWS[@]}"; do
    IFS='|' read -r m st dec label unit fcol <<<"$row"
    line=$(printf '%-56s %-5s' "${label:0:56}" "$unit"); vals=()
    for k in "${!RT_SPEC[@]}"; do vals[$k]=$(value_of "$m" "$k" "$st" "$dec"); line+=$(printf " %${W}s" "${vals[$k]}"); done
    for ((k = 1; k < K; k++)); do line+=$(printf " %7s" "$(ratio "${vals[0]}" "${vals[$k]}")"); done
    [ -n "$fcol" ] && line+=$(printf " %9s" "$(value_of "$m" "$fcol" "$st" "$dec")")
    echo "$line"
  done
  left=(); outl=(); stdio=(); fails=()
  for k in "${!RT_SPEC[@]}"; do
    left+=("${LEFT_RM[$k]:-n/a}"); stdio+=("${STDIO_KIND[$k]:-n/a}")
    outl+=("$(sort -u "$RES/outlived.$k" 2>/dev/null | grep -c .)")
    fails+=("$(awk -F'\t' -v l="${RT_LABEL[$k]}" '$1 == l' "$D/failures" | wc -l)")
  done
  extra_row "left after run --rm, rm -f: procs/mnt/bndl/runc/sock/cg" "#" "${left[@]}"
  extra_row "shims alive 3 s after their container was removed" "#" "${outl[@]}"
  extra_row "container stdin/stdout: pipe (shim copies) or fifo" "" "${stdio[@]}"
  extra_row "failed or timed-out commands" "#" "${fails[@]}"
  echo
  echo "ratios: column k / column 1 (lower is better, but for MiB/s). Floor: runc alone on the same rootfs with"
  echo "  containerd's default spec (no containerd, no shim, no overlay mount; run -d + kill --all + wait + delete);"
  echo "  stdout: busybox dd | cat > /dev/null; dd | cat | cat (two copies, like shim + ctr) = $(value_of tp floor2 med 0) MiB/s;"
  echo "  stdin: dd | cat | wc -c. Latencies include starting ctr (a Go client, the same for every runtime)."
  echo "  relay floors: the shim's hops done by a C program that splices stdin to stdout (blocking, 256 KiB"
  echo "  pipes), ctr's by dd bs=32k: stdout dd | relay | dd (and the relay's own CPU per GiB);"
  echo "  stdin dd | dd | relay | cat | relay | dd | wc -c (and the two relays' CPU together)."
  echo "  relay floors under ctr: the same relays in a container of a runtime that hands it ctr's FIFOs and"
  echo "  copies nothing$([ -n "$NOCOPY" ] && echo " (${RT_LABEL[$NOCOPY]})" || echo ", when one is given (none was: n/a)"): stdout dd | relay > FIFO; stdin FIFO > relay | cat | relay > FIFO."
  echo "ctr's own CPU: user + system of ctr (and timeout) in each stdio run (bash times); ctr copies every byte"
  echo "  too, 32 KiB at a time, so on $(nproc) cpus it is CPU no shim can give the container."
  echo "shim CPU: the shim's start copy + daemon + containerd's 'shim delete' call, per-container cpuacct cgroup;"
  echo "  runc and the container are not counted; the runc wrapper's start before it moves is ($WRAP_KIND wrapper);"
  echo "  'less the runc wrapper's': minus the CPU each wrapper run had used when it moved (its own clock)."
  for k in "${!RT_SPEC[@]}"; do
    [ -s "$RES/outlived.$k" ] && echo "${RT_LABEL[$k]}: shims that outlived their container: $(sort -u "$RES/outlived.$k" | xargs)"
  done
  [ -s "$D/failures" ] && { echo; echo "failures:"; sed 's/^/  /' "$D/failures" | head -40; }
  echo; echo "containerd log, errors and warnings after set-up (ids and times removed, counted):"
  tail -n +"$((CTD_LOG_MARK + 1))" "$D/containerd.log" | grep -aE 'level=(error|warning|fatal)' \
    | sed -E 's/time="[^"]*" //; s/time=\\"[^\\]*\\" //g; s/(id|pid|namespace)=[^ ]* ?//g; s/[0-9a-f]{64}/<hash>/g; s/-r[0-9]+-[0-9w]+/-rK-I/g' \
    | sort | uniq -c | sort -rn | head -12 | sed 's/^/  /'
} | tee "$D/report.txt"
