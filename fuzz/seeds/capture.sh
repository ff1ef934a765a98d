#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/corpus/ from real traffic: every seed
# is bytes a real program sent. Needs root (network namespaces, taps), the
# tools tests/run.sh installs, and the test agent built
# (cargo build -p switchyard-tests). Usage, from the repository root:
#   fuzz/seeds/capture.sh
# What it records, all inside two network namespaces it creates and deletes
# (guest G and LAN host L joined by a veth pair):
#   - the test suite's guest agent (target/debug/sy-guest-agent) in G:
#     udhcpc DHCPv4, SLAAC from dnsmasq's RA, DHCPv6, ARP, NDP, ping and
#     TCP to L, which runs dnsmasq and a TCP greeter;
#   - kernel VXLAN (VNI 42) between G and L, captured on the underlay;
#   - QEMU's -netdev stream output (length-prefixed frames) from a tap;
#   - the control requests of vde_plug (VDE v3), UML's daemon transport
#     (v3) and a v1 request from the test suite's layout.
# fuzz/seeds/split.py then turns these into the per-target seed files.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
AGENT=$ROOT/target/debug/sy-guest-agent
[ -x "$AGENT" ] || { echo "build the agent first: cargo build -p switchyard-tests" >&2; exit 1; }
for t in ip ethtool tcpdump dnsmasq udhcpc vde_plug qemu-system-x86_64 linux.uml python3; do
    command -v "$t" >/dev/null || { echo "missing $t (see tests/run.sh)" >&2; exit 1; }
done

G=syfz-g-$$
L=syfz-l-$$
RAW=$(mktemp -d /tmp/syfz-raw.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$G" 2>/dev/null || true
    ip netns del "$L" 2>/dev/null || true
    rm -rf "$RAW"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# Background jobs run `ip netns exec` directly (not through these
# functions): it execs the command, so $! is the process to kill.
inG() { ip netns exec "$G" "$@"; }
inL() { ip netns exec "$L" "$@"; }

GUEST_MAC=02:00:00:00:00:0a
LAN_MAC=02:00:00:00:aa:01
ip netns add "$G"
ip netns add "$L"
ip link add fzg netns "$G" address $GUEST_MAC type veth peer name fzl netns "$L" address $LAN_MAC
inG ip link set lo up
inL ip link set lo up
inL ip addr add 198.51.100.1/24 dev fzl
inL ip addr add 198.51.100.2/24 dev fzl
inL ip addr add 2001:db8:77::1/64 dev fzl nodad
inL ip addr add 2001:db8:77::2/64 dev fzl nodad
# Full checksums in the captured frames, as a guest's NIC sends them (veth
# would otherwise leave UDP/TCP checksums to an offload that never runs).
inG ethtool -K fzg tx off >/dev/null
inL ethtool -K fzl tx off >/dev/null
inL ip link set fzl up
inG ip link set fzg up
sleep 2 # link-local addresses for dnsmasq's RA

ip netns exec "$L" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --port=0 --interface=fzl --bind-interfaces \
    --dhcp-range=198.51.100.100,198.51.100.199,255.255.255.0,1h \
    --dhcp-range=2001:db8:77::100,2001:db8:77::1ff,slaac,64,1h \
    --no-ping --enable-ra --ra-param=fzl,4 --user=root \
    --dhcp-leasefile="$RAW/leases" --pid-file="$RAW/dnsmasq.pid" 2>"$RAW/dnsmasq.log" &
PIDS+=($!)
ip netns exec "$L" python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 7777)); s.listen(8)
while True:
    c, a = s.accept()
    ip = a[0].removeprefix("::ffff:")
    c.sendall(f"peer={ip}\n".encode()); c.close()
' &
PIDS+=($!)

# 1. The guest agent: DHCPv4, SLAAC, DHCPv6, ping, TCP.
ip netns exec "$G" tcpdump -i fzg -U -s 0 -w "$RAW/agent.pcap" 2>/dev/null &
TCPDUMP=$!
PIDS+=($TCPDUMP)
sleep 1
printf '#!/bin/sh\ncase "$1" in\ndeconfig) ip link set "$interface" up; ip -4 addr flush dev "$interface";;\nbound|renew) ip -4 addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"; echo "SY_LEASE ip=$ip mask=$mask";;\nesac\nexit 0\n' >"$RAW/udhcpc.sh"
chmod 755 "$RAW/udhcpc.sh"
inG env SY_AGENT=1 SY_DEV=fzg SY_SCRIPT="$RAW/udhcpc.sh" SY_DHCP6=1 "$AGENT" | tee "$RAW/agent.log"
grep -q SY_AGENT_RESULT=OK "$RAW/agent.log"
inG ping -c 1 -W 1 -b 198.51.100.255 >/dev/null 2>&1 || true
inG ping -6 -c 1 -W 1 ff02::1%fzg >/dev/null 2>&1 || true
sleep 1
kill $TCPDUMP; wait $TCPDUMP 2>/dev/null || true

