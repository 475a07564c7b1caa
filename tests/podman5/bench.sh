#!/bin/sh
# `podman run -d` and `podman rm -f` wall time on Podman 5 (inside the Debian 13 root;
# sandbox.sh runs it as it runs scenario.sh): the first container on the host (network
# made, nothing else running), then N more beside one other container, each publishing
# a port. Prints `first-run MS`, `first-rm MS`, `run MEDIAN`, `rm MEDIAN` (ms).
backend="$1" mode="$2" n="${BENCH_N:-15}"
P="podman --log-level=error"
tar -C /scenario/image -c . | $P import - localhost/busybox:latest >/dev/null 2>&1 || { echo "import failed"; exit 1; }
IMG=localhost/busybox:latest
$P network create bench --subnet 10.92.0.0/24 >/dev/null || exit 1
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
t=$(date +%s%N); $P run -d --name first --network bench -p 8080:80 $IMG sleep 600 >/dev/null || exit 1
echo "first-run $(ms $t)"
t=$(date +%s%N); $P rm -f -t 0 first >/dev/null || exit 1
echo "first-rm $(ms $t)"
$P run -d --name other --network bench $IMG sleep 600 >/dev/null || exit 1
runs="" rms=""
for i in $(seq 1 "$n"); do
  t=$(date +%s%N); $P run -d --name c$i --network bench -p 8080:80 $IMG sleep 600 >/dev/null || exit 1
  runs="$runs $(ms $t)"
  t=$(date +%s%N); $P rm -f -t 0 c$i >/dev/null || exit 1
  rms="$rms $(ms $t)"
done
echo "run $(printf '%s\n' $runs | median)"
echo "rm $(printf '%s\n' $rms | median)"
