#!/usr/bin/env bash
# Build the workspace in release mode and benchmark switchyard against
# uml_switch and vde_switch (tests/src/bin/switchyard-bench.rs).
#
#   tests/bench/run.sh                       # defaults: 3 s windows, 3 reps (~5 min)
#   tests/bench/run.sh --only latency        # any switchyard-bench option passes through
#   tests/bench/run.sh --duration 1 --reps 1 # quick look
#
# The markdown table goes to stdout, progress and build output to stderr,
# and the JSON record to target/bench/results.json (override with --json).
# Needs root (it creates a private network namespace; all traffic stays in
# it) plus uml_switch (uml-utilities) and vde_switch (vde2); the tap <-> tap
# TCP run (iperf3_tap) also needs vde_plug (vdeplug) and iperf3, which this
# script installs with apt-get when it is missing.
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

# iperf3_tap needs iperf3 (and vde_plug, from vdeplug, a dependency of vde2).
wants_iperf=1
for arg in "$@"; do
    case "$arg" in
        --only=*|--only) wants_iperf=0 ;;
    esac
done
if printf '%s\n' "$@" | grep -q 'iperf3_tap'; then
    wants_iperf=1
fi
if [ "$wants_iperf" -eq 1 ] && ! command -v iperf3 >/dev/null 2>&1; then
    echo "run.sh: iperf3 is missing (needed by iperf3_tap); installing it with apt-get" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3 >&2; then
        echo "run.sh: could not install iperf3; install it (apt-get install iperf3)" \
             "or leave iperf3_tap out with --only" >&2
        exit 1
    fi
fi

cargo build --release --workspace >&2

# The benchmark deletes its namespace itself, even on errors and Ctrl-C;
# this trap only covers the case where it is killed outright.
netns="swbench-$$"
# iperf3_tap makes two more namespaces per run, named "$netns-s<N>" and
# "$netns-c<N>".
cleanup() {
    ip netns del "$netns" 2>/dev/null || true
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -- "^$netns-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT

status=0
target/release/switchyard-bench --netns "$netns" "$@" || status=$?
exit "$status"
