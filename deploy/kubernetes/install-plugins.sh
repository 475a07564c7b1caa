#!/bin/sh
# Copies podnet's CNI plugins into the node's plugin directory, the way cluster
# installers do: each binary is written beside its final name and renamed into place,
# so the kubelet's runtime never executes a half-written file. Other plugins in the
# directory (flannel, calico, the reference's) are left alone; with PODNET_ONLY a plugin
# type podnet does not ship is left alone too, so nothing is ever deleted.
#
#   PODNET_SRC   where the image holds the plugins       (default /opt/podnet/bin)
#   PODNET_DEST  the node's CNI plugin directory, mounted (default /host/opt/cni/bin)
#   PODNET_SKIP  space-separated plugin types to leave as they are (e.g. "bridge")
set -eu
src=${PODNET_SRC:-/opt/podnet/bin}
dest=${PODNET_DEST:-/host/opt/cni/bin}
skip=" ${PODNET_SKIP:-} "
[ -d "$dest" ] || { echo "install-plugins: $dest is not a directory (mount the node's /opt/cni/bin there)" >&2; exit 1; }
n=0
for p in "$src"/*; do
  name=$(basename "$p")
  [ -f "$p" ] && [ -x "$p" ] || continue
  case "$skip" in *" $name "*) echo "install-plugins: skipping $name"; continue ;; esac
  tmp="$dest/.$name.podnet-new"
  cp "$p" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$dest/$name"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "install-plugins: no plugin found in $src" >&2; exit 1; }
"$dest/loopback" 2>&1 </dev/null | head -n 1 || true
echo "install-plugins: $n plugins in $dest"
