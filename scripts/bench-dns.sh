#!/bin/bash
# DNS benchmark: podnet's responder (dnsname) against dnsmasq (the reference dnsname
# plugin), aardvark-dns 1.4 (Debian 12's) and aardvark-dns 1.14 (Debian 13's, Podman 5's:
# run from the cached Debian 13 root with that root's loader and libraries, when it is
# there), side by side. Usage:
#   scripts/bench-dns.sh RELEASE_DIR [SECONDS] [SIZES...]     (DNS_ROUNDS=5 by default)
# (run by `make bench-dns`; needs root, dnsperf, dnsmasq-base,
# golang-github-containernetworking-plugin-dnsname and aardvark-dns).
#
# For each size, the three systems are set up at once, each in its own throwaway network
# + mount namespace (a sandbox that stays up while the size is measured). The timed
# dnsperf runs then take turns: round 1 podnet, dnsmasq, aardvark; round 2 dnsmasq,
# aardvark, podnet; and so on. Each figure is the median of the rounds, so a slow minute
# of this VM falls on every system alike instead of on whichever ran then.
set -euo pipefail
SELF=$(realpath "$0")
REF=/usr/lib/cni
AARDVARK=/usr/lib/podman/aardvark-dns
TRIXIE=${PODNET_TRIXIE_ROOT:-/var/tmp/podnet-trixie}
# aardvark-dns 1.14, run with the Debian 13 root's own loader and libraries.
AARDVARK14=("$TRIXIE/lib64/ld-linux-x86-64.so.2" --library-path "$TRIXIE/lib/x86_64-linux-gnu:$TRIXIE/usr/lib/x86_64-linux-gnu" "$TRIXIE/usr/lib/podman/aardvark-dns")
BASE=/tmp/podnet-bench-dns
GW=10.89.0.1

