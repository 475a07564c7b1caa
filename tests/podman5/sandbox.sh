#!/usr/bin/env bash
# Inside the new namespaces (run.sh): the "host" network, the overlay root with its own
# /dev, /proc, /run and Podman settings, then pivot_root into it and run the scenario.
set -euo pipefail
backend="$1" mode="$2" podnet_dir="$3" lower="$4" scenario="$5"

w="$(mktemp -d /var/tmp/podman5.XXXXXX)"
mount -t tmpfs tmpfs "$w"
mkdir -p "$w/upper" "$w/work" "$w/root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$w/upper,workdir=$w/work" "$w/root"
r="$w/root"

# The host's network: a veth pair with an address and a default route (pasta needs one;
# this kernel has no dummy driver).
ip link set lo up
ip link add hostlan0 type veth peer name hostlan1
ip addr add 192.168.77.1/24 dev hostlan0
ip link set hostlan0 up
ip route add default via 192.168.77.254 dev hostlan0 onlink

mount -t proc proc "$r/proc"
# The "LAN" on the other end: its own namespace with a DNS server (the machine's dnsmasq)
# at 192.168.77.53 that alone knows only.upstream.test, for `--dns`.
unshare --net sleep infinity &
lan=$!
while [ "$(readlink "$r/proc/$lan/ns/net")" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.05; done
ip link set hostlan1 netns "$lan"
nsenter --net="$r/proc/$lan/ns/net" sh -c 'ip link set lo up && ip addr add 192.168.77.53/24 dev hostlan1 && ip link set hostlan1 up'
nsenter --net="$r/proc/$lan/ns/net" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
  --listen-address=192.168.77.53 --address=/only.upstream.test/192.168.77.99 \
  --user=root --pid-file= 2>/dev/null &
mount --rbind /sys "$r/sys"
mount -t tmpfs -o mode=755 tmpfs "$r/dev"
for d in null zero full random urandom tty; do
  touch "$r/dev/$d" && mount --bind "/dev/$d" "$r/dev/$d"
done
mkdir -p "$r/dev/shm" "$r/dev/pts" "$r/dev/net" "$r/dev/mqueue"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mknod -m 0666 "$r/dev/net/tun" c 10 200
ln -s /proc/self/fd "$r/dev/fd"
for t in run tmp var/tmp; do mount -t tmpfs tmpfs "$r/$t"; done
chmod 1777 "$r/tmp" "$r/var/tmp"
mkdir -p "$r/usr/local/libexec/podnet" "$r/scenario"
mount --bind "$podnet_dir" "$r/usr/local/libexec/podnet"
cp "$scenario" "$r/scenario/scenario.sh"

helpers='"/usr/lib/podman", "/usr/libexec/podman"'
[ "$backend" = podnet ] && helpers="\"/usr/local/libexec/podnet\", $helpers"
mkdir -p "$r/etc/containers"
cat >"$r/etc/containers/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
helper_binaries_dir = [$helpers]
[network]
network_backend = "netavark"
EOF
cat >"$r/etc/containers/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF

# A static busybox image with a page to serve.
mkdir -p "$r/scenario/image/bin" "$r/scenario/image/www" "$r/scenario/image/etc"
cp "$r/bin/busybox" "$r/scenario/image/bin/busybox"
for a in sh httpd wget nslookup ip sleep cat hostname true ls; do ln -s busybox "$r/scenario/image/bin/$a"; done
echo "hello from podman 5" >"$r/scenario/image/www/index.html"

user_uid=4242
if [ "$mode" = rootless ]; then
  chroot "$r" /usr/sbin/useradd -m -u $user_uid -s /bin/sh podnetuser 2>/dev/null ||
    chroot "$r" /usr/sbin/useradd -m -u $user_uid podnetuser
  echo "podnetuser:300000:65536" >"$r/etc/subuid"
  echo "podnetuser:300000:65536" >"$r/etc/subgid"
  mkdir -p "$r/run/user/$user_uid"
  chown $user_uid:$user_uid "$r/run/user/$user_uid"
  chmod 700 "$r/run/user/$user_uid"
  # Rootless Podman reads its own containers.conf from the user's config directory.
  mkdir -p "$r/home/podnetuser/.config/containers"
  cp "$r/etc/containers/containers.conf" "$r/home/podnetuser/.config/containers/"
  printf '[storage]\ndriver = "vfs"\nrunroot = "/run/user/%s/containers"\ngraphroot = "/home/podnetuser/.local/share/containers/storage"\n' \
    $user_uid >"$r/home/podnetuser/.config/containers/storage.conf"
  chown -R $user_uid:$user_uid "$r/home/podnetuser"
  chmod 0755 "$r/scenario"
fi

cd "$r"
mkdir -p oldroot
pivot_root . oldroot
umount -l /oldroot
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PODMAN_IGNORE_CGROUPSV1_WARNING=1 TMPDIR=/var/tmp
if [ "$mode" = rootless ]; then
  exec /usr/sbin/runuser -u podnetuser -- env HOME=/home/podnetuser \
    XDG_RUNTIME_DIR=/run/user/$user_uid XDG_CONFIG_HOME=/home/podnetuser/.config \
    PATH="$PATH" PODMAN_IGNORE_CGROUPSV1_WARNING=1 TMPDIR=/var/tmp \
    /bin/sh /scenario/scenario.sh "$backend" "$mode"
fi
exec /bin/sh /scenario/scenario.sh "$backend" "$mode"
