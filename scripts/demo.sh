#!/usr/bin/env bash
# `make demo`: the seed scenario end to end with the release binaries, run by the Makefile
# inside a throwaway network + mount namespace (tmpfs /run and /var/lib) standing in for
# the host. Nothing on the machine changes: conflists go to /run/podnet-demo/net.d.
#
#   a network; `hugo` (httpd) with a fixed --ip; a sidecar in hugo's namespace reaching
#   it on 127.0.0.1; a front pod whose proxy finds hugo by name and publishes port 8080 on
#   the host's address; a restart that keeps address and name; two containers wired by
#   `netctl link`; host and none modes; a systemd unit; then everything removed and shown
#   gone.
#
# Usage: scripts/demo.sh RELEASE_DIR
set -euo pipefail

BIN=$(realpath "${1:?usage: demo.sh RELEASE_DIR}")
DEMO=/run/podnet-demo
ROOTFS=$DEMO/rootfs
export PATH="$BIN:$PATH" CNI_PATH="$BIN" PODNET_CNI_CONFIG_DIR="$DEMO/net.d"

n=0
step() { n=$((n + 1)); printf '\n\033[1m== %d. %s\033[0m\n' "$n" "$*"; }
say() { # prints the command as it would be typed, then runs it
    local out='$' a
    for a in "$@"; do
        case $a in *[\ \|\;\&\'\"\$]*) out+=" '$a'" ;; *) out+=" $a" ;; esac
    done
    printf '%s\n' "$out"
    "$@"
}
check() { # check WHAT COMMAND…: runs the command, fails the demo unless it succeeds
    local what=$1
    shift
    if "$@"; then printf '   ok: %s\n' "$what"; else printf '   FAILED: %s\n' "$what" >&2; exit 1; fi
}

step "a busybox root filesystem (Debian's busybox-static) and the host's uplink"
mkdir -p "$ROOTFS/bin" "$ROOTFS/www/hugo" "$ROOTFS/www/front/cgi-bin" "$ROOTFS/etc"
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $("$ROOTFS/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"
done
echo '<h1>hugo: a blog</h1>' >"$ROOTFS/www/hugo/index.html"
# The front proxy: a CGI script that fetches the blog by name on every request.
printf '#!/bin/sh\necho "Content-Type: text/html"\necho\nwget -qO- http://hugo/\n' \
    >"$ROOTFS/www/front/cgi-bin/blog"
chmod +x "$ROOTFS/www/front/cgi-bin/blog"
echo "rootfs: $ROOTFS ($(ls "$ROOTFS/bin" | wc -l) applets)"
# An "outside" namespace on a veth stands in for the LAN: the host is 192.0.2.1.
ip link set lo up
say netctl ns add outside
ip link add uplink type veth peer name eth0 netns outside
ip addr add 192.0.2.1/24 dev uplink && ip link set uplink up
ip -n outside addr add 192.0.2.2/24 dev eth0 && ip -n outside link set eth0 up
ip -n outside link set lo up

step "a network: Podman 4's chain (bridge+host-local, portmap, firewall, tuning, dnsname)"
say podnet network create web --subnet 10.89.0.0/24
say podnet network ls
cat "$PODNET_CNI_CONFIG_DIR/web.conflist"

step "hugo, the blog, with a fixed address"
say podnet run -d --name hugo --network web --ip 10.89.0.10 --network-alias blog \
    --rootfs "$ROOTFS" -- httpd -f -p 80 -h /www/hugo
say podnet ps
check "hugo has 10.89.0.10" sh -c "podnet inspect hugo | grep -q '\"10.89.0.10/24\"'"

step "a sidecar in hugo's network namespace reaches it on 127.0.0.1"
say podnet run --name sidecar --network container:hugo --rootfs "$ROOTFS" -- \
    wget -qO- http://127.0.0.1/
check "the sidecar got the page" sh -c "podnet logs sidecar | grep -q 'hugo: a blog'"

step "a front pod: resolves hugo by name, serves it, publishes 8080 on the host"
say podnet pod create front --network web -p 8080:80
say podnet run -d --pod front --name proxy --rootfs "$ROOTFS" -- httpd -f -p 80 -h /www/front
say podnet exec proxy cat /etc/resolv.conf
say podnet exec proxy nslookup hugo
say podnet exec proxy nslookup blog
say podnet exec proxy wget -qO- http://hugo/
say podnet pod ls
echo '$ curl http://192.0.2.1:8080/cgi-bin/blog   # from the host'
check "the host gets the blog through the front pod" \
    sh -c 'curl -sS --max-time 5 http://192.0.2.1:8080/cgi-bin/blog | tee /dev/stderr | grep -q "hugo: a blog"'
echo '$ netctl ns exec outside curl http://192.0.2.1:8080/cgi-bin/blog   # from the LAN'
check "the LAN gets it too" \
    sh -c 'netctl ns exec outside curl -sS --max-time 5 http://192.0.2.1:8080/cgi-bin/blog | grep -q "hugo: a blog"'

step "restart keeps hugo's address and name"
say podnet restart -t 1 hugo
check "still 10.89.0.10" sh -c "podnet inspect hugo | grep -q '\"10.89.0.10/24\"'"
check "the name still resolves and serves" \
    sh -c 'podnet exec proxy wget -qO- http://hugo/ | grep -q "hugo: a blog"'

step "two containers wired directly by a veth pair, in one command"
say podnet run -d --name left --network none --rootfs "$ROOTFS" -- sleep 3600
say podnet run -d --name right --network none --rootfs "$ROOTFS" -- sleep 3600
say netctl link left right --ip 169.254.10.1 --peer-ip 169.254.10.2
say netctl links
say podnet exec left ip -o addr show
check "left pings right over the link" podnet exec left ping -c 1 -W 2 169.254.10.2
say netctl unlink left right

step "host and none modes"
say podnet run --name on-host --network host --rootfs "$ROOTFS" -- sh -c 'ip -o link | cut -d: -f2'
check "host mode sees the host's bridge" sh -c 'podnet logs on-host | grep -q cni-podman'
say podnet run --name isolated --network none --rootfs "$ROOTFS" -- ip -o addr
check "none mode has loopback only" sh -c '! podnet logs isolated | grep -v " lo " | grep -q inet'

step "a systemd unit for hugo"
say podnet generate systemd hugo

step "everything removed"
say podnet ps -a
say podnet rm -f sidecar on-host isolated left right proxy
say podnet rm -f hugo
say podnet pod rm front
say podnet network rm web
say podnet ps -a
check "no namespace pin left" sh -c '[ -z "$(ls /run/netns | grep -v outside)" ]'
check "no container link or bridge left" sh -c '! ip -o link | grep -Eq "veth|cni-podman1"'
check "no lease left" sh -c '[ -z "$(ls /var/lib/cni/networks/web 2>/dev/null)" ]'
check "no podnet nftables table left" sh -c '! nft list tables | grep -q podnet'
check "no DNS responder left" sh -c '[ ! -e /run/podnet/dns/responder.pid ]'
check "no record left" sh -c '[ -z "$(find /var/lib/podnet/containers /var/lib/podnet/pods -mindepth 1 2>/dev/null)" ]'
netctl ns rm outside
printf '\ndemo complete: every step above ran against the kernel, nothing is left behind\n'
