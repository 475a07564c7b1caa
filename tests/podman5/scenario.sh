#!/bin/sh
# The seed scenario on Podman 5 (inside the Debian 13 root; sandbox.sh). Each check prints
# `ok NAME` or `FAIL NAME: details`; the exit status is the number of failures. The same
# script runs on podnet's backend and on netavark, and the test compares the two.
backend="$1" mode="$2"
fails=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
# check NAME EXPECTED-SUBSTRING COMMAND...
check() {
  name="$1" want="$2"; shift 2
  out="$("$@" 2>&1)"
  case "$out" in *"$want"*) ok "$name" ;; *) fail "$name" "wanted '$want', got: $out" ;; esac
}
# refuse NAME COMMAND...: the command must fail
refuse() {
  name="$1"; shift
  if out="$("$@" 2>&1)"; then fail "$name" "succeeded: $out"; else ok "$name"; fi
}

P="podman --log-level=error"
tar -C /scenario/image -c . | $P import - localhost/busybox:latest >/dev/null 2>&1 || { echo "FAIL import"; exit 1; }
IMG=localhost/busybox:latest

check "version: the backend answers" "1.14" $P info --format '{{.Host.NetworkBackendInfo.Version}}'
$P info --format 'backend-version {{.Host.NetworkBackendInfo.Version}}' 2>&1

check "network create" "blog" $P network create blog --subnet 10.89.0.0/24
check "run --ip with an alias" "" $P run -d --name hugo --network blog --ip 10.89.0.10 \
  --network-alias blog-www $IMG httpd -f -p 80 -h /www
check "the address is the one asked for" "10.89.0.10" $P exec hugo ip -4 addr show eth0
check "a container: sidecar shares the namespace" "" $P run -d --name side --network container:hugo $IMG sleep 600
check "the sidecar sees hugo's address" "10.89.0.10" $P exec side ip -4 addr show eth0
check "the sidecar reaches hugo's server on localhost" "hello from podman 5" $P exec side wget -qO- http://127.0.0.1/

check "pod create publishing 8080:80" "" $P pod create --name front --network blog -p 8080:80
check "a container in the pod" "" $P run -d --pod front --name front-web $IMG httpd -f -p 80 -h /www
check "the pod reaches hugo by name" "hello from podman 5" $P exec front-web wget -qO- http://hugo/
check "the pod reaches hugo by alias" "hello from podman 5" $P exec front-web wget -qO- http://blog-www/
check "name.dns.podman" "10.89.0.10" $P exec front-web nslookup hugo.dns.podman
check "hugo resolves the pod's name" "Address" $P exec hugo nslookup front
for i in 1 2 3 4 5 6 7 8 9 10; do
  out="$(busybox wget -qO- -T 2 http://127.0.0.1:8080/ 2>&1)" && break
  sleep 0.5
done
case "$out" in *"hello from podman 5"*) ok "the host fetches the published port" ;;
  *) fail "the host fetches the published port" "$out" ;; esac

# --dns on a network with names: the container's own upstream answers what is not ours.
check "--dns: the container's own upstream" "192.168.77.99" \
  $P run --rm --network blog --dns 192.168.77.53 $IMG nslookup only.upstream.test
check "--dns: local names still answered" "10.89.0.10" \
  $P run --rm --network blog --dns 192.168.77.53 $IMG nslookup hugo
check "network create -o metric=250" "metered" $P network create metered -o metric=250 --subnet 10.91.0.0/24
check "the default route has the metric" "metric 250" $P run --rm --network metered $IMG ip -4 route show default
check "without the option: netavark's 100" "metric 100" $P run --rm --network blog $IMG ip -4 route show default

if [ "$mode" = rootful ]; then
  # A macvlan network on the host's LAN link: the container is a station of the LAN
  # (the dnsmasq there answers it directly), its default route at netavark 1.14's metric.
  check "network create -d macvlan" "lan" \
    $P network create -d macvlan -o parent=hostlan0 --subnet 192.168.77.0/24 --gateway 192.168.77.254 lan
  check "a macvlan container reaches the LAN" "192.168.77.99" \
    $P run --rm --network lan --ip 192.168.77.20 $IMG nslookup only.upstream.test 192.168.77.53
  check "the macvlan default route at metric 100" "metric 100" $P run --rm --network lan $IMG ip -4 route show default
  check "network rm of the macvlan network" "lan" $P network rm lan
fi

check "a second network" "other" $P network create other --subnet 10.90.0.0/24
refuse "DNS isolation: other does not resolve hugo" $P run --rm --network other $IMG nslookup hugo
check "a container on both networks resolves hugo" "10.89.0.10" \
  $P run --rm --network blog --network other $IMG nslookup hugo
check "--network host sees the host's interfaces" "hostlan0" $P run --rm --network host $IMG ip -o link
out="$($P run --rm --network none $IMG ip -o link 2>&1)"
case "$out" in *eth0*|*hostlan*) fail "--network none has only lo" "$out" ;;
  *lo*) ok "--network none has only lo" ;; *) fail "--network none has only lo" "$out" ;; esac

check "restart" "hugo" $P restart hugo
check "restart keeps the address" "10.89.0.10" $P exec hugo ip -4 addr show eth0
check "restart keeps the name" "10.89.0.10" $P exec front-web nslookup hugo

$P rm -af -t 0 >/dev/null 2>&1
$P pod rm -af -t 0 >/dev/null 2>&1
check "network rm" "blog" $P network rm blog other metered
if [ "$mode" = rootful ]; then
  links="$(ip -o link | grep -v -e ' lo:' -e hostlan || true)"
  [ -z "$links" ] && ok "removal leaves no link" || fail "removal leaves no link" "$links"
  rules="$(nft list ruleset 2>&1 | grep -e "10\.89\." -e "10\.90\." -e "10\.91\." || true)"
  [ -z "$rules" ] && ok "removal leaves no rule" || fail "removal leaves no rule" "$rules"
  netns="$(ls /run/netns 2>/dev/null || true)"
  [ -z "$netns" ] && ok "removal leaves no netns" || fail "removal leaves no netns" "$netns"
fi
# The responder exits with its last network; podnet's nft watcher with the last record
# (it looks every 10 s).
for i in $(seq 1 30); do
  procs="$(ps -eo pid,ppid,stat,args | grep -e '[d]nsname' -e '[a]ardvark' | awk '$3 !~ /^Z/' || true)"
  [ -z "$procs" ] && break
  sleep 0.5
done
[ -z "$procs" ] && ok "removal leaves no responder" || fail "removal leaves no responder" "$procs"
echo "failures $fails"
exit $fails
