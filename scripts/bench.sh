#!/usr/bin/env bash
# Measures our shim against containerd's Go shim in the same run, on a private containerd:
#   - wall time of `ctr run --rm IMAGE true` (mean of RUNS runs)
#   - wall time of 256 MiB of container stdout through the shim to ctr
#   - resident memory (RSS and PSS) of one idle shim serving one sleeping container
#   - context switches of that idle shim over 10 s (an idle shim should do no periodic work)
#   - wall time of `ctr tasks exec true` in that container, and the shim's own CPU per exec
#     (utime + stime of the shim process, not of the runc it runs; mean of EXECS execs)
#   - the RSS of every shim serving five sleeping containers: as one group (one shim, by the
#     io.containerd.runc.v2.group annotation) and ungrouped (one shim each)
#   - the RSS of the shims of ten idle `docker run -d` containers, through a private dockerd
#     (Docker Engine from scripts/docker.sh) on the same containerd; skipped if Docker cannot
#     be had
# Prints each figure for both, and ours as a ratio of the Go shim's. Figures, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
EXECS=${EXECS:-100}
. scripts/lib.sh
[ -x /usr/local/bin/containerd-shim-rustshim-v1 ] || scripts/install.sh >/dev/null

work=$(mktemp -d /tmp/shim-bench.XXXXXX)
ns=bench
trap 'stop_docker; private_containerd_stop "$work"; remove_namespace_cgroups "$ns"; rm -rf "$work"' EXIT
private_containerd_start "$work"
import_test_image "$work" "$ns"
c() { timeout -s KILL 120 ctr --address "$address" -n "$ns" "$@"; }
shims_rss() { # total RSS of the shims serving namespace $1
  local total=0 pid
  for pid in $(pgrep -f -- "-namespace $1 -id"); do
    total=$(( total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") ))
  done
  echo "$total"
}

# A private dockerd (network namespace of its own) whose runtimes are the two shims.
dns=bench-docker docker_pid=
stop_docker() {
  [ -n "$docker_pid" ] || return 0
  kill "$docker_pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$docker_pid" 2>/dev/null || break; sleep 0.1; done
  remove_namespace_cgroups "$dns"
}
if docker_dir=$(scripts/docker.sh 2>/dev/null); then
  cat >"$work/daemon.json" <<JSON
{"runtimes": {"rust": {"runtimeType": "io.containerd.rustshim.v1"},
              "go": {"runtimeType": "io.containerd.runc.v2"}}}
JSON
  unshare --net -- "$docker_dir/sbin/dockerd" --config-file "$work/daemon.json" \
    --containerd "$address" --containerd-namespace "$dns" --containerd-plugins-namespace "$dns-p" \
    --data-root "$work/docker" --exec-root "$work/dexec" --pidfile "$work/docker.pid" \
    -H "unix://$work/docker.sock" --cgroup-parent "/$dns" --iptables=false --ip6tables=false \
    --bridge=none --userland-proxy=false --storage-driver=vfs >"$work/dockerd.log" 2>&1 &
  docker_pid=$!
  d() { timeout -s KILL 120 "$docker_dir/bin/docker" -H "unix://$work/docker.sock" "$@"; }
  for _ in $(seq 300); do d version >/dev/null 2>&1 && break; sleep 0.1; done
  python3 scripts/busybox-image.py --rootfs "$work/rootfs.tar"
  d import -c 'ENV PATH=/bin' "$work/rootfs.tar" busybox-bench:latest >/dev/null
fi
now_ns() { date +%s%N; }

declare -A result
for rt in io.containerd.rustshim.v1 io.containerd.runc.v2; do
  c run --rm --runtime "$rt" "$IMAGE" warm true
  start=$(now_ns)
  for i in $(seq "$RUNS"); do c run --rm --runtime "$rt" "$IMAGE" "r$i" true; done
  result[$rt,run_ms]=$(( ($(now_ns) - start) / RUNS / 1000000 ))

  start=$(now_ns)
  c run --rm --runtime "$rt" "$IMAGE" big sh -c 'head -c 268435456 /dev/zero' | wc -c >/dev/null
  result[$rt,stream_ms]=$(( ($(now_ns) - start) / 1000000 ))

  c run -d --runtime "$rt" "$IMAGE" idle sleep 1000 >/dev/null
  sleep 2
  shim=$(pgrep -f -- "-namespace $ns -id idle" | head -1)
  result[$rt,rss_kib]=$(awk '/^VmRSS/ {print $2}' "/proc/$shim/status")
  result[$rt,pss_kib]=$(awk '/^Pss:/ {print $2}' "/proc/$shim/smaps_rollup")
  # Per thread, so a thread that ends during the window does not subtract its history.
  switches() {
    for t in /proc/"$shim"/task/*; do
      echo "${t##*/} $(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status" 2>/dev/null)"
    done
  }
  before=$(switches); sleep 10; after=$(switches)
  result[$rt,idle_wakeups_10s]=$(awk 'NR == FNR {b[$1] = $2; next} {d += $2 - ($1 in b ? b[$1] : 0)} END {print d + 0}' \
    <(echo "$before") <(echo "$after"))
  shim_ticks() { awk '{print $14 + $15}' "/proc/$shim/stat"; }
  ticks=$(shim_ticks); start=$(now_ns)
  for i in $(seq "$EXECS"); do c tasks exec --exec-id "e$i" idle true; done
  result[$rt,exec_ms]=$(( ($(now_ns) - start) / EXECS / 1000000 ))
  # A tick is 1/CLK_TCK s: microseconds of shim CPU per exec.
  result[$rt,exec_cpu_us]=$(( ($(shim_ticks) - ticks) * 1000000 / $(getconf CLK_TCK) / EXECS ))
  c tasks kill -s SIGKILL idle >/dev/null; sleep 0.5
  c tasks rm -f idle >/dev/null 2>&1 || true; c containers rm idle >/dev/null

  for layout in group5 five_shims; do
    for i in 1 2 3 4 5; do
      extra=()
      [ "$layout" = group5 ] && extra=(--annotation io.containerd.runc.v2.group=bench-group)
      c run -d "${extra[@]}" --runtime "$rt" "$IMAGE" "$layout$i" sleep 1000 >/dev/null
    done
    sleep 2
    result[$rt,${layout}_rss_kib]=$(shims_rss "$ns")
    for i in 1 2 3 4 5; do c tasks kill -s SIGKILL "$layout$i" >/dev/null; done
    sleep 0.5
    for i in 1 2 3 4 5; do
      c tasks rm -f "$layout$i" >/dev/null 2>&1 || true; c containers rm "$layout$i" >/dev/null
    done
  done

  result[$rt,docker10_rss_kib]=-
  if [ -n "$docker_pid" ]; then
    name=$([ "$rt" = io.containerd.rustshim.v1 ] && echo rust || echo go)
    for i in $(seq 10); do d run -d --runtime "$name" busybox-bench:latest sleep 1000 >/dev/null 2>&1; done
    sleep 2
    result[$rt,docker10_rss_kib]=$(shims_rss "$dns")
    d rm -f $(d ps -aq) >/dev/null
  fi
done

ours=io.containerd.rustshim.v1 go=io.containerd.runc.v2
printf '%-32s %12s %12s %8s\n' figure rust-v1 runc.v2 ratio
for f in run_ms stream_ms rss_kib pss_kib idle_wakeups_10s exec_ms exec_cpu_us group5_rss_kib five_shims_rss_kib docker10_rss_kib; do
  a=${result[$ours,$f]} b=${result[$go,$f]}
  printf '%-32s %12s %12s %8s\n' "$f" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", (b>0? a/b : 0)}')"
done
echo "(run_ms: mean of $RUNS 'ctr run --rm true'; stream_ms: 256 MiB stdout; rss/pss/wakeups: one idle shim;"
echo " exec_ms, exec_cpu_us: mean of $EXECS 'ctr tasks exec true', wall time and shim CPU;"
echo " group5_rss_kib: RSS of the one shim of a group of five containers; five_shims_rss_kib: of five ungrouped;"
echo " docker10_rss_kib: of the shims of ten idle 'docker run -d' containers)"
