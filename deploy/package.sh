#!/usr/bin/env bash
# Builds the Debian package: release binary (stripped; its debug symbols
# apart), man page, completions, units, example configs.
# Output: target/debian/switchyard_*.deb and target/debian/switchyard.debug
# Needs cargo-deb (cargo install cargo-deb --locked) and binutils.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "deploy/package.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
fi
for tool in objcopy strip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "deploy/package.sh: $tool is missing: apt-get install binutils" >&2
        exit 1
    fi
done
# The binary alone, as tests/run.sh builds the daemon its end-to-end tests
# run (SWITCHYARD_BIN): the same package selection, so every dependency has
# the same features (a workspace test build would switch on features its
# test targets' dependencies ask for). Only the profile differs: release.
cargo build --release -p switchyard-cli --bins
mkdir -p target/release/assets target/debian
bin=target/release/switchyard
# Debug symbols apart: the package ships the stripped binary, linked to
# its symbols by build id and debuglink (gdb, debuginfod find them).
objcopy --only-keep-debug "$bin" target/debian/switchyard.debug
strip --strip-debug --strip-unneeded -o target/release/assets/switchyard "$bin"
objcopy --add-gnu-debuglink=target/debian/switchyard.debug target/release/assets/switchyard
"$bin" generate man | gzip -9n > target/release/assets/switchyard.1.gz
"$bin" generate bash > target/release/assets/switchyard.bash
"$bin" generate zsh > target/release/assets/_switchyard
"$bin" generate fish > target/release/assets/switchyard.fish
cargo deb --no-build --no-strip -p switchyard-cli "$@"
ls target/debian/*.deb
