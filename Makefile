# vfioctl: build, test and install.
#   make run    install build dependencies, build, run `vfioctl list` (read-only)
#   make test   install test dependencies, run every test (unit, golden, alert rules, fuzz corpus
#               replay, Nova oracle, Ansible collection, packages, real-kernel VM suite);
#               deterministic: no random campaign, no timed assertion decides it
#   make fuzz   random AFL++ campaigns, FUZZ_SECONDS per target (FUZZ_TARGETS: some), not part of test
#   make bench  side-by-side benchmarks on fake hosts, and the HGX board on a simulated
#               kernel -> docs/benchmarks.md (not part of test)
#   make bench-hgx  only the HGX board rows, for VFIOCTL=BIN and BASELINE=OTHER_BIN side by side
#   make bench-vm  binding and boot-storm benchmarks in the QEMU test bed -> docs/benchmarks.md (not part of test)
#   make deb    dist/vfioctl_VERSION-1_ARCH.deb;  make rpm: dist/vfioctl-VERSION-1.ARCH.rpm
#   make lint   cargo fmt --check and clippy with warnings as errors
#   make ci-fresh  `make run` and `make test` of the committed HEAD in a fresh minimal Debian 12
#               root (.ci/fresh; cached base under target/ci-fresh, CI_FRESH_REBUILD=1 rebuilds it)

CARGO ?= cargo
BIN := target/release/vfioctl
# Debian packages needed to build: rustc's linker, libvirt and libudev for the
# virt and udev crates, CA certificates for cargo's downloads from crates.io.
BUILD_DEPS := gcc libc6-dev pkg-config libvirt-dev libudev-dev pci.ids ca-certificates
# Debian packages the package tests need: the builders and their judges
# (systemd for systemd-analyze; cpio unpacks the .rpm's vfioctl to show it
# has no test hooks).
PACKAGE_DEPS := dpkg-dev rpm lintian rpmlint busybox-static systemd cpio
# Debian packages the unit tests run: python3's configparser judges the
# nova.conf text vfioctl writes (tests/libvirt.rs).
UNIT_TEST_DEPS := python3
# Debian packages the Nova oracle needs besides nova itself, which comes from
# PyPI into a venv under target/ (tests/nova/run).
NOVA_TEST_DEPS := python3 python3-venv
# Debian packages the Ansible collection's tests need besides ansible-core,
# which comes from PyPI into target/ansible/venv (ansible/tests/ci/run); ansible-test
# integration runs ssh-keygen.
ANSIBLE_TEST_DEPS := python3-venv git openssh-client
# promtool (in Debian's prometheus package) judges the alert rules and the metrics.
ALERT_TEST_DEPS := prometheus
# The peers and tools `make bench` runs.
BENCH_DEPS := pciutils driverctl dpdk strace gcc python3
# BENCH_ARGS="--baseline OLD_VFIOCTL" adds an older binary's rows (before/after).
BENCH_ARGS ?=
# bench-hgx: the binary measured (default: this checkout's release build), and
# another measured beside it in the same paired runs (none by default).
VFIOCTL ?= $(BIN)
BASELINE ?=
BASELINE_LABEL ?=

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
LIBEXECDIR ?= $(PREFIX)/libexec/vfioctl
# /etc/vfioctl is a fixed path in vfioctl (src/host/config/), whatever PREFIX is.
SYSCONFDIR ?= /etc
# Where this system's udev and systemd read from (Debian 12: /lib/..., RHEL 9:
# /usr/lib/...), for `make install` here. The packages do not use these
# defaults: packaging/deb/build and the spec name their distribution's paths.
UDEVDIR ?= $(or $(shell pkg-config --variable=udevdir udev 2>/dev/null),/usr/lib/udev)
UDEVRULESDIR ?= $(UDEVDIR)/rules.d
UNITDIR ?= $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/usr/lib/systemd/system)
PRESETDIR ?= $(or $(shell pkg-config --variable=systemdsystempresetdir systemd 2>/dev/null),/usr/lib/systemd/system-preset)
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
GEN := target/generated

