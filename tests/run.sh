#!/usr/bin/env bash
# Installs everything the test suite needs on Debian 12 and runs it all:
# formatting, lints, unit and property tests, and the end-to-end tests with
# real UML, vde_plug and QEMU clients (these need root: network namespaces,
# tap devices). Usage: tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
deploy/setup.sh
export DEBIAN_FRONTEND=noninteractive
# busybox-static (it provides busybox) goes into the QEMU guests' initramfs;
# linux-image-amd64 is their kernel (tests/src/qemu.rs).
$SUDO apt-get install -y -qq --no-install-recommends \
    iproute2 iputils-ping procps psmisc kmod tcpdump \
    user-mode-linux uml-utilities vde2 vdeplug qemu-system-x86 prometheus \
    passt udhcpc busybox-static curl dnsmasq-base nftables ethtool iperf3 iputils-arping \
    linux-image-amd64 cpio xz-utils >/dev/null
if ! command -v cargo-deb >/dev/null 2>&1; then
    cargo install cargo-deb --locked --quiet
fi
# The fuzz smoke test (tests/tests/fuzz_smoke.rs) needs cargo-fuzz and nightly.
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
echo "tests/run.sh: test dependencies installed"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
# The daemon the end-to-end tests run is built on its own, as
# deploy/package.sh builds the packaged one: the same package selection,
# hence the same dependency features (a workspace test build switches on
# features its test targets' dependencies ask for); only the profile
# differs.
cargo build -p switchyard-cli --bins --target-dir target/product
export SWITCHYARD_BIN="$PWD/target/product/debug/switchyard"
AS_ROOT=()
if [ "$(id -u)" -ne 0 ]; then
    AS_ROOT=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME,CI,SWITCHYARD_BIN)
fi
# Everything but the fuzz run, then the fuzz run with its output shown, so
# the log reports each target's execs. Both always run; either failing fails.
status=0
"${AS_ROOT[@]}" cargo test --workspace --no-fail-fast -- --test-threads=2 \
    --skip every_fuzz_target_runs_clean || status=$?
"${AS_ROOT[@]}" cargo test -p switchyard-tests --test fuzz_smoke -- --nocapture || status=$?
exit "$status"