# 2. VXLAN over the veth underlay.
inG ip addr add 198.51.100.50/24 dev fzg
inL ip link add vxl type vxlan id 42 local 198.51.100.1 remote 198.51.100.50 dstport 4789 dev fzl
inG ip link add vxg address 02:00:00:00:00:1a type vxlan id 42 local 198.51.100.50 remote 198.51.100.1 dstport 4789 dev fzg
inL ip addr add 203.0.113.1/24 dev vxl
inG ip addr add 203.0.113.2/24 dev vxg
inL ethtool -K vxl tx off >/dev/null
inG ethtool -K vxg tx off >/dev/null
inL ip link set vxl up
inG ip link set vxg up
ip netns exec "$G" tcpdump -i fzg -U -s 0 -w "$RAW/vxlan.pcap" udp port 4789 2>/dev/null &
TCPDUMP=$!
PIDS+=($TCPDUMP)
sleep 2
inG ping -c 2 -i 0.2 203.0.113.1 >/dev/null
inG ping -6 -c 1 -W 1 ff02::1%vxg >/dev/null 2>&1 || true
sleep 1
kill $TCPDUMP; wait $TCPDUMP 2>/dev/null || true

# 3. QEMU's stream framing: a guestless QEMU joins a tap and a stream.
python3 fuzz/seeds/listen.py "$RAW/qemu.sock" "$RAW" qemu-stream 4 1 &
LISTENER=$!
PIDS+=($LISTENER)
sleep 0.5
ip netns exec "$G" qemu-system-x86_64 -machine none -nodefaults -display none \
    -netdev stream,id=s,server=off,addr.type=unix,addr.path="$RAW/qemu.sock" \
    -netdev hubport,id=h1,hubid=0,netdev=s \
    -netdev tap,id=t,ifname=qtap,script=no,downscript=no \
    -netdev hubport,id=h2,hubid=0,netdev=t 2>"$RAW/qemu.log" &
QEMU=$!
PIDS+=($QEMU)
for _ in $(seq 50); do inG ip link show qtap >/dev/null 2>&1 && break; sleep 0.1; done
inG ip link set qtap address 02:00:00:00:00:2a
inG ip addr add 192.0.2.1/24 dev qtap
inG ip link set qtap up
inG ping -c 2 -i 0.3 -W 1 192.0.2.2 >/dev/null 2>&1 || true
inG ping -6 -c 1 -W 1 ff02::1%qtap >/dev/null 2>&1 || true
wait $LISTENER
kill $QEMU

# 4. Control requests: vde_plug (libvdeplug, v3), the same with a port
# number, and UML's daemon transport (v3 with an abstract address).
mkdir "$RAW/vde"
python3 fuzz/seeds/listen.py "$RAW/vde/ctl" "$RAW" handshake-vde 0.5 2 &
LISTENER=$!
PIDS+=($LISTENER)
sleep 0.5
timeout 5 vde_plug "vde://$RAW/vde" </dev/null >/dev/null 2>&1 || true
timeout 5 vde_plug "vde://$RAW/vde[5]" </dev/null >/dev/null 2>&1 || true
wait $LISTENER
python3 fuzz/seeds/listen.py "$RAW/uml.ctl" "$RAW" handshake-uml 0.5 1 &
LISTENER=$!
PIDS+=($LISTENER)
sleep 0.5
printf '#!/bin/sh\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\nip link set eth0 up\npoweroff -f\n' >"$RAW/init.sh"
chmod 755 "$RAW/init.sh"
inG env TMPDIR="$RAW" timeout 60 linux.uml umid=syfz$$ uml_dir="$RAW" mem=32M quiet \
    root=/dev/root rootfstype=hostfs rootflags=/ ro init="$RAW/init.sh" \
    con=null con0=fd:0,fd:1 eth0=daemon,02:00:00:00:00:0c,unix,"$RAW/uml.ctl" \
    </dev/null >"$RAW/uml.log" 2>&1 || true
wait $LISTENER

python3 fuzz/seeds/split.py "$RAW" "$ROOT/fuzz/corpus"
