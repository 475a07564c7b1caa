#!/usr/bin/env bash
# Podman 5 (Debian 13) on a network backend, the seed scenario, in a throwaway network +
# mount + PID namespace. Nothing of the machine's own Podman, /etc or network is touched.
#
#   tests/podman5/run.sh BACKEND MODE PODNET_DIR
#     BACKEND  podnet (PODNET_DIR's netavark first in helper_binaries_dir) or netavark
#              (Podman's own 1.14, the reference)
#     MODE     rootful or rootless (an unprivileged user made only inside the root)
#
# The Debian 13 root comes from scripts/trixie-root.sh (cached under /var/tmp); it is the
# lower layer of an overlay whose upper layer is a tmpfs, so no run changes it.
set -euo pipefail

backend="$1" mode="$2" podnet_dir="$(realpath "$3")"
here="$(cd "$(dirname "$0")" && pwd)"
root="$("$here/../../scripts/trixie-root.sh")"

exec unshare --net --mount --pid --fork --propagation private -- \
  bash "$here/sandbox.sh" "$backend" "$mode" "$podnet_dir" "$root" "$here/scenario.sh"
