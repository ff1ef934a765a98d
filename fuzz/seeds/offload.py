#!/usr/bin/env python3
"""Writes the seeds of the offload, VLAN and control-plane fuzz targets
(gso, pcap, tap_vnet, vlan, port_spec, control_request) into fuzz/corpus/.

  offload.py CORPUS_DIR

Frames come from the captured seeds of macnat_outbound and
macnat_inbound (real guest and LAN frames, written by split.py), plus
TCP super-frames built the way a tap with IFF_VNET_HDR hands them over
(Linux layout: IP lengths of the whole, the TCP checksum field holding the
pseudo-header sum, NEEDS_CSUM with csum_start/csum_offset, hdr_len and
gso_size); each target's input format is at the top of its file in
fuzz/fuzz_targets/. Files named regression-* are kept as they are.
"""
import glob
import os
import struct
import sys

MAC = bytes.fromhex("020000000002" "020000000001")
F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6 = 1, 1, 4


def csum_sum(b, acc=0):
    if len(b) % 2:
        b += b"\0"
    for i in range(0, len(b), 2):
        acc += (b[i] << 8) | b[i + 1]
    return acc


def fold(acc):
    while acc > 0xFFFF:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def tcp_frame(v4, n, vlan=False, mss=1448):
    """A TCP super-frame with `n` payload bytes and its vnet header."""
    f = bytearray(MAC)
    if vlan:
        f += bytes([0x81, 0x00, 0x00, 0x0A])
    ip = len(f) + 2
    tcp = bytearray(struct.pack("!HHIIBBHHH", 5001, 49152, 1000, 1, 0x80, 0x18, 0xFFFF, 0, 0))
    payload = bytes(i % 251 for i in range(n))
    tcp_len = len(tcp) + n
    if v4:
        f += b"\x08\x00"
        h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, 7, 0x4000, 64, 6, 0,
                                  bytes([198, 51, 100, 2]), bytes([198, 51, 100, 150])))
        h[10:12] = struct.pack("!H", 0xFFFF - fold(csum_sum(bytes(h))))
        pseudo = csum_sum(bytes(h[12:20])) + 6 + tcp_len
        l4 = ip + 20
    else:
        f += b"\x86\xdd"
        src = bytes.fromhex("20010db8007700000000000000000002")
        dst = bytes.fromhex("20010db8007700000000000000000101")
        h = bytearray(struct.pack("!IHBB", 0x60000000, tcp_len, 6, 64) + src + dst)
        pseudo = csum_sum(src + dst) + 6 + tcp_len
        l4 = ip + 40
    tcp[16:18] = struct.pack("!H", fold(pseudo))  # partial: the pseudo-header sum
    f += h + tcp + payload
    hdr = struct.pack("=BBHHHH", F_NEEDS_CSUM, GSO_TCPV4 if v4 else GSO_TCPV6,
                      l4 + 20, mss, l4, 16)
    return hdr, bytes(f)


def captured(corpus):
    frames = []
    for name in ("macnat_outbound", "macnat_inbound"):
        for p in sorted(glob.glob(os.path.join(corpus, name, "*.bin"))):
            with open(p, "rb") as fh:
                data = fh.read()
            if name == "macnat_outbound" and len(data) > 16:
                frames.append(data[2:])
    return frames


def write(corpus, target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def main():
    corpus = sys.argv[1]
    frames = captured(corpus)
    supers = []
    for v4 in (True, False):
        for vlan in (False, True):
            for n in (0, 100, 3000):
                supers.append((f"{'v4' if v4 else 'v6'}{'-vlan' if vlan else ''}-{n}",
                               *tcp_frame(v4, n, vlan)))
    for name, hdr, f in supers:
        write(corpus, "gso", f"tcp-{name}.bin", hdr + f)
        write(corpus, "tap_vnet", f"tcp-{name}.bin", b"\0" + hdr + f)
        plain = struct.pack("=BBHHHH", F_NEEDS_CSUM, 0, 0, 0, *struct.unpack("=HH", hdr[6:10]))
        write(corpus, "gso", f"csum-{name}.bin", plain + f)
        write(corpus, "pcap", f"gro-{name}.bin", struct.pack("!H", 1500) + f)
    for i, f in enumerate(frames[:12]):
        write(corpus, "pcap", f"captured-{i}.bin", struct.pack("!H", 1500) + f)
        write(corpus, "vlan", f"captured-{i}.bin", struct.pack("!HB", 10, 0) + f)
        write(corpus, "tap_vnet", f"captured-{i}.bin", b"\1" + bytes(10) + f)
        tagged = f[:12] + bytes([0x81, 0x00, 0x00, 0x14]) + f[12:]
        spec = b"1/20-30"
        write(corpus, "vlan", f"tagged-{i}.bin", struct.pack("!HB", 20, len(spec)) + spec + tagged)
    for i, spec in enumerate([b"10", b"/20,30", b"none/20-30", b"1/100-110", b"4094/1-4094"]):
        write(corpus, "vlan", f"spec-{i}.bin", struct.pack("!HB", 7, len(spec)) + spec + frames[0])
    specs = [
        "udp,local=127.0.0.1:6002,remote=127.0.0.1:6001",
        "udp,name=peer,local=[::1]:6002,remote=[::1]:6001",
        "mcast,group=239.192.168.1:1102",
        "mcast,group=[ff02::1]:1102,interface=lo,ttl=1",
        "stream,listen=/run/switchyard/qemu.sock",
        "stream,connect=127.0.0.1:7000,name=up",
        "vxlan,vni=42,local=10.0.0.1,remotes=10.0.0.2",
        "vxlan,vni=42,local=10.0.0.1,remote=10.0.0.2,remote=10.0.0.3,port=4789",
        "pcap,device=eth0,promisc=off,mac_nat=on",
        "tap,device=tap0",
        "udp,local=127.0.0.1:1",
        "bogus,a=b",
    ]
    for i, s in enumerate(specs):
        write(corpus, "port_spec", f"spec-{i}.bin", bytes([1]) + s.encode())
    requests = [
        '{"cmd":"ports","args":[]}', '{"args":[],"cmd":"fdb"}', '{"cmd":"stats"}',
        '{"cmd":"macnat","args":[]}', '{"cmd":"fdb-flush","args":["udp1"]}',
        '{"cmd":"fdb-flush","args":[]}',
        '{"args":["udp,local=127.0.0.1:6002,remote=127.0.0.1:6001"],"cmd":"port-add"}',
        '{"args":["udp1"],"cmd":"port-del"}', '{"cmd":"reload"}',
        '{"args":["guests"],"cmd":"capture"}', '{"cmd":"nope"}', '{"cmd":', 'null',
        '{"cmd":"ports"}\n{"cmd":"stats"}\n',
    ]
    for i, r in enumerate(requests):
        write(corpus, "control_request", f"request-{i}.bin", r.encode())


if __name__ == "__main__":
    main()
