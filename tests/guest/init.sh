#!/bin/sh
# PID 1 of a User-mode Linux test guest that boots the host's / over hostfs
# (read-only). Used by the switchyard end-to-end tests (tests/src/uml.rs).
#
# Parameters arrive as environment variables, from KEY=value words on the
# kernel command line that the kernel does not recognise:
#   IP0, IP1     address/prefix for eth0 / eth1 (e.g. 192.0.2.1/24); unset = leave down
#   ROLE         "ping": ping PEER, print the result, power off
#                "wait": stay up for WAITS seconds (default 60), then power off
#   PEER         address to ping (ROLE=ping)
#   TRIES        warm-up attempts of "ping -c 1 -W 1" before the real ping (default 20)
#   PINGSIZE     optional payload size for the real ping (-s)
#   PINGS        echo requests of the real ping, 0.2 s apart (default 3)
#   LINGER       seconds to stay up after the ping result (default 0)
#   TCPTO        after a good ping (ROLE=ping), send 8 MB of TCP to this
#                address's iperf3 server (the guest's TSO super-frames,
#                when its NIC has the offload) and print SY_TCP=
#   IPERFD       "1": run an iperf3 server from the start
#   VLANS        802.1Q sub-interfaces of eth0, VID:address/prefix joined by
#                commas (e.g. 10:192.0.2.3/24,20:198.51.100.3/24); the 8021q
#                module is loaded from /usr/lib/uml/modules first
#
# Markers printed on the console (the tests wait for them):
#   SY_BOOTED            init started
#   SY_READY             interfaces configured
#   SY_RESULT=OK|FAIL    outcome of ROLE=ping
#   SY_TCP=OK|FAIL       outcome of TCPTO
#   SY_HALT              about to power off
#
# The script must never return: if PID 1 exits, the kernel panics.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

halt() {
    echo "SY_HALT"
    poweroff -f >/dev/null 2>&1
    # Fallback if poweroff is unavailable: sysrq power-off is asynchronous,
    # so keep init alive until it happens.
    echo o >/proc/sysrq-trigger 2>/dev/null
    while :; do sleep 10; done
}

# /proc first: before this mount /proc is the host's procfs seen through hostfs.
mount -t proc proc /proc
mount -t sysfs sysfs /sys 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
mount -t tmpfs tmpfs /tmp 2>/dev/null
echo "SY_BOOTED"

ip link set lo up
for n in 0 1; do
    eval "addr=\${IP$n:-}"
    if [ -n "$addr" ]; then
        if ! ip link set "eth$n" up; then
            echo "SY_ERROR=no-eth$n"
            echo "SY_RESULT=FAIL"
            halt
        fi
        ip addr add "$addr" dev "eth$n"
    fi
done
if [ -n "${VLANS:-}" ]; then
    # hostfs has no /lib/modules for the UML kernel: load by path, in
    # dependency order.
    mods=/usr/lib/uml/modules/$(uname -r)/kernel/net
    for m in llc/llc 802/stp 802/garp 802/mrp 8021q/8021q; do
        insmod "$mods/$m.ko" 2>/dev/null
    done
    old_ifs=$IFS
    IFS=,
    for v in $VLANS; do
        vid=${v%%:*}
        if ip link add link eth0 name "eth0.$vid" type vlan id "$vid" &&
            ip link set "eth0.$vid" up &&
            ip addr add "${v#*:}" dev "eth0.$vid"; then
            :
        else
            echo "SY_ERROR=vlan-$vid"
        fi
    done
    IFS=$old_ifs
fi
if [ "${IPERFD:-0}" = 1 ]; then
    iperf3 -s -D >/dev/null 2>&1
fi
echo "SY_READY"

case "${ROLE:-wait}" in
ping)
    tries=${TRIES:-20}
    i=0
    # The peer may still be booting: wait until it answers once.
    while [ "$i" -lt "$tries" ]; do
        if ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then
            break
        fi
        i=$((i + 1))
    done
    if [ -n "${PINGSIZE:-}" ]; then
        set -- -s "$PINGSIZE"
    else
        set --
    fi
    if ping -c "${PINGS:-3}" -i 0.2 -W 2 "$@" "$PEER"; then
        echo "SY_RESULT=OK"
        if [ -n "${TCPTO:-}" ]; then
            # The server may still be starting: a few tries.
            tcp=FAIL
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                if iperf3 -c "$TCPTO" -n 8M -4 >/dev/null 2>&1; then
                    tcp=OK
                    break
                fi
                sleep 1
            done
            echo "SY_TCP=$tcp"
        fi
    else
        echo "SY_RESULT=FAIL"
    fi
    sleep "${LINGER:-0}"
    ;;
*)
    sleep "${WAITS:-60}"
    ;;
esac
halt
