#!/usr/bin/env bash
# podnet's netavark backend against netavark 1.14 + aardvark-dns 1.14 (Debian 13's, run
# from the cached root of scripts/trixie-root.sh), side by side in one run, in a
# throwaway network + mount namespace: setup and teardown of a container with one
# published port on a network holding OTHERS containers, with the documents Podman 5
# sends (docs/benchmarks.md). `podnet-exec` is podnet's backend with its plugins
# executed (PODNET_EXEC_PLUGINS=1) instead of linked.
#
#   [PODNET_BENCH_GAP=SECONDS] scripts/bench-netavark.sh PODNET_DIR [ITERATIONS] [OTHERS...]
#
# PODNET_BENCH_GAP: a pause before each timed setup (Podman's own pace between a
# teardown and the next setup), 0 by default: back to back.
set -euo pipefail
[ -n "${PODNET_BENCH_TRACE:-}" ] && set -x

if [ -z "${PODNET_BENCH_INSIDE:-}" ]; then
  root="$("$(dirname "$0")/trixie-root.sh")"
  export PODNET_BENCH_INSIDE=1 PODNET_BENCH_ROOT="$root"
  exec unshare --net --mount --propagation private -- "$0" "$@"
fi

podnet_dir="$(realpath "$1")" iterations="${2:-20}"
shift 2 || shift $#
others=("${@:-1}")
[ $# -gt 0 ] || others=(1 100)
root="$PODNET_BENCH_ROOT"

mount -t tmpfs tmpfs /run
mount --make-shared /run   # netns pins made later reach the root's view of /run
mkdir -p /run/netns /run/bench
ip link set lo up
# Debian 13's netavark runs in its own root; /run, /proc, /sys and /dev are this sandbox's.
w="$(mktemp -d /var/tmp/bench-netavark.XXXXXX)"
mount -t tmpfs tmpfs "$w"
mkdir -p "$w/upper" "$w/work" "$w/root"
mount -t overlay overlay -o "lowerdir=$root,upperdir=$w/upper,workdir=$w/work" "$w/root"
r="$w/root"
mount --rbind /proc "$r/proc"; mount --rbind /sys "$r/sys"; mount --rbind /dev "$r/dev"
mount --rbind /run "$r/run"

doc() { # doc ID_NUMBER
  local n="$1" id
  id="$(printf "be%062x" "$n")"
  local ip="10.89.$((n / 250)).$((n % 250 + 2))"
  printf '{"container_id":"%s","container_name":"c%d","port_mappings":[{"host_ip":"","container_port":80,"host_port":%d,"range":1,"protocol":"tcp"}],"networks":{"blog":{"static_ips":["%s"],"aliases":["%s"],"interface_name":"eth0"}},"container_hostname":"%s","network_info":{"blog":{"name":"blog","id":"8abd79176f370a655d0e9b30e2e83f3f9f67fd006b043f06f29e9756968eda3d","driver":"bridge","network_interface":"podman1","subnets":[{"subnet":"10.89.0.0/16","gateway":"10.89.0.1"}],"ipv6_enabled":false,"internal":false,"dns_enabled":true,"ipam_options":{"driver":"host-local"}}}}' \
    "$id" "$n" "$((20000 + n))" "$ip" "${id:0:12}" "${id:0:12}"
}

run() { # run BACKEND VERB NETNS DOC
  local flags=(--config /run/containers/networks --rootless=false --aardvark-binary=/usr/lib/podman/aardvark-dns "$2" "$3")
  case "$1" in
    podnet) "$podnet_dir/netavark" "${flags[@]}" <<<"$4" >/run/bench/out || { cat /run/bench/out >&2; return 1; } ;;
    podnet-exec) PODNET_EXEC_PLUGINS=1 "$podnet_dir/netavark" "${flags[@]}" <<<"$4" >/run/bench/out || { cat /run/bench/out >&2; return 1; } ;;
    netavark) chroot "$r" /usr/lib/podman/netavark "${flags[@]}" <<<"$4" >/run/bench/out || { cat /run/bench/out >&2; return 1; } ;;
  esac
}

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-11s %7s %12s %12s %12s %12s\n' backend others "first setup" "setup (med)" "teardown" "first td"
for n in "${others[@]}"; do
  for backend in netavark podnet podnet-exec; do
    # The network's other containers (setup not timed).
    for i in $(seq 1 "$n"); do
      ip netns add "o$i"
      run "$backend" setup "/run/netns/o$i" "$(doc "$i")"
    done
    ip netns add bench
    d="$(doc 9999)"
    : >/run/bench/setup; : >/run/bench/teardown
    for k in $(seq 1 "$iterations"); do
      sleep "${PODNET_BENCH_GAP:-0}"
      t0=$(now); run "$backend" setup /run/netns/bench "$d"; t1=$(now)
      run "$backend" teardown /run/netns/bench "$d"; t2=$(now)
      echo $(((t1 - t0) / 1000)) >>/run/bench/setup
      echo $(((t2 - t1) / 1000)) >>/run/bench/teardown
    done
    first_setup=$(head -1 /run/bench/setup) first_td=$(head -1 /run/bench/teardown)
    printf '%-11s %7d %10.1fms %10.1fms %10.1fms %10.1fms\n' "$backend" "$n" \
      "$(echo "$first_setup/1000" | bc -l)" "$(median </run/bench/setup | awk '{print $1/1000}')" \
      "$(median </run/bench/teardown | awk '{print $1/1000}')" "$(echo "$first_td/1000" | bc -l)"
    for i in $(seq 1 "$n"); do
      run "$backend" teardown "/run/netns/o$i" "$(doc "$i")"
      ip netns del "o$i"
    done
    ip netns del bench
  done
done
