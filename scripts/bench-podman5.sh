#!/usr/bin/env bash
# `podman run -d` / `podman rm -f` wall time on Podman 5.4 (the cached Debian 13 root)
# with podnet's backend and with its own netavark 1.14 + aardvark-dns, rootful and
# rootless, one after the other in one run (docs/benchmarks.md).
#
#   scripts/bench-podman5.sh PODNET_DIR [N]
set -euo pipefail
dir="$(realpath "$1")" n="${2:-15}"
here="$(cd "$(dirname "$0")/.." && pwd)/tests/podman5"
root="$("$(dirname "$0")/trixie-root.sh")"
for mode in rootful rootless; do
  for backend in netavark podnet; do
    out="$(BENCH_N="$n" unshare --net --mount --pid --fork --propagation private -- \
      bash "$here/sandbox.sh" "$backend" "$mode" "$dir" "$root" "$here/bench.sh" 2>&1)"
    printf '%s %s: %s\n' "$mode" "$backend" "$(echo "$out" | grep -E '^(first-run|first-rm|run|rm) ' | tr '\n' ' ')"
  done
done