.PHONY: all deps build run test test-unit test-alerts test-nova test-ansible test-fuzz test-package test-vm lint ci ci-fresh fuzz bench bench-hgx bench-vm install install-files uninstall deb rpm

all: build

# Installs what is missing of BUILD_DEPS and EXTRA_DEPS with apt, saying once
# which; apt's own output goes to target/apt.log, shown (its tail) only when
# apt fails.
APT_LOG := target/apt.log
deps:
	@command -v dpkg-query >/dev/null || { echo "deps: not a Debian system; install the equivalents of $(BUILD_DEPS) $(EXTRA_DEPS) yourself"; exit 0; }; \
	missing=$$(for p in $(BUILD_DEPS) $(EXTRA_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing "(apt log: $(APT_LOG))"; \
		mkdir -p $(dir $(APT_LOG)); \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; } >>$(APT_LOG) 2>&1 || \
			{ echo "deps: apt-get failed; the end of $(APT_LOG):" >&2; tail -n 25 $(APT_LOG) >&2; exit 1; }; \
	fi

build: deps
	VFIOCTL_GEN_DIR=$(CURDIR)/$(GEN) $(CARGO) build --release --locked

run: build
	./$(BIN) list

test-unit:
	$(MAKE) deps EXTRA_DEPS="$(UNIT_TEST_DEPS)"
	$(CARGO) test --locked

# The shipped alert rules: promtool checks them and runs their unit tests
# (tests/alerts), and judges the series `check --prometheus` writes.
test-alerts:
	$(MAKE) deps EXTRA_DEPS="$(ALERT_TEST_DEPS)"
	promtool check rules packaging/prometheus/vfioctl.rules.yml
	promtool test rules tests/alerts/vfioctl.rules.test.yml
	VFIOCTL_REQUIRE_PROMTOOL=1 $(CARGO) test --locked --test health prometheus

# Nova 34 from PyPI judges `vfioctl nova` (venv under target/, reused); SKIP
# with the reason when PyPI cannot be reached.
test-nova:
	$(MAKE) deps EXTRA_DEPS="$(NOVA_TEST_DEPS)"
	CARGO=$(CARGO) tests/nova/run

# ansible-test sanity, units and integration (fake hosts) for ansible/; the
# venv and ansible-test's own venvs are cached under target/ansible. Skips
# with a SKIP line when PyPI cannot be reached.
test-ansible:
	$(MAKE) deps EXTRA_DEPS="$(ANSIBLE_TEST_DEPS)"
	ansible/tests/ci/run

# The fuzz targets (docs/fuzzing.md) over their corpus and every input that
# ever crashed or hung one (fuzz/regressions), as a plain test: the same
# inputs in the same order on every run.
test-fuzz: deps
	$(CARGO) test --locked -p vfioctl-fuzz -- --nocapture

# Random AFL++ campaigns (cargo-afl, built from crates.io on first use: about
# 5 min of CPU), FUZZ_SECONDS per target, one after the other, for every
# target or the ones FUZZ_TARGETS names; findings in fuzz/out/TARGET/default/
# {crashes,hangs}. Each finding becomes an input in fuzz/regressions/TARGET
# with its fix. Not part of `make test`: what a random campaign finds differs
# from run to run.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	@$(CARGO) afl --version >/dev/null 2>&1 || $(CARGO) install cargo-afl --locked
	fuzz/campaign $(FUZZ_SECONDS) $(FUZZ_TARGETS)

test-vm: deps deb
	tests/vm/setup
	tests/vm/run

# Builds both packages, checks them with lintian, rpmlint and systemd-analyze,
# and installs, reinstalls, removes and purges the .deb (tests/package/run).
test-package:
	$(MAKE) deps EXTRA_DEPS="$(PACKAGE_DEPS)"
	$(MAKE) deb rpm
	tests/package/run

test: test-unit test-alerts test-fuzz test-nova test-ansible test-package test-vm

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

ci: lint test

# `make run` and `make test` of the committed HEAD, as a new user runs them, in
# a fresh minimal Debian 12 root (mmdebstrap, cached under target/ci-fresh;
# CI_FRESH_REBUILD=1 rebuilds it) with this machine's Rust toolchain; prints
# each command's time and each test stage's summary (.ci/fresh).
ci-fresh:
	.ci/fresh

# Fake hosts of 64 to 16,384 functions, each tool in a private mount namespace
# with the tree over /sys (bench/run.py), then the seed HGX board's bind and
# restore on a simulated kernel with a 2 s unbind per device (bench/hgx.py,
# bench/simkernel.py: FUSE, so root); writes docs/benchmarks.md.
bench:
	$(MAKE) deps EXTRA_DEPS="$(BENCH_DEPS)"
	VFIOCTL_GEN_DIR=$(CURDIR)/$(GEN) $(CARGO) build --release --locked --bins --example fakehost
	python3 bench/run.py $(BENCH_ARGS)

# Only the HGX board rows (about 3 min per binary at 3 runs), for VFIOCTL and,
# with BASELINE, another binary in the same paired runs:
#   make bench-hgx BASELINE=/path/to/old/vfioctl BASELINE_LABEL="main d732c1f"
bench-hgx:
	$(MAKE) deps EXTRA_DEPS="python3"
	VFIOCTL_GEN_DIR=$(CURDIR)/$(GEN) $(CARGO) build --release --locked --bins --example fakehost
	python3 bench/run.py --parts hgx --vfioctl "$(VFIOCTL)" \
		$(if $(BASELINE),--baseline "$(BASELINE)") $(if $(BASELINE_LABEL),--baseline-label "$(BASELINE_LABEL)") $(BENCH_ARGS)

# Binding (1 device, N VFs, several devices at once: vfioctl vs shell writes,
# one after the other and at once, vs virsh) and the boot storm, in the QEMU
# test bed with the release build (bench/vm.py); writes docs/benchmarks.md.
# About 15 min under TCG.
bench-vm: deps
	VFIOCTL_GEN_DIR=$(CURDIR)/$(GEN) $(CARGO) build --release --locked --bins
	tests/vm/setup
	python3 bench/vm.py $(BENCH_VM_ARGS)

# Installs the binaries, the udev rule (pointing at the installed binary), the
# systemd unit and its preset, /etc/vfioctl/bindings.d with a commented
# example, the man page, shell completions and the Prometheus alert rules. DESTDIR stages into a package
# root; install-files installs what is already built (packages use it).
# Nothing here binds a device, and the unit is neither enabled nor started.
# /etc/vfioctl keeps its mode and an example the operator edited is kept.
install: build
	@$(MAKE) --no-print-directory install-files
	@if [ -z "$(DESTDIR)" ] && [ -S /run/udev/control ]; then udevadm control --reload; fi

install-files:
	@# SBINDIR is written into the udev rule's RUN and the unit's ExecStart, unquoted.
	@case '$(SBINDIR)' in /*[!A-Za-z0-9/._+-]* | [!/]* | '') \
		echo "SBINDIR='$(SBINDIR)': must be an absolute path of letters, digits and /._+- (the udev rule and the unit run it)" >&2; exit 2 ;; \
	esac
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/vfioctl
	install -D -m 0755 target/release/vfioctl-libvirt $(DESTDIR)$(LIBEXECDIR)/vfioctl-libvirt
	install -d $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(UNITDIR)
	sed 's|/usr/sbin/vfioctl|$(SBINDIR)/vfioctl|' udev-rules/70-vfioctl.rules > $(DESTDIR)$(UDEVRULESDIR)/70-vfioctl.rules
	sed 's|/usr/sbin/vfioctl|$(SBINDIR)/vfioctl|' packaging/systemd/vfioctl-apply.service > $(DESTDIR)$(UNITDIR)/vfioctl-apply.service
	chmod 0644 $(DESTDIR)$(UDEVRULESDIR)/70-vfioctl.rules $(DESTDIR)$(UNITDIR)/vfioctl-apply.service
	install -D -m 0644 packaging/systemd/50-vfioctl.preset $(DESTDIR)$(PRESETDIR)/50-vfioctl.preset
	mkdir -p -m 0755 $(DESTDIR)$(SYSCONFDIR)/vfioctl
	mkdir -p -m 0755 $(DESTDIR)$(SYSCONFDIR)/vfioctl/bindings.d
	test -e $(DESTDIR)$(SYSCONFDIR)/vfioctl/bindings.d/example.toml || \
		install -m 0644 packaging/example.toml $(DESTDIR)$(SYSCONFDIR)/vfioctl/bindings.d/example.toml
	install -D -m 0644 man/vfioctl.8 $(DESTDIR)$(MANDIR)/man8/vfioctl.8
	install -D -m 0644 $(GEN)/vfioctl.bash $(DESTDIR)$(BASHCOMPDIR)/vfioctl
	install -D -m 0644 $(GEN)/_vfioctl $(DESTDIR)$(ZSHCOMPDIR)/_vfioctl
	install -D -m 0644 $(GEN)/vfioctl.fish $(DESTDIR)$(FISHCOMPDIR)/vfioctl.fish
	install -D -m 0644 packaging/prometheus/vfioctl.rules.yml $(DESTDIR)$(DATADIR)/vfioctl/prometheus/vfioctl.rules.yml
	install -d $(DESTDIR)$(DATADIR)/vfioctl/npd
	sed 's|"/usr/sbin/vfioctl"|"$(SBINDIR)/vfioctl"|' packaging/npd/vfioctl-plugin-monitor.json > $(DESTDIR)$(DATADIR)/vfioctl/npd/vfioctl-plugin-monitor.json
	chmod 0644 $(DESTDIR)$(DATADIR)/vfioctl/npd/vfioctl-plugin-monitor.json

# Removes what install put there. /etc/vfioctl goes only while it holds nothing
# but the untouched example: declarations are the operator's.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/vfioctl $(DESTDIR)$(LIBEXECDIR)/vfioctl-libvirt \
		$(DESTDIR)$(UDEVRULESDIR)/70-vfioctl.rules $(DESTDIR)$(UNITDIR)/vfioctl-apply.service \
		$(DESTDIR)$(PRESETDIR)/50-vfioctl.preset $(DESTDIR)$(MANDIR)/man8/vfioctl.8 \
		$(DESTDIR)$(BASHCOMPDIR)/vfioctl $(DESTDIR)$(ZSHCOMPDIR)/_vfioctl $(DESTDIR)$(FISHCOMPDIR)/vfioctl.fish \
		$(DESTDIR)$(DATADIR)/vfioctl/prometheus/vfioctl.rules.yml \
		$(DESTDIR)$(DATADIR)/vfioctl/npd/vfioctl-plugin-monitor.json
	-rmdir $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(DATADIR)/vfioctl/prometheus $(DESTDIR)$(DATADIR)/vfioctl/npd $(DESTDIR)$(DATADIR)/vfioctl 2>/dev/null
	@if cmp -s packaging/example.toml $(DESTDIR)$(SYSCONFDIR)/vfioctl/bindings.d/example.toml; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/vfioctl/bindings.d/example.toml; \
		rmdir $(DESTDIR)$(SYSCONFDIR)/vfioctl/bindings.d $(DESTDIR)$(SYSCONFDIR)/vfioctl 2>/dev/null || true; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -S /run/udev/control ]; then udevadm control --reload; fi

# For scripts: make -s print-UNITDIR.
print-%:
	@echo '$($*)'

# Packages, from the release binaries: dist/vfioctl_VERSION_ARCH.deb and
# dist/vfioctl-VERSION-RELEASE.ARCH.rpm (packaging/README.md).
deb: build
	packaging/deb/build

rpm: build
	packaging/rpm/build
