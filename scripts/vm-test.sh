#!/bin/bash
# Runs the tests that need kernel drivers this machine kind lacks (ipvlan, 8021q, vrf:
# the integration tests marked `#[ignore = "… runs under qemu …"]`) inside a qemu VM
# with Debian's own kernel, under software emulation, against podnet's plugins and the
# reference's.
#
#   scripts/vm-test.sh TEST_BINARY PODNET_PLUGIN_DIR [REFERENCE_PLUGIN_DIR]
#   VM_BENCH=BENCH_BINARY VM_BENCH_ITERATIONS=N scripts/vm-test.sh …   also runs the
#       macvlan/ipvlan rows of `bench` (tests/examples/bench.rs) in the VM after the tests
#
# The VM boots Debian 12's linux-image-amd64 (downloaded once with apt-get and cached
# under /var/tmp/podnet-vm) with an initramfs made here for each run: busybox, iproute2,
# util-linux's unshare and nsenter, ping, the drivers' modules, the test binary and both
# plugin directories (stripped). Its /init loads the modules and runs the ignored tests
# once per plugin directory; this script reads the verdicts from the serial console.
# Under CI=true a VM that cannot start, or a verdict that does not come, is a failure.
set -euo pipefail

TEST_BIN=${1:?usage: vm-test.sh TEST_BINARY PODNET_PLUGIN_DIR [REFERENCE_PLUGIN_DIR]}
PODNET_DIR=${2:?usage: vm-test.sh TEST_BINARY PODNET_PLUGIN_DIR [REFERENCE_PLUGIN_DIR]}
REF_DIR=${3:-/usr/lib/cni}
CACHE=/var/tmp/podnet-vm
FILTERS="conformance::ipvlan conformance::vlan conformance::vrf"
# podnet's own, beside its plugins (they find their binaries next to the test binary's
# directory): Podman 5's ipvlan driver on podnet's netavark.
PODNET_FILTERS="netavark::ipvlan netavark::vlan netavark::vrf"
MODULES="veth bridge macvlan ipvlan 8021q vrf"
PLUGINS="loopback host-local static ipvlan vlan vrf macvlan bridge netavark"
TIMEOUT=${VM_TIMEOUT:-1200}

fail() {
    echo "vm-test: $*" >&2
    exit 1
}

command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is missing (make deps installs qemu-system-x86)"
[ -x /bin/busybox ] || fail "/bin/busybox is missing (Debian's busybox-static)"

# Debian's kernel: the version linux-image-amd64 points at, extracted once.
mkdir -p "$CACHE"
ver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\([0-9].*\)/\1/p' | head -1)
if [ -z "$ver" ]; then
    apt-get update -qq
    ver=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\([0-9].*\)/\1/p' | head -1)
fi
[ -n "$ver" ] || fail "cannot tell which kernel linux-image-amd64 is"
KDIR=$CACHE/kernel-$ver
if [ ! -f "$KDIR/vmlinuz" ]; then
    echo "vm-test: fetching Debian's kernel $ver"
    tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q "linux-image-$ver" >/dev/null 2>&1) || fail "apt-get download linux-image-$ver failed"
    dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
    # The package ships no modules.dep (its postinst runs depmod): make it here.
    busybox depmod -b "$tmp/x" "$ver"
    mkdir -p "$KDIR.new"
    cp "$tmp/x/boot/vmlinuz-$ver" "$KDIR.new/vmlinuz"
    cp -a "$tmp/x/lib/modules/$ver" "$KDIR.new/modules"
    rm -rf "$tmp" "$KDIR"
    mv "$KDIR.new" "$KDIR"
fi

