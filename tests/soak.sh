#!/usr/bin/env bash
# The compressed soak (tests/src/bin/switchyard-soak.rs): builds the
# daemon and the soak in release mode and churns ports on the daemon while
# traffic flows, sampling its resident memory and open descriptors; exits
# 1 if either grows or a frame of the reference pair is lost. Not part of
# `cargo test`: it takes as long as you ask.
#
#   tests/soak.sh                  # 10 minutes (the README's figures)
#   tests/soak.sh --minutes 2      # a quick look; any switchyard-soak option passes through
#
# The markdown table goes to stdout, progress and build output to stderr.
# Needs root (it creates a private network namespace; all traffic stays in
# it on 127.0.0.1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E -- "$0" "$@"
    fi
    echo "soak.sh: must run as root (it creates a network namespace)" >&2
    exit 1
fi

cargo build --release -p switchyard-cli -p switchyard-tests --bin switchyard --bin switchyard-soak >&2
exec target/release/switchyard-soak "$@"
