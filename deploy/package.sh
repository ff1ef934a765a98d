#!/usr/bin/env bash
# Builds the Debian package: release binary, man page, completions, units,
# example configs. Output: target/debian/switchyard_*.deb
# Needs cargo-deb (cargo install cargo-deb --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "deploy/package.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
fi
cargo build --release -p switchyard-cli
mkdir -p target/release/assets
bin=target/release/switchyard
"$bin" generate man | gzip -9n > target/release/assets/switchyard.1.gz
"$bin" generate bash > target/release/assets/switchyard.bash
"$bin" generate zsh > target/release/assets/_switchyard
"$bin" generate fish > target/release/assets/switchyard.fish
cargo deb --no-build -p switchyard-cli "$@"
ls target/debian/*.deb