# The initramfs.
STAGE=$(mktemp -d "$CACHE/stage.XXXXXX")
# Each run its own initramfs and console log: runs at the same time do not clash.
INITRD=$STAGE.cpio
LOG=$STAGE.console.log
trap 'rm -rf "$STAGE" "$INITRD"' EXIT
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,var/lib,etc,modules,test,podnet/deps,refcni}
cp /bin/busybox "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/true" # the bench's spawn floor
copy_with_libs() { # SRC DEST-IN-STAGE
    install -D -m 755 "$1" "$STAGE$2"
    # A static binary (the release build) has no libraries: ldd fails, nothing to copy.
    { ldd "$1" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
        [ -e "$STAGE$lib" ] || install -D -m 755 "$lib" "$STAGE$lib"
    done
}
# The tests' `sh -c` is dash: busybox's sh would run its own applets (a small `ip`)
# before anything on PATH.
copy_with_libs "$(readlink -f /bin/sh)" /bin/sh
for b in ip bridge nsenter unshare ping; do
    p=$(command -v "$b") || fail "$b is missing"
    copy_with_libs "$p" "/usr/bin/$b"
done
# In /podnet/deps: the tests look for podnet's binaries in the directory above theirs.
copy_with_libs "$TEST_BIN" /podnet/deps/integration
strip --strip-debug "$STAGE/podnet/deps/integration"
BENCH_RUN=""
if [ -n "${VM_BENCH:-}" ]; then
    copy_with_libs "$VM_BENCH" /test/bench
    strip --strip-debug "$STAGE/test/bench"
    BENCH_RUN="/test/bench /podnet /refcni ${VM_BENCH_ITERATIONS:-100} parent-links 2>&1; echo \"PODNET-VM bench rc=\$?\""
fi
for p in $PLUGINS; do
    [ -x "$PODNET_DIR/$p" ] || fail "$PODNET_DIR/$p is missing"
    copy_with_libs "$PODNET_DIR/$p" "/podnet/$p"
    strip --strip-debug "$STAGE/podnet/$p"
    if [ -x "$REF_DIR/$p" ]; then cp "$REF_DIR/$p" "$STAGE/refcni/$p"; fi
done
# The modules and their dependencies, in load order.
: > "$STAGE/modules.order"
add_module() { # path relative to the modules dir
    local rel=$1 dep
    grep -qx "$rel" "$STAGE/modules.order" && return 0
    for dep in $(sed -n "s#^$rel: *##p" "$KDIR/modules/modules.dep" | tr ' ' '\n' | tac); do
        add_module "$dep"
    done
    install -D -m 644 "$KDIR/modules/$rel" "$STAGE/modules/$rel"
    echo "$rel" >> "$STAGE/modules.order"
}
for m in $MODULES; do
    rel=$(grep -o "^[^:]*/$m\.ko[^:]*" "$KDIR/modules/modules.dep" | head -1)
    [ -n "$rel" ] || fail "no module $m in kernel $ver"
    add_module "$rel"
done
cat > "$STAGE/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t tmpfs lib /var/lib
mkdir -p /run/netns
for m in \$(cat /modules.order); do insmod /modules/\$m || echo "PODNET-VM insmod \$m failed"; done
ip link set lo up
export PATH=/usr/bin:/bin:/sbin HOME=/tmp CI=true
echo "PODNET-VM kernel \$(uname -r)"
for dir in /podnet /refcni; do
    extra=""
    [ \$dir = /podnet ] && extra="$PODNET_FILTERS"
    PODNET_PLUGIN_DIR=\$dir /podnet/deps/integration --ignored --test-threads=1 $FILTERS \$extra 2>&1
    echo "PODNET-VM verdict dir=\$dir rc=\$?"
done
$BENCH_RUN
poweroff -f
EOF
chmod 755 "$STAGE/init"
(cd "$STAGE" && find . | busybox cpio -o -H newc 2>/dev/null) > "$INITRD"
echo "vm-test: initramfs $(du -h "$INITRD" | cut -f1), kernel $ver; booting under qemu (software emulation)"

start=$(date +%s)
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -m 2048 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 rdinit=/init quiet" > "$LOG" 2>&1 || true
echo "vm-test: the VM ran $(( $(date +%s) - start )) s"
tr -d '\r' < "$LOG" | grep -E "^test |test result|PODNET-VM|panicked|^\|" || true
grep -q "PODNET-VM kernel" "$LOG" || fail "the VM did not start the tests (see $LOG)"
grep -q "PODNET-VM insmod" "$LOG" && fail "a module did not load (see $LOG)"
for dir in /podnet /refcni; do
    rc=$(tr -d '\r' < "$LOG" | sed -n "s#^PODNET-VM verdict dir=$dir rc=##p")
    [ -n "$rc" ] || fail "no verdict for $dir (see $LOG)"
    [ "$rc" = 0 ] || fail "the tests failed against $dir (see $LOG)"
done
passed=$(tr -d '\r' < "$LOG" | grep -cE "^test (conformance|netavark)::.* \.\.\. ok$" || true)
[ "$passed" -ge 2 ] || fail "the VM ran no test (see $LOG)"
rm -f "$LOG" # kept only when a run failed
echo "vm-test: ipvlan, vlan and vrf pass against podnet's and the reference's plugins, and Podman 5's ipvlan driver and bridge vlan and vrf options on podnet's backend ($passed test runs)"
