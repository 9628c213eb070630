# vfioctl: build, test and install.
#   make run    install build dependencies, build, run `vfioctl list` (read-only)
#   make test   install test dependencies, run every test (unit, golden, real-kernel VM suite)
#   make lint   cargo fmt --check and clippy with warnings as errors

CARGO ?= cargo
BIN := target/release/vfioctl
# Debian packages needed to build (libvirt and libudev for the virt and udev crates).
BUILD_DEPS := pkg-config libvirt-dev libudev-dev pci.ids

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
LIBEXECDIR ?= $(PREFIX)/libexec/vfioctl
UDEVDIR ?= /usr/lib/udev/rules.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
GEN := target/generated

.PHONY: all deps build run test test-unit test-fuzz test-vm lint ci install uninstall

all: build

deps:
	@missing=$$(for p in $(BUILD_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing build dependencies: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	VFIOCTL_GEN_DIR=$(CURDIR)/$(GEN) $(CARGO) build --release --locked

run: build
	./$(BIN) list

test-unit: deps
	$(CARGO) test --locked

# Fuzz targets (docs/fuzzing.md): the corpus replayed through every target
# as a plain test, then each target fuzzed FUZZ_SECONDS with AFL++ (cargo-afl,
# built from crates.io on first use: about 5 min of CPU for install and build,
# then 12 targets x FUZZ_SECONDS). FUZZ_SECONDS=0 skips AFL++.
FUZZ_SECONDS ?= 25
test-fuzz: deps
	$(CARGO) test --locked -p vfioctl-fuzz
	@if [ "$(FUZZ_SECONDS)" != 0 ]; then \
		$(CARGO) afl --version >/dev/null 2>&1 || $(CARGO) install cargo-afl --locked; \
		fuzz/smoke $(FUZZ_SECONDS); \
	fi

test-vm: deps
	tests/vm/setup
	tests/vm/run

test: test-unit test-fuzz test-vm

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

ci: lint test

# Installs the binary, the udev rule (pointing at the installed binary), the
# man page and shell completions. DESTDIR stages into a package root.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/vfioctl
	install -D -m 0755 target/release/vfioctl-libvirt $(DESTDIR)$(LIBEXECDIR)/vfioctl-libvirt
	install -d $(DESTDIR)$(UDEVDIR)
	sed 's|/usr/sbin/vfioctl|$(SBINDIR)/vfioctl|' udev-rules/70-vfioctl.rules > $(DESTDIR)$(UDEVDIR)/70-vfioctl.rules
	chmod 0644 $(DESTDIR)$(UDEVDIR)/70-vfioctl.rules
	install -D -m 0644 man/vfioctl.8 $(DESTDIR)$(MANDIR)/man8/vfioctl.8
	install -D -m 0644 $(GEN)/vfioctl.bash $(DESTDIR)$(BASHCOMPDIR)/vfioctl
	install -D -m 0644 $(GEN)/_vfioctl $(DESTDIR)$(ZSHCOMPDIR)/_vfioctl
	install -D -m 0644 $(GEN)/vfioctl.fish $(DESTDIR)$(FISHCOMPDIR)/vfioctl.fish
	@if [ -z "$(DESTDIR)" ] && [ -S /run/udev/control ]; then udevadm control --reload; fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/vfioctl $(DESTDIR)$(LIBEXECDIR)/vfioctl-libvirt $(DESTDIR)$(UDEVDIR)/70-vfioctl.rules \
		$(DESTDIR)$(MANDIR)/man8/vfioctl.8 $(DESTDIR)$(BASHCOMPDIR)/vfioctl \
		$(DESTDIR)$(ZSHCOMPDIR)/_vfioctl $(DESTDIR)$(FISHCOMPDIR)/vfioctl.fish
