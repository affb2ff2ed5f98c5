#!/usr/bin/env python3
"""The server's peak resident memory with every table a stranger can fill full (issue 20).

Starts `udpkit server --protocol stamp --stateful --threads 4 --rate-limit 1000000`
(release build) on loopback, then fills, from many source prefixes of 127.0.0.0/8 (each
/24 a prefix of its own):
  - the stream tables: every prefix asks for as many streams as it is allowed, each fed
    data with sequence numbers spread over its window, so its counts and histograms are
    touched;
  - the STAMP session tables: every prefix opens as many sessions (SSIDs) as it may;
  - the rate limiter's table: replies to 20,000 prefixes;
  - the receive buffers: datagrams of 65,507 bytes;
and prints the server's resident memory after start, after each step, and its peak
(VmHWM).

usage: scripts/measure_tables.py [--threads 4] [--udpkit PATH]
Loopback only; the server it starts is killed before it exits.
"""

import argparse
import socket
import struct
import sys
import time

from benchlib import release, start_ready

MAGIC = b"UDPKSTRM"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def start_msg(sid, cookie, reverse, milli_pps, size, count, duration_ms):
    return (MAGIC + bytes([1, 1]) + struct.pack(">Q", sid) +
            struct.pack(">QQQQQQ", cookie, int(reverse), milli_pps, size, count, duration_ms))


def data_msg(sid, seq, sent_ns, size):
    m = MAGIC + bytes([1, 3]) + struct.pack(">QQQ", sid, seq, sent_ns)
    return m + bytes(size - len(m))


def stamp_packet(seq, ssid, size=44):
    # seq, timestamp, error estimate, SSID, then MBZ to the base length.
    p = struct.pack(">IQHH", seq, 0, 0x8001, ssid)
    return p + bytes(size - len(p))


def stream_start(sock, server, sid, plan):
    """The cookie round trip, then the start; whether the server started the stream."""
    sock.sendto(start_msg(sid, 0, *plan), server)
    for _ in range(20):
        data, _ = sock.recvfrom(65536)
        if data[:8] == MAGIC and data[9] == 2:
            cookie = struct.unpack(">Q", data[18:26])[0]
            break
    else:
        return False
    sock.sendto(start_msg(sid, cookie, *plan), server)
    for _ in range(20):
        data, _ = sock.recvfrom(65536)
        if data[:8] == MAGIC and data[9] == 2:
            return struct.unpack(">Q", data[26:34])[0] == 1
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--udpkit", default=None)
    args = ap.parse_args()
    udpkit = release(args.udpkit)
    proc, server = start_ready(
        [udpkit, "server", "-p", "0", "-q", "--protocol", "stamp", "--stateful",
         "--threads", str(args.threads), "--rate-limit", "1000000"])
    rows = []
    try:
        pid = proc.pid
        note = lambda what: rows.append((what, status_kib(pid, "VmRSS:")))
        time.sleep(0.2)
        note("started")

        # Streams: each prefix as many as it may (8), 600 s at 100/s of 1,200 bytes.
        started = 0
        socks = []
        for prefix in range(1, 129):
            for k in range(8):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((f"127.1.{prefix}.1", 0))
                s.settimeout(1.0)
                sid = (prefix << 16) | k
                if stream_start(s, server, sid, (False, 100_000, 1200, 0, 600_000)):
                    started += 1
                    socks.append((s, sid))
                else:
                    s.close()
        for s, sid in socks:
            for seq in range(0, 40):
                s.sendto(data_msg(sid, seq * 997, seq * 1_000_000_007, 1200), server)
        time.sleep(0.5)
        note(f"{started} streams, fed")

        # STAMP sessions: each prefix as many SSIDs as it may (512).
        sessions = 0
        for prefix in range(1, 65):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.2.{prefix}.1", 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for ssid in range(600):
                s.sendto(stamp_packet(0, ssid), server)
                sessions += 1
            s.close()
            time.sleep(0.01)
        time.sleep(0.5)
        note(f"{sessions} STAMP sessions asked")

        # The rate limiter: 20,000 prefixes.
        for i in range(20_000):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.{3 + i // 256}.{i % 256}.1", 0))
            s.sendto(stamp_packet(0, 1), server)
            s.close()
        time.sleep(0.5)
        note("20,000 prefixes")

        # The receive buffers: the largest datagrams, many of them.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big = stamp_packet(0, 1, 65_507)
        for _ in range(2000):
            s.sendto(big, server)
        time.sleep(0.5)
        note("2,000 datagrams of 65,507 bytes")
        peak = status_kib(pid, "VmHWM:")
    finally:
        proc.kill()
        proc.wait()
    print(f"udpkit server --protocol stamp --stateful --threads {args.threads}: resident memory")
    for what, kib in rows:
        print(f"- {what}: {kib / 1024:.1f} MiB")
    print(f"- peak (VmHWM): {peak / 1024:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
