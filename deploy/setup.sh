#!/usr/bin/env bash
# Installs what building and running switchyard needs on Debian 12.
# Usage: deploy/setup.sh            (uses sudo when not root)
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates libpcap-dev iproute2 >/dev/null
if ! command -v cargo >/dev/null 2>&1; then
    echo "deploy/setup.sh: cargo not found. Install Rust 1.89 or newer with rustup" \
         "(https://rustup.rs), then run this again." >&2
    exit 1
fi
echo "deploy/setup.sh: build dependencies installed"
