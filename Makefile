# podnet — build, test, demo, install, bench.
#
#   make test    installs missing Debian packages, then fmt, clippy, every test (the
#                privileged ones in throwaway namespaces), and the conformance suite
#                against podnet's debug build, its shipped release build, and the
#                reference plugins in /usr/lib/cni
#   make demo    builds the release binaries and runs the seed scenario with `podnet`
#                (engine-glue) and `netctl` in a throwaway network + mount namespace
#   make install puts the plugins in $(CNI_BIN_DIR), netctl and podnet in $(BIN_DIR), and
#                Podman 5's backend (netavark and its plugins) in $(LIBEXEC_DIR)
#   make fuzz    each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 60) in a
#                namespace of its own; `make test` runs each for FUZZ_BRIEF seconds
#   make bench   podnet against the reference plugins, side by side (docs/benchmarks.md)
#   make bench-dns  the DNS responder against dnsmasq (reference dnsname) and aardvark-dns
#   make bench-cri  containerd's CRI RunPodSandbox/StopPodSandbox/RemovePodSandbox on
#                podnet's plugins against the reference's
#   make bench-vm  macvlan and ipvlan ADD/DEL against the reference in the qemu VM
#   make bench-podman5  podman run -d/rm -f on Podman 5 with podnet's backend against
#                netavark 1.14's
#   make bench-engine  podnet run/rm against Podman 4.3 on podnet's, the reference's and
#                netavark's network stacks

SHELL := /bin/bash
CARGO ?= cargo
CNI_BIN_DIR ?= /opt/cni/bin
BIN_DIR ?= /usr/local/bin
# Podman 5's backend (docs/podman.md): netavark and the plugins it runs, side by side.
LIBEXEC_DIR ?= /usr/local/libexec/podnet
PLUGINS := loopback bridge ptp host-device macvlan ipvlan vlan sbr vrf tap tuning portmap firewall bandwidth dnsname host-local static dhcp
DEB_PACKAGES := iproute2 nftables iptables iputils-ping util-linux containernetworking-plugins libc6-dev \
	runc busybox-static curl procps podman containerd protobuf-compiler debootstrap dnsmasq-base

# Release plugins are linked statically against glibc: a static-pie binary skips the
# dynamic loader and starts ~0.35 ms sooner (docs/benchmarks.md). The explicit
# --target keeps the flag off build scripts and proc-macros.
HOST := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
RELEASE_DIR := target/$(HOST)/release
RELEASE_FLAGS := --release --target $(HOST)
STATIC_RUSTFLAGS := -C target-feature=+crt-static
# A private network and mount namespace with its own /run and /var/lib.
SANDBOX := unshare --net --mount --propagation private -- sh -c 'mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib && exec "$$@"' sandbox

.PHONY: all deps toolchain build release test lint unit vm-test conformance podman5-root bench-podman5 bench-vm fuzz fuzz-brief demo install dist bench bench-dns bench-engine bench-cri clean

all: build

toolchain:
	@command -v $(CARGO) >/dev/null || { echo "podnet needs a Rust toolchain >= 1.87 (rustup) on PATH" >&2; exit 1; }
	@[ -n "$(HOST)" ] || { echo "rustc did not report its host triple" >&2; exit 1; }

deps: toolchain
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: toolchain
	$(CARGO) build --workspace --bins

release: toolchain
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build $(RELEASE_FLAGS) --workspace --bins --examples

# cargo-deny from the crate registry when missing (licenses and bans; advisories need the
# RustSec database from the network, so they are left out: deny.toml).
lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	$(CARGO) deny check licenses bans

# The Debian 13 root of the Podman 5 tests (scripts/trixie-root.sh), built here in the
# machine's own network namespace and cached under /var/tmp: the tests run in network
# namespaces of their own, which reach no mirror.
podman5-root: deps
	scripts/trixie-root.sh >/dev/null

unit: build podman5-root
	$(CARGO) test --workspace

