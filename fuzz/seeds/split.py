#!/usr/bin/env python3
"""Turns the raw captures of fuzz/seeds/capture.sh into the seed corpus.

  split.py RAW_DIR CORPUS_DIR

Each target's input format is described at the top of its file in
fuzz/fuzz_targets/; the record format (op, arg, u16 length, payload) is
fuzz/src/lib.rs. Frames are written verbatim, with one exception: MAC-NAT
inbound seeds see the LAN's frames as the uplink receives them, so the
Ethernet destination (and an ARP reply's target hardware address) naming
the guest G is replaced by the uplink MAC Mu, which is what MAC-NAT's
outbound rewrite makes the LAN see.
"""
import glob
import os
import shutil
import struct
import sys

GUEST = bytes.fromhex("02000000000a")
# The uplink (station) MAC the mac-nat targets use: fuzz/src/lib.rs UPLINK.
UPLINK = bytes.fromhex("020000000001")
# At most this many frames of one class per seed file.
PER_CLASS = 8


def pcap_frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    at = 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        at += 16
        yield data[at:at + incl]
        at += incl


def classify(frame):
    et = struct.unpack(">H", frame[12:14])[0]
    if et == 0x0806:
        return "arp"
    if et == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        l4 = frame[14 + ihl:]
        if proto == 17 and len(l4) >= 4:
            ports = struct.unpack(">HH", l4[:4])
            if 67 in ports or 68 in ports:
                return "dhcp4"
            return "udp4"
        return {1: "icmp4", 6: "tcp4"}.get(proto, "ipv4")
    if et == 0x86DD:
        nh = frame[20]
        l4 = frame[54:]
        if nh == 58 and l4:
            t = l4[0]
            if 133 <= t <= 137:
                return "ndp"
            if t in (128, 129):
                return "icmp6"
            return "icmp6-other"
        if nh == 0:
            return "mld"
        if nh == 17 and len(l4) >= 4:
            ports = struct.unpack(">HH", l4[:4])
            if 546 in ports or 547 in ports:
                return "dhcp6"
            return "udp6"
        if nh == 6:
            return "tcp6"
        return "ipv6"
    return "other"


def to_uplink(frame):
    """A LAN frame as MAC-NAT's uplink would receive it (see the docstring)."""
    f = bytearray(frame)
    if f[0:6] == GUEST:
        f[0:6] = UPLINK
    if f[12:14] == b"\x08\x06" and len(f) >= 42 and f[32:38] == GUEST:
        f[32:38] = UPLINK
    return bytes(f)


def record(op, arg, payload):
    return bytes([op, arg]) + struct.pack(">H", len(payload)) + payload


def clear(corpus):
    """Empties the target directories this script fills, keeping the
    inputs of fixed bugs (named regression-*)."""
    for target in ("engine", "macnat_inbound", "macnat_outbound", "vxlan",
                   "stream_framing", "handshake", "yaml"):
        d = os.path.join(corpus, target)
        for f in glob.glob(os.path.join(d, "*")):
            if not os.path.basename(f).startswith("regression-"):
                os.unlink(f)


