#!/bin/bash
# DNS benchmark: podnet's responder (dnsname) against dnsmasq (the reference dnsname
# plugin) and aardvark-dns, side by side, each in its own throwaway network + mount
# namespace. Usage: scripts/bench-dns.sh RELEASE_DIR [SECONDS] [SIZES...]
# (run by `make bench-dns`; needs root, dnsperf, dnsmasq-base,
# golang-github-containernetworking-plugin-dnsname and aardvark-dns).
set -euo pipefail
SELF=$(realpath "$0")
REF=/usr/lib/cni
AARDVARK=/usr/lib/podman/aardvark-dns
WORK=/tmp/podnet-bench-dns

# ---- inside a sandbox: one system, one size --------------------------------------
inside() {
  local sys=$1 n=$2
  mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /var/lib; ip link set lo up
  mkdir -p $WORK/net.d /run/netns
  # An upstream resolver in its own namespace, as the host's only nameserver.
  ip netns add up; ip link add vup type veth peer name eth0 netns up
  ip addr add 192.0.2.254/24 dev vup; ip link set vup up
  ip -n up addr add 192.0.2.1/24 dev eth0; ip -n up link set eth0 up; ip -n up link set lo up
  ip netns exec up dnsmasq --no-resolv --no-hosts --address=/example.test/192.0.2.77 \
     --listen-address=192.0.2.1 --bind-interfaces --cache-size=0 --pid-file=/run/up.pid
  echo "nameserver 192.0.2.1" > $WORK/resolv.conf
  mount --bind $WORK/resolv.conf /etc/resolv.conf
  local gw=10.89.0.1 dir plugins pid
  case $sys in
    podnet) dir=$REL; plugins='{"type":"dnsname","domainName":"dns.podman"}' ;;
    dnsmasq) dir=$REF; plugins='{"type":"dnsname","domainName":"dns.podman"}' ;;
    aardvark) dir=$REF; plugins='' ;;
  esac
  cat > $WORK/net.d/web.conflist <<J
{"cniVersion":"0.4.0","name":"web","plugins":[{"type":"bridge","bridge":"pnb0","isGateway":true,"ipMasq":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.0.0/16","gateway":"10.89.0.1"}]],"routes":[{"dst":"0.0.0.0/0"}]}}${plugins:+,$plugins}]}
J
  add() { ip netns add "$1"; NETCONFPATH=$WORK/net.d CNI_PATH=$dir CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=$1" "$REL/netctl" add web "$1" >/dev/null; }
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
import sys
for i in range($n): print('10.89.%d.%d svc%d svc%d.dns.podman' % (1 + i // 250, 1 + i % 250, i, i))" >> $h
      pid=$(cat /run/containers/cni/dnsname/web/pidfile); kill -HUP "$pid"; sleep 0.5 ;;
    aardvark)
      mkdir -p /run/aardvark
      { echo "$gw"; python3 -c "
for i in range($n): print('bench%08d 10.89.%d.%d  svc%d' % (i, 1 + i // 250, 1 + i % 250, i))"; } > /run/aardvark/web
      $AARDVARK --config /run/aardvark -p 53 run >/dev/null 2>&1 &
      sleep 1; pid=$(pgrep -f "aardvark-dns --config /run/aardvark" | head -1) ;;
  esac
  local rss; rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  python3 -c "
import random
for i in range(50000): print('svc%d.dns.podman A' % random.randrange($n))" > $WORK/local.txt
  python3 -c "
for i in range(50000): print('q%d.example.test A' % i)" > $WORK/fwd.txt
  once() { ip netns exec client dnsperf -s $gw -d "$1" -l "$SECS" -c 4 -Q 500000 2>&1 |
           awk '/Queries per second/{printf "%d", $4} /Queries lost/{lost=$3} END{printf " lost=%s", lost}'; }
  # The median of three runs: on a 2-vCPU VM one run varies by ±15 %.
  perf() { { once "$1"; echo; once "$1"; echo; once "$1"; echo; } | sort -n | sed -n 2p; }
  local lq fq first=0
  lq=$(perf $WORK/local.txt); fq=$(perf $WORK/fwd.txt)
  # The first query right after ADD (30 containers), where the system has an ADD.
  if [ "$sys" != aardvark ]; then
    for i in $(seq 1 30); do
      add "f$i"
      echo "f$i.dns.podman A" > $WORK/one.txt
      ip netns exec client dnsperf -s $gw -d $WORK/one.txt -n 1 -t 2 2>&1 | grep -q "NOERROR 1 " && first=$((first+1))
    done
  else first=-; fi
  echo "$sys $n local=$lq forwarded=$fq rss_kib=$rss first_after_add=$first/30"
  pkill -f "aardvark-dns --config /run/aardvark" || true
  [ -f /run/podnet/dns/responder.pid ] && kill "$(cat /run/podnet/dns/responder.pid)" || true
  [ -f /run/containers/cni/dnsname/web/pidfile ] && kill "$(cat /run/containers/cni/dnsname/web/pidfile)" || true
  kill "$(cat /run/up.pid)" || true
}

if [ "${1:-}" = --inside ]; then shift; REL=$1; SECS=$2; inside "$3" "$4"; exit; fi
REL=$(realpath "$1"); SECS=${2:-5}; shift 2 || true
SIZES=${*:-100 1000 50000}

for n in $SIZES; do
  for sys in podnet dnsmasq aardvark; do
    unshare --net --mount --propagation private -- "$SELF" --inside "$REL" "$SECS" "$sys" "$n"
  done
done
