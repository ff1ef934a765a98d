#!/bin/busybox sh
# PID 1 of a QEMU test guest: a busybox initramfs that tests/src/qemu.rs
# builds (busybox, the virtio-net modules, iperf3 and its libraries, this
# script). Used by the switchyard end-to-end tests and the benchmark.
#
# Parameters arrive as environment variables, from KEY=value words on the
# kernel command line that the kernel does not recognise:
#   IP0        address/prefix for eth0 (e.g. 192.0.2.1/24); unset = leave down
#   MTU        MTU of eth0 (default: the driver's)
#   PEER       addresses to ping first, joined by commas (any role)
#   ROLE       "ping": after the pings stay LINGER seconds, power off
#              "server": run `iperf3 -s`, stay up WAITS seconds, power off
#              "client": `iperf3 -c SERVER -J`, print it, power off
#              "wait": stay up WAITS seconds (default 600), then power off
#   TRIES      warm-up attempts of "ping -c 1 -W 1" per peer (default 30)
#   PINGS      echo requests of the real ping, 0.2 s apart (default 3)
#   LINGER     seconds to stay up after the result (default 0)
#   SERVER     the iperf3 server (ROLE=client)
#   SECS       iperf3 -t (default 5); STREAMS: iperf3 -P (default 1)
#   REVERSE    1: iperf3 -R (the server sends)
#   RUNS       several iperf3 runs in a row instead: stream counts joined
#              by commas, "r" after one for -R (e.g. 1,4,1r,4r); each run
#              prints its own SY_IPERF_BEGIN ... SY_IPERF_END
#
# Markers printed on the console (the tests wait for them):
#   SY_BOOTED              init started
#   SY_READY               eth0 configured
#   SY_FEATURES=0101...    virtio features negotiated for eth0, from bit 0
#   SY_IPERF_SERVER        iperf3 -s started (ROLE=server)
#   SY_IPERF_BEGIN ... SY_IPERF_END   iperf3 -J output (ROLE=client)
#   SY_RESULT=OK|FAIL      outcome of the pings to PEER
#   SY_ERROR=...           something the test should report
#   SY_HALT                about to power off
#
# The script must never return: if PID 1 exits, the kernel panics.

/bin/busybox --install -s /bin
PATH=/bin
export PATH

halt() {
    echo "SY_HALT"
    poweroff -f >/dev/null 2>&1
    echo o >/proc/sysrq-trigger 2>/dev/null
    while :; do sleep 10; done
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
# Kernel messages would land in the middle of markers and iperf3's JSON.
echo 1 >/proc/sys/kernel/printk
echo "SY_BOOTED"

while read -r m; do
    insmod "/modules/$m" || echo "SY_ERROR=insmod-$m"
done </modules/order

ip link set lo up
if [ -n "${IP0:-}" ]; then
    # virtio_net may still be probing the device.
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ -n "${MTU:-}" ]; then
        ip link set eth0 mtu "$MTU" || echo "SY_ERROR=mtu"
    fi
    if ! ip link set eth0 up; then
        echo "SY_ERROR=no-eth0"
        echo "SY_RESULT=FAIL"
        halt
    fi
    ip addr add "$IP0" dev eth0
fi
echo "SY_READY"
# The virtio features the driver negotiated, one 0/1 per bit from bit 0.
if [ -r /sys/class/net/eth0/device/features ]; then
    echo "SY_FEATURES=$(cat /sys/class/net/eth0/device/features)"
fi

# Waits until $1 answers once (it may still be booting); TRIES attempts.
await() {
    n=0
    while [ "$n" -lt "${TRIES:-30}" ]; do
        if ping -c 1 -W 1 "$1" >/dev/null 2>&1; then
            return 0
        fi
        n=$((n + 1))
    done
    return 1
}

# Pings every PEER (any role), prints SY_RESULT=OK|FAIL.
if [ -n "${PEER:-}" ]; then
    result=OK
    old_ifs=$IFS
    IFS=,
    for p in $PEER; do
        IFS=$old_ifs
        await "$p"
        if ! ping -c "${PINGS:-3}" -i 0.2 -W 2 "$p"; then
            result=FAIL
        fi
    done
    IFS=$old_ifs
    echo "SY_RESULT=$result"
fi

case "${ROLE:-wait}" in
ping)
    sleep "${LINGER:-0}"
    ;;
server)
    iperf3 -s >/dev/null 2>&1 &
    echo "SY_IPERF_SERVER"
    sleep "${WAITS:-600}"
    ;;
client)
    await "$SERVER"
    runs=${RUNS:-${STREAMS:-1}}
    if [ -z "${RUNS:-}" ] && [ "${REVERSE:-0}" = 1 ]; then runs=${runs}r; fi
    old_ifs=$IFS
    IFS=,
    for run in $runs; do
        IFS=$old_ifs
        rev=
        case $run in *r) rev=-R ;; esac
        # The server may not listen yet: retry while the connection fails.
        n=0
        while :; do
            iperf3 -c "$SERVER" -t "${SECS:-5}" -P "${run%r}" $rev -J >/tmp/iperf.json 2>&1
            rc=$?
            n=$((n + 1))
            if [ "$rc" = 0 ] || [ "$n" -ge 10 ]; then break; fi
            sleep 1
        done
        echo "SY_IPERF_BEGIN"
        cat /tmp/iperf.json
        echo "SY_IPERF_END"
    done
    IFS=$old_ifs
    sleep "${LINGER:-0}"
    ;;
*)
    sleep "${WAITS:-600}"
    ;;
esac
halt