def write(corpus, target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# Opcodes, as the targets read them (see each target's header comment).
ENGINE_DECIDE, ENGINE_ADD, ENGINE_AGE = 0, 4, 6
NAT_OUT, NAT_IN, NAT_TIME = 0, 1, 2


def agent_seeds(raw, corpus):
    frames = list(pcap_frames(os.path.join(raw, "agent.pcap")))
    groups = {}
    for fr in frames:
        if len(fr) < 14:
            continue
        groups.setdefault(classify(fr), []).append(fr)
    for cls, frs in sorted(groups.items()):
        frs = frs[:PER_CLASS]
        # engine: 4 config bytes (defaults), ports 1 and 2, then each frame
        # from the guest on port 1 and from the LAN on port 2, a second apart.
        eng = bytearray(b"\0\0\0\0")
        eng += record(ENGINE_ADD, 1, b"") + record(ENGINE_ADD, 2, b"")
        # macnat_inbound: 1 config byte (defaults), then the exchange.
        nat = bytearray(b"\0")
        for fr in frs:
            from_guest = fr[6:12] == GUEST
            eng += record(ENGINE_DECIDE, 1 if from_guest else 2, fr)
            eng += record(ENGINE_AGE, 10, b"")
            if from_guest:
                nat += record(NAT_OUT, 0, fr)
            else:
                nat += record(NAT_IN, 0, to_uplink(fr))
            nat += record(NAT_TIME, 1, b"")
        write(corpus, "engine", f"{cls}.bin", bytes(eng))
        write(corpus, "macnat_inbound", f"{cls}.bin", bytes(nat))
        # macnat_outbound: config byte, port byte, one guest frame.
        outs = [fr for fr in frs if fr[6:12] == GUEST][:2]
        for i, fr in enumerate(outs):
            write(corpus, "macnat_outbound", f"{cls}-{i}.bin", b"\0\1" + fr)
            if cls == "dhcp4":
                # DHCP impersonate mode (config bit 0): the growing edit.
                write(corpus, "macnat_outbound", f"{cls}-{i}-impersonate.bin", b"\1\1" + fr)


def vxlan_seeds(raw, corpus):
    seen = set()
    n = 0
    for fr in pcap_frames(os.path.join(raw, "vxlan.pcap")):
        if fr[12:14] != b"\x08\x00":
            continue
        ihl = (fr[14] & 0x0F) * 4
        payload = fr[14 + ihl + 8:]
        inner = payload[8:]
        cls = classify(inner) if len(inner) >= 14 else "short"
        if cls in seen:
            continue
        seen.add(cls)
        # strict flag, VNI (24 bits), then the UDP payload.
        write(corpus, "vxlan", f"{cls}.bin", b"\x01\x00\x00\x2a" + payload)
        n += 1
    return n


def stream_seeds(raw, corpus):
    data = open(os.path.join(raw, "qemu-stream-0.bin"), "rb").read()
    # Whole frames only, up to 4 KiB.
    at = 0
    while at + 4 <= len(data):
        ln = struct.unpack(">I", data[at:at + 4])[0]
        if at + 4 + ln > 4096:
            break
        at += 4 + ln
    # The first byte picks the read sizes the decoder sees (0: whole).
    write(corpus, "stream_framing", "qemu-stream.bin", b"\x00" + data[:at])
    write(corpus, "stream_framing", "qemu-stream-chunked.bin", b"\x07" + data[:at])


def handshake_seeds(raw, corpus):
    for path in sorted(glob.glob(os.path.join(raw, "handshake-*.bin"))):
        data = open(path, "rb").read()
        if data:
            write(corpus, "handshake", os.path.basename(path), data)
    # No client at hand speaks v1; this is the layout of request.rs and
    # uml_switch's struct request_v1 (magic, type, MAC, sockaddr_un).
    sa = struct.pack("=H", 1) + b"/tmp/uml-v1.sock".ljust(108, b"\0")
    v1 = struct.pack("=II", 0xFEEDFACE, 0) + bytes.fromhex("02000000000c") + sa
    write(corpus, "handshake", "handshake-v1-layout.bin", v1)


def yaml_seeds(corpus, repo):
    for path in sorted(glob.glob(os.path.join(repo, "deploy", "*.yaml"))
                       + glob.glob(os.path.join(repo, "deploy", "examples", "*.yaml"))):
        d = os.path.join(corpus, "yaml")
        os.makedirs(d, exist_ok=True)
        shutil.copy(path, os.path.join(d, os.path.basename(path)))


def main():
    raw, corpus = sys.argv[1], sys.argv[2]
    repo = os.path.dirname(os.path.abspath(corpus.rstrip("/")))
    repo = os.path.dirname(repo)
    clear(corpus)
    agent_seeds(raw, corpus)
    vxlan_seeds(raw, corpus)
    stream_seeds(raw, corpus)
    handshake_seeds(raw, corpus)
    yaml_seeds(corpus, repo)
    for target in sorted(os.listdir(corpus)):
        files = os.listdir(os.path.join(corpus, target))
        size = sum(os.path.getsize(os.path.join(corpus, target, f)) for f in files)
        print(f"{target}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