# The tests of ipvlan, vlan and vrf, whose drivers this machine kind's kernel lacks: in a
# qemu VM (software emulation) with Debian's kernel, against the release build and the
# reference plugins (scripts/vm-test.sh; the kernel is cached under /var/tmp/podnet-vm).
VM_PACKAGES := qemu-system-x86
vm-test: deps build release
	@command -v qemu-system-x86_64 >/dev/null || { echo "installing $(VM_PACKAGES)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(VM_PACKAGES) >/dev/null; }
	scripts/vm-test.sh "$$($(CARGO) test -p podnet-tests --test integration --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$$/\1/p' | tail -1)" \
	  $(CURDIR)/$(RELEASE_DIR) /usr/lib/cni

# The key-case runs re-encode every plugin config the suites send with its keys upper-,
# lower- and randomly cased (PODNET_KEY_CASE, tests/src/plugin.rs): Go plugins accept
# them, so podnet's must give the same results and kernel state.
conformance: build release
	PODNET_PLUGIN_DIR=$(CURDIR)/$(RELEASE_DIR) $(CARGO) test -p podnet-tests --test integration -- conformance:: runtime:: containerd::
	PODNET_PLUGIN_DIR=/usr/lib/cni $(CARGO) test -p podnet-tests --test integration -- conformance:: runtime:: containerd::
	for c in upper lower random; do \
	  PODNET_KEY_CASE=$$c PODNET_PLUGIN_DIR=$(CURDIR)/$(RELEASE_DIR) $(CARGO) test -p podnet-tests --test integration -- conformance:: runtime:: chain:: dns:: || exit 1; \
	done
	PODNET_KEY_CASE=random PODNET_PLUGIN_DIR=/usr/lib/cni $(CARGO) test -p podnet-tests --test integration -- conformance:: runtime::

# libFuzzer builds of fuzz/ (cargo-fuzz from the crate registry when missing; no
# sanitizer: the code is safe Rust, so ASan would find nothing the panics do not, and
# stable rustc has no -Zsanitizer; debug assertions on). Each target runs in its own
# network namespace (dns_tcp listens on its loopback), from the committed seeds in
# fuzz/corpus/<target> into a working corpus under target/; a crash stops the run with
# the input in target/fuzz-artifacts/<target>/, to be fixed and then kept in
# fuzzing/regressions/<target>/, which `cargo test` replays with the seeds.
FUZZ_TARGETS := cni_config dns_udp dns_tcp ipam_files records dhcp_reply
FUZZ_SECONDS ?= 60
FUZZ_BRIEF ?= 15
FUZZ_BIN := fuzz/target/$(HOST)/release
FUZZ_SANDBOX := unshare --net --mount --propagation private -- sh -c 'ip link set lo up && mount -t tmpfs tmpfs /run && TMPDIR=/run exec "$$@"' fuzz

fuzz: toolchain
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && $(CARGO) fuzz build --sanitizer none -O --debug-assertions
	# dhcp_reply without debug assertions: dhcproto debug-asserts on malformed options
	# (and overflows on some) where its release build returns an error, and libFuzzer's
	# panic hook aborts before podnet's decoder can catch the unwind; the daemon runs the
	# release behaviour, which is what this target then fuzzes.
	cd fuzz && $(CARGO) fuzz build --sanitizer none -O dhcp_reply
	for t in $(FUZZ_TARGETS); do 	  mkdir -p target/fuzz-corpus/$$t target/fuzz-artifacts/$$t && 	  $(FUZZ_SANDBOX) $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 	    -print_final_stats=1 -artifact_prefix=target/fuzz-artifacts/$$t/ 	    target/fuzz-corpus/$$t fuzz/corpus/$$t 2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==|INFO: Running|.*panicked|.*(crash|timeout|leak)-)' ; 	  [ "$${PIPESTATUS[0]}" = 0 ] || { echo "fuzz target $$t failed: see target/fuzz-artifacts/$$t/" >&2; exit 1; }; 	done

fuzz-brief:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_BRIEF)

test: deps lint unit conformance vm-test fuzz-brief

demo: deps release
	$(SANDBOX) scripts/demo.sh $(RELEASE_DIR)

install: release
	install -d $(DESTDIR)$(CNI_BIN_DIR)
	for p in $(PLUGINS); do install -m 0755 $(RELEASE_DIR)/$$p $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	install -D -m 0755 $(RELEASE_DIR)/netctl $(DESTDIR)$(BIN_DIR)/netctl
	install -D -m 0755 $(RELEASE_DIR)/podnet $(DESTDIR)$(BIN_DIR)/podnet
	install -d $(DESTDIR)$(LIBEXEC_DIR)
	for p in netavark $(PLUGINS); do install -m 0755 $(RELEASE_DIR)/$$p $(DESTDIR)$(LIBEXEC_DIR)/$$p; done

# The release artifact in the reference's layout: cni-plugins-linux-<arch>-v<version>.tgz,
# the plugin binaries at the top level (what cluster installers unpack into /opt/cni/bin),
# with a SHA-256 file beside it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH := $(shell uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
DIST := target/dist/cni-plugins-linux-$(ARCH)-v$(VERSION).tgz

dist: release
	rm -rf target/dist/stage && install -d target/dist/stage
	for p in $(PLUGINS); do install -m 0755 $(RELEASE_DIR)/$$p target/dist/stage/$$p; done
	install -m 0644 README.md target/dist/stage/README.md
	tar --owner=0 --group=0 --numeric-owner --sort=name -C target/dist/stage -czf $(DIST) .
	cd target/dist && sha256sum $(notdir $(DIST)) > $(notdir $(DIST)).sha256
	@echo $(DIST)

bench: deps release
	@[ -x /usr/lib/podman/netavark ] || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq netavark >/dev/null; }
	$(SANDBOX) $(RELEASE_DIR)/examples/bench $(RELEASE_DIR) /usr/lib/cni $(or $(ITERATIONS),400) $(ONLY)

bench-cri: deps release
	$(SANDBOX) $(RELEASE_DIR)/examples/bench_cri $(RELEASE_DIR) /usr/lib/cni $(or $(ROUNDS),30)

# macvlan and ipvlan + host-local in the qemu VM of `make vm-test` (the only place with
# an ipvlan driver): software emulation, so only the ratios mean something.
bench-vm: deps build release
	VM_BENCH=$(CURDIR)/$(RELEASE_DIR)/examples/bench VM_BENCH_ITERATIONS=$(or $(ITERATIONS),100) \
	  scripts/vm-test.sh "$$($(CARGO) test -p podnet-tests --test integration --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$$/\1/p' | tail -1)" \
	  $(CURDIR)/$(RELEASE_DIR) /usr/lib/cni

bench-podman5: deps release podman5-root
	scripts/bench-podman5.sh $(RELEASE_DIR) $(or $(ROUNDS),25)

bench-engine: deps release
	$(SANDBOX) scripts/bench-engine.sh $(RELEASE_DIR) $(or $(ROUNDS),30)

DNS_BENCH_PACKAGES := dnsperf dnsmasq-base golang-github-containernetworking-plugin-dnsname aardvark-dns

bench-dns: deps release
	@missing=""; for p in $(DNS_BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; [ -z "$$missing" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null
	scripts/bench-dns.sh $(RELEASE_DIR) $(or $(DNS_SECONDS),5) $(or $(SIZES),100 1000 50000)

clean:
	$(CARGO) clean
