#!/usr/bin/env bash
# Build the workspace in release mode and benchmark switchyard against
# uml_switch and vde_switch (tests/src/bin/switchyard-bench.rs), and
# switchyard's pcap port with MAC-NAT against the same port without it.
#
#   tests/bench/run.sh                       # defaults: 3 s windows, 5 reps, 15 for latency (~12 min)
#   tests/bench/run.sh --only latency        # any switchyard-bench option passes through
#   tests/bench/run.sh --only latency,latency_busy_poll  # switchyard --busy-poll vs. default latency
#   tests/bench/run.sh --only macnat_pcap    # MAC-NAT's cost only (~1 min)
#   tests/bench/run.sh --only uml_tcp        # TCP between two UML guests (~1.5 min)
#   tests/bench/run.sh --only switchyard,uml_tcp,uml_virtio_tcp  # UML: vhost-user vs daemon
#   tests/bench/run.sh --only qemu_vhost_user,qemu_vde,qemu_bridge  # QEMU guests (~5 min)
#   tests/bench/run.sh --duration 1 --reps 1 # quick look
#
# The markdown table goes to stdout, progress and build output to stderr,
# and the JSON record to target/bench/results.json (override with --json).
# Needs root (it creates a private network namespace; all traffic stays in
# it) plus uml_switch (uml-utilities) and vde_switch (vde2); the tap <-> tap
# TCP run (iperf3_tap) also needs vde_plug (vdeplug) and iperf3, and the
# MAC-NAT run (macnat_pcap) needs nft (nftables), and the UML guests' TCP
# run (uml_tcp) needs User-mode Linux (user-mode-linux) and iperf3: this
# script installs iperf3, nftables and user-mode-linux with apt-get when
# they are missing.
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

# The measurements named with --only (switch names do not narrow them);
# empty: all of them.
only=""
prev=""
for arg in "$@"; do
    if [ "$prev" = "--only" ]; then
        only="$only,$arg"
    fi
    case "$arg" in
        --only=*) only="$only,${arg#--only=}" ;;
    esac
    prev="$arg"
done
only_measurements="$(printf '%s\n' "$only" | tr ',' '\n' | grep -vxE 'switchyard|uml_switch|vde_switch|' || true)"

# Whether measurement $1 will run.
wants() {
    [ -z "$only_measurements" ] || printf '%s\n' "$only_measurements" | grep -qx "$1"
}

# Install package $2 with apt-get when program $1 is missing; $3 needs it.
need() {
    if command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; then
        return
    fi
    echo "run.sh: $1 is missing (needed by $3); installing $2 with apt-get" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >&2; then
        echo "run.sh: could not install $2; install it (apt-get install $2)" \
             "or leave $3 out with --only" >&2
        exit 1
    fi
}

# iperf3_tap needs iperf3 (and vde_plug, from vdeplug, a dependency of vde2);
# macnat_pcap needs nft, which drops the veth pair's frames before the IP stack.
if wants iperf3_tap; then
    need iperf3 iperf3 iperf3_tap
fi
if wants macnat_pcap; then
    need nft nftables macnat_pcap
fi
# uml_tcp boots two User-mode Linux guests (linux.uml, from user-mode-linux)
# that run iperf3 from the host's / over hostfs.
if wants uml_tcp; then
    need linux.uml user-mode-linux uml_tcp
    need iperf3 iperf3 uml_tcp
fi
# uml_virtio_tcp: the same guests on virtio_uml (virtio_net.ko from the
# user-mode-linux package's module tree).
if wants uml_virtio_tcp; then
    need linux.uml user-mode-linux uml_virtio_tcp
    need iperf3 iperf3 uml_virtio_tcp
fi
# The qemu_* rows boot Debian's kernel (linux-image-amd64) with a busybox
# initramfs the benchmark builds (busybox-static, cpio, iperf3) under QEMU.
for m in qemu_vhost_user qemu_vde qemu_bridge; do
    if wants "$m"; then
        need qemu-system-x86_64 qemu-system-x86 "$m"
        need busybox busybox-static "$m"
        need cpio cpio "$m"
        need iperf3 iperf3 "$m"
        if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
            echo "run.sh: no kernel in /boot (needed by $m); installing linux-image-amd64" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y linux-image-amd64 >&2
        fi
        break
    fi
done

cargo build --release --workspace >&2

# The benchmark deletes its namespace itself, even on errors and Ctrl-C;
# this trap only covers the case where it is killed outright.
netns="swbench-$$"
# iperf3_tap makes two more namespaces per run, named "$netns-s<N>" and
# "$netns-c<N>"; macnat_pcap's veth pairs live in "$netns" and go with it.
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
