#!/usr/bin/env bash
# Build the workspace in release mode and benchmark switchyard against
# uml_switch and vde_switch (tests/src/bin/switchyard-bench.rs).
#
#   tests/bench/run.sh                       # defaults: 3 s windows, 3 reps (~2.5 min)
#   tests/bench/run.sh --only latency        # any switchyard-bench option passes through
#   tests/bench/run.sh --duration 1 --reps 1 # quick look
#
# The markdown table goes to stdout, progress and build output to stderr,
# and the JSON record to target/bench/results.json (override with --json).
# Needs root (it creates a private network namespace; all traffic stays in
# it) plus uml_switch (uml-utilities) and vde_switch (vde2).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E -- "$0" "$@"
    fi
    echo "run.sh: must run as root (it creates a network namespace)" >&2
    exit 1
fi

for prog in uml_switch vde_switch ip; do
    if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$prog" ] && [ ! -x "/sbin/$prog" ]; then
        case "$prog" in
            uml_switch) pkg=uml-utilities ;;
            vde_switch) pkg=vde2 ;;
            *) pkg=iproute2 ;;
        esac
        echo "run.sh: $prog is missing; install it with: apt-get install $pkg" >&2
        exit 1
    fi
done

cargo build --release --workspace >&2

# The benchmark deletes its namespace itself, even on errors and Ctrl-C;
# this trap only covers the case where it is killed outright.
netns="swbench-$$"
cleanup() { ip netns del "$netns" 2>/dev/null || true; }
trap cleanup EXIT

status=0
target/release/switchyard-bench --netns "$netns" "$@" || status=$?
exit "$status"
