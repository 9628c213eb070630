# vfioctl: build, test and install.
#   make run    install build dependencies, build, run `vfioctl list` (read-only)
#   make test   install test dependencies, run every test (unit, golden, real-kernel VM suite)
#   make lint   cargo fmt --check and clippy with warnings as errors

CARGO ?= cargo
BIN := target/release/vfioctl
# Debian packages needed to build (libvirt and libudev for the virt and udev crates).
BUILD_DEPS := pkg-config libvirt-dev libudev-dev pci.ids

.PHONY: all deps build run test test-unit test-vm lint ci

all: build

deps:
	@missing=$$(for p in $(BUILD_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing build dependencies: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build --release --locked

run: build
	./$(BIN) list

test-unit: deps
	$(CARGO) test --locked

test-vm: deps
	tests/vm/setup
	tests/vm/run

test: test-unit test-vm

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

ci: lint test
