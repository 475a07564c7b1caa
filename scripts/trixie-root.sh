#!/usr/bin/env bash
# A Debian 13 (trixie) root filesystem with Podman 5, netavark, aardvark-dns and pasta, for
# the Podman 5 tests and benchmarks (tests/podman5/run.sh), and firewalld with its D-Bus
# daemon for the firewalld test (tests/src/firewalld.rs). Built once with debootstrap and
# cached: prints the root's path. Rebuilt when missing or when the package lists change.
#
#   scripts/trixie-root.sh [DIR]     (default /var/tmp/podnet-trixie)
set -euo pipefail

root="${1:-/var/tmp/podnet-trixie}"
packages="podman,netavark,aardvark-dns,passt,runc,conmon,catatonit,uidmap,iproute2,nftables,busybox-static,procps"
# Installed by apt-get inside the new root (without recommends): debootstrap's own
# resolver does not follow firewalld's dependencies.
extra="firewalld dbus-daemon"
stamp="$root/.podnet-root"

fresh() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages;$extra" ]; }
if fresh; then
  echo "$root"
  exit 0
fi
# One build at a time (the tests ask in parallel); a waiter finds the root built.
mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9
if fresh; then
  echo "$root"
  exit 0
fi

# The tests call this from network namespaces of their own, which reach no mirror.
if [ -z "$(ip route show default 2>/dev/null)" ] && [ -z "$(ip -6 route show default 2>/dev/null)" ]; then
  echo "$root is not built and this network namespace has no route to a mirror: build it first (make podman5-root)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The mirror this machine's own Debian packages come from reaches trixie too.
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
[ -n "$mirror" ] || mirror="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

tmp="$root.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
# The mirror sometimes fails a request: three tries, a few seconds apart.
for try in 1 2 3; do
  rm -rf "$tmp"
  debootstrap --variant=minbase --include="$packages" trixie "$tmp" "$mirror" >&2 && break
  [ "$try" = 3 ] && { echo "debootstrap of trixie from $mirror failed 3 times" >&2; exit 1; }
  sleep $((try * 5))
done
for try in 1 2 3; do
  unshare --mount --propagation private sh -c "mount -t proc proc '$tmp/proc' && chroot '$tmp' sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $extra'" >&2 && break
  [ "$try" = 3 ] && { echo "installing $extra into the trixie root failed 3 times" >&2; exit 1; }
  sleep $((try * 5))
done
# Nothing of the host's: an empty machine-id, and Podman's storage and engine settings of
# the tests written by the tests themselves.
echo "$packages;$extra" >"$tmp/.podnet-root"
rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
echo "$root"