# ---- inside a sandbox: set one system up with n names ---------------------------------
setup() {
  local sys=$1 n=$2 work=$BASE/$1
  mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /var/lib; ip link set lo up
  mkdir -p "$work/net.d" /run/netns
  # An upstream resolver in its own namespace, as the host's only nameserver.
  ip netns add up; ip link add vup type veth peer name eth0 netns up
  ip addr add 192.0.2.254/24 dev vup; ip link set vup up
  ip -n up addr add 192.0.2.1/24 dev eth0; ip -n up link set eth0 up; ip -n up link set lo up
  ip netns exec up dnsmasq --no-resolv --no-hosts --address=/example.test/192.0.2.77 \
     --listen-address=192.0.2.1 --bind-interfaces --cache-size=0 --pid-file=/run/up.pid
  echo "nameserver 192.0.2.1" > "$work/resolv.conf"
  mount --bind "$work/resolv.conf" /etc/resolv.conf
  local dir plugins pid
  case $sys in
    podnet) dir=$REL; plugins='{"type":"dnsname","domainName":"dns.podman"}' ;;
    dnsmasq) dir=$REF; plugins='{"type":"dnsname","domainName":"dns.podman"}' ;;
    aardvark|aardvark14) dir=$REF; plugins='' ;;
  esac
  cat > "$work/net.d/web.conflist" <<J
{"cniVersion":"0.4.0","name":"web","plugins":[{"type":"bridge","bridge":"pnb0","isGateway":true,"ipMasq":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.0.0/16","gateway":"$GW"}]],"routes":[{"dst":"0.0.0.0/0"}]}}${plugins:+,$plugins}]}
J
  add() { ip netns add "$1"; NETCONFPATH=$work/net.d CNI_PATH=$dir CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=$1" "$REL/netctl" add web "$1" >/dev/null; }
  add client
  # n names besides the client (written as each system stores them, then loaded).
  case $sys in
    podnet)
      python3 - "$n" <<'P'
import json, sys, os
n = int(sys.argv[1]); d = '/run/podnet/dns/nets/web'
for i in range(n):
    a = {"container_id": "bench%08d" % i, "ifname": "eth0", "names": ["svc%d" % i],
         "ips": ["10.89.%d.%d" % (1 + i // 250, 1 + i % 250)], "seq": i}
    with open(os.path.join(d, "bench%08d.eth0" % i), 'w') as f: json.dump(a, f)
P
      kill "$(cat /run/podnet/dns/responder.pid)"; sleep 0.3
      add client2; pid=$(cat /run/podnet/dns/responder.pid) ;;
    dnsmasq)
      local h=/run/containers/cni/dnsname/web/addnhosts
      python3 -c "
for i in range($n): print('10.89.%d.%d svc%d svc%d.dns.podman' % (1 + i // 250, 1 + i % 250, i, i))" >> $h
      pid=$(cat /run/containers/cni/dnsname/web/pidfile); kill -HUP "$pid"; sleep 0.5 ;;
    aardvark|aardvark14)
      mkdir -p /run/aardvark
      { echo "$GW"; python3 -c "
for i in range($n): print('bench%08d 10.89.%d.%d  svc%d' % (i, 1 + i // 250, 1 + i % 250, i))"; } > /run/aardvark/web
      if [ "$sys" = aardvark ]; then
        $AARDVARK --config /run/aardvark -p 53 run >/dev/null 2>&1 &
      else
        "${AARDVARK14[@]}" --config /run/aardvark -p 53 run >/dev/null 2>&1 &
      fi
      # It daemonizes: the one of this sandbox (each sandbox has its mount namespace).
      sleep 1; pid=""
      for p in $(pgrep -f "aardvark-dns --config /run/aardvark"); do
        [ "$(readlink /proc/$p/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ] && pid=$p || true
      done ;;
  esac
  local rss first=0
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  python3 -c "
import random
for i in range(50000): print('svc%d.dns.podman A' % random.randrange($n))" > "$work/local.txt"
  python3 -c "
for i in range(50000): print('q%d.example.test A' % i)" > "$work/fwd.txt"
  # The first query right after ADD (30 containers), where the system has an ADD.
  if [ "${sys#aardvark}" = "$sys" ]; then
    for i in $(seq 1 30); do
      add "f$i"
      echo "f$i.dns.podman A" > "$work/one.txt"
      ip netns exec client dnsperf -s $GW -d "$work/one.txt" -n 1 -t 2 2>&1 | grep -q "NOERROR 1 " && first=$((first+1))
    done
    first=$first/30
  else first=-; fi
  echo "pid=$pid rss_kib=$rss first_after_add=$first" > "$work/info"
}

# ---- inside a sandbox: stop what setup started ------------------------------------------
teardown() {
  local p
  for p in $(pgrep -f "aardvark-dns --config /run/aardvark"); do
    [ "$(readlink /proc/$p/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ] && kill "$p" || true
  done
  local f
  for f in /run/podnet/dns/responder.pid /run/containers/cni/dnsname/web/pidfile /run/up.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
}

case "${1:-}" in
  --inside) REL=$2; setup "$3" "$4"; touch "$BASE/$3/ready"; exec sleep infinity ;;
  --teardown) teardown; exit ;;
esac

REL=$(realpath "$1"); SECS=${2:-5}; shift 2 || true
SIZES=${*:-100 1000 50000}
ROUNDS=${DNS_ROUNDS:-5}
SYSTEMS=(podnet dnsmasq aardvark)
if [ -x "$TRIXIE/usr/lib/podman/aardvark-dns" ]; then SYSTEMS+=(aardvark14); fi
declare -A SANDBOX

stop_all() {
  local s
  for s in "${!SANDBOX[@]}"; do
    nsenter -t "${SANDBOX[$s]}" -n -m -- "$SELF" --teardown || true
    kill "${SANDBOX[$s]}" 2>/dev/null || true
  done
  SANDBOX=()
}
trap stop_all EXIT

# One timed dnsperf run against system $1 with query file $2: "qps cpu_us_per_query",
# the CPU being the server's own (user + system, from /proc) over the run.
run() {
  local sys=$1 file=$2 pid t0 t1 out
  pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' "$BASE/$sys/info")
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(nsenter -t "${SANDBOX[$sys]}" -n -m -- ip netns exec client \
        dnsperf -s $GW -d "$BASE/$sys/$file" -l "$SECS" -c 4 -Q 500000 2>&1)
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  awk -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
    /Queries completed/ {done=$3} /Queries lost/ {lost=$3} /Queries per second/ {qps=$4}
    END {printf "%d %.2f %d\n", qps, done ? ticks / hz * 1e6 / done : 0, lost}' <<<"$out"
}

median() { sort -n | awk '{v[NR]=$0} END{print v[int((NR+1)/2)]}'; }

for n in $SIZES; do
  rm -rf "$BASE"; mkdir -p "$BASE"
  for sys in "${SYSTEMS[@]}"; do
    mkdir -p "$BASE/$sys"
    unshare --net --mount --propagation private -- "$SELF" --inside "$REL" "$sys" "$n" \
      >"$BASE/$sys/log" 2>&1 &
    SANDBOX[$sys]=$!
    until [ -f "$BASE/$sys/ready" ]; do
      kill -0 "${SANDBOX[$sys]}" 2>/dev/null || { cat "$BASE/$sys/log"; exit 1; }
      sleep 0.2
    done
  done
  for kind in local fwd; do
    for r in $(seq 0 $((ROUNDS - 1))); do
      for i in "${!SYSTEMS[@]}"; do
        sys=${SYSTEMS[$(((i + r) % ${#SYSTEMS[@]}))]}
        run "$sys" "$kind.txt" >> "$BASE/$sys/$kind.runs"
      done
    done
  done
  for sys in "${SYSTEMS[@]}"; do
    l=$(awk '{print $1}' "$BASE/$sys/local.runs" | median)
    lc=$(awk '{print $2}' "$BASE/$sys/local.runs" | median)
    f=$(awk '{print $1}' "$BASE/$sys/fwd.runs" | median)
    fc=$(awk '{print $2}' "$BASE/$sys/fwd.runs" | median)
    lost=$(awk '{s+=$3} END{print s}' "$BASE/$sys/local.runs" "$BASE/$sys/fwd.runs")
    echo "$sys $n local=$l cpu_us=$lc forwarded=$f cpu_us=$fc lost=$lost $(cut -d' ' -f2- "$BASE/$sys/info")" \
         "local_runs=$(awk '{printf "%s%d", (NR > 1 ? "," : ""), $1}' "$BASE/$sys/local.runs")"
  done
  stop_all
done
