#!/usr/bin/env python3
"""Records what real clients send to a unix stream socket, for the fuzz
seed corpus (run by fuzz/seeds/capture.sh).

  listen.py SOCKET OUTDIR PREFIX IDLE_SECONDS MAX_CONNECTIONS

Listens on SOCKET; for each connection writes everything the client sends
until it stays silent for IDLE_SECONDS (or closes) to OUTDIR/PREFIX-N.bin,
then closes the connection (a control-socket client sees no reply and
gives up). Exits after MAX_CONNECTIONS connections or 60 s.
"""
import os
import socket
import sys
import time


def main():
    path, outdir, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    idle, most = float(sys.argv[4]), int(sys.argv[5])
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    srv.settimeout(60)
    print(f"listening on {path}", flush=True)
    deadline = time.monotonic() + 60
    for n in range(most):
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            break
        conn.settimeout(idle)
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        conn.close()
        out = os.path.join(outdir, f"{prefix}-{n}.bin")
        with open(out, "wb") as f:
            f.write(data)
        print(f"{out}: {len(data)} bytes", flush=True)
    srv.close()
    os.unlink(path)


if __name__ == "__main__":
    main()
