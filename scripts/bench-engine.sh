#!/usr/bin/env bash
# `make bench-engine`: `run -d` and `rm -f` of a container with a bridge network, DNS
# and a published port, side by side in one run:
#   podnet (engine-glue) on podnet's plugins
#   Podman 4.3 (CNI backend) on podnet's plugins
#   Podman 4.3 (CNI backend) on the reference plugins (/usr/lib/cni, with dnsname)
#   Podman 4.3 on netavark + aardvark-dns
# Run by the Makefile inside a throwaway network + mount namespace. The rounds alternate
# the four so that drift hits them alike; each round publishes a fresh host port.
#
# Usage: scripts/bench-engine.sh RELEASE_DIR [ROUNDS]
set -euo pipefail

BIN=$(realpath "${1:?usage: bench-engine.sh RELEASE_DIR [ROUNDS]}")
ROUNDS=${2:-30}
D=/run/podnet-bench
ROOTFS=$D/rootfs
export PATH="$BIN:$PATH"

mkdir -p "$ROOTFS/bin" "$ROOTFS/etc"
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $("$ROOTFS/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"
done
ip link set lo up

# One Podman configuration per backend: CNI on podnet, CNI on the reference, netavark.
podman_conf() { # NAME BACKEND PLUGIN_DIR
    mkdir -p "$D/$1/net.d"
    cat >"$D/$1/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
pids_limit = 0
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "$2"
cni_plugin_dirs = ["$3"]
network_config_dir = "$D/$1/net.d"
EOF
    cat >"$D/$1/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$D/$1/storage"
runroot = "$D/$1/run"
EOF
}
pm() { # NAME ARGS…
    local name=$1
    shift
    CONTAINERS_CONF="$D/$name/containers.conf" CONTAINERS_STORAGE_CONF="$D/$name/storage.conf" \
        podman "$@" 2>>"$D/podman.log"
}
podman_conf pm-podnet cni "$BIN"
podman_conf pm-ref cni /usr/lib/cni
podman_conf pm-netavark netavark /usr/lib/cni
export PODNET_CNI_CONFIG_DIR=$D/podnet/net.d CNI_PATH=$BIN

podnet network create web --subnet 10.89.0.0/24 -o bridge=bench0 >/dev/null
pm pm-podnet network create web --subnet 10.90.0.0/24 >/dev/null
pm pm-ref network create web --subnet 10.91.0.0/24 >/dev/null
pm pm-netavark network create web --subnet 10.92.0.0/24 >/dev/null
# Podman 4.3 names every first bridge cni-podman1 and has no option to choose: rename.
sed -i 's/"cni-podman1"/"bench1"/' "$D/pm-podnet/net.d/web.conflist"
sed -i 's/"cni-podman1"/"bench2"/' "$D/pm-ref/net.d/web.conflist"

ms() { echo $(($(date +%s%N) / 1000)); }
declare -A RUN RM
time_one() { # KEY RUN-COMMAND… @@ RM-COMMAND…
    local key=$1 t0 t1 t2
    shift
    local run=() rm=()
    while [ "$1" != "@@" ]; do run+=("$1"); shift; done
    shift
    rm=("$@")
    t0=$(ms)
    "${run[@]}" >/dev/null
    t1=$(ms)
    "${rm[@]}" >/dev/null
    t2=$(ms)
    RUN[$key]+="$((t1 - t0)) "
    RM[$key]+="$((t2 - t1)) "
}

for i in $(seq 1 "$ROUNDS"); do
    p=$((20000 + i))
    time_one podnet podnet run -d --name b$i --network web -p $p:80 --rootfs "$ROOTFS" -- sleep 3600 \
        @@ podnet rm -f b$i
    time_one pm-podnet pm pm-podnet run -d --name b$i --network web -p $((p + 1000)):80 --rootfs "$ROOTFS" sleep 3600 \
        @@ pm pm-podnet rm -f -t 0 b$i
    time_one pm-ref pm pm-ref run -d --name b$i --network web -p $((p + 2000)):80 --rootfs "$ROOTFS" sleep 3600 \
        @@ pm pm-ref rm -f -t 0 b$i
    time_one pm-netavark pm pm-netavark run -d --name b$i --network web -p $((p + 3000)):80 --rootfs "$ROOTFS" sleep 3600 \
        @@ pm pm-netavark rm -f -t 0 b$i
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}'; }
printf '\n%d rounds, median ms (ratio to podnet)\n\n' "$ROUNDS"
printf '| engine and network stack | run -d | rm -f |\n|---|---|---|\n'
base_run=$(echo "${RUN[podnet]}" | median)
base_rm=$(echo "${RM[podnet]}" | median)
for k in podnet pm-podnet pm-ref pm-netavark; do
    r=$(echo "${RUN[$k]}" | median)
    d=$(echo "${RM[$k]}" | median)
    case $k in
        podnet) label="podnet (engine-glue) + podnet plugins" ;;
        pm-podnet) label="Podman 4.3 CNI + podnet plugins" ;;
        pm-ref) label="Podman 4.3 CNI + reference plugins" ;;
        pm-netavark) label="Podman 4.3 + netavark/aardvark-dns" ;;
    esac
    printf '| %s | %s (%.2fx) | %s (%.2fx) |\n' "$label" "$r" "$(ratio "$r" "$base_run")" "$d" "$(ratio "$d" "$base_rm")"
done
pm pm-podnet network rm -f web >/dev/null
pm pm-ref network rm -f web >/dev/null
pm pm-netavark network rm -f web >/dev/null
podnet network rm web >/dev/null
