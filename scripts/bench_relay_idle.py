#!/usr/bin/env python3
"""The relay's cost per datagram against the number of idle sessions: ping and bench
through the relay with no other session, then with N idle ones (each a source that sent
two datagrams and went quiet), side by side for one or more udpkit binaries in one run.

  python3 scripts/bench_relay_idle.py [--sessions 4000] [--count 2000] [--rounds 3]
                                      [--seconds 2] [--udpkit PATH ...]

Prints, per binary and round, ping's median and p99 round trip (-i 0) and bench's
requests/s (one flow, window 64) through a clean relay to a udpkit server, and the ratios
with/without idle sessions. Goal (issue 11): within 20% either way. Loopback only; pinned
with taskset (the relay on CPU 0, server and clients on CPU 1) where available.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import time

from benchlib import ROOT, free_port, wait_listening


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


def measure(udpkit, sessions, count, seconds):
    server_port = free_port()
    server = subprocess.Popen(pin(1) + [udpkit, "server", "-p", str(server_port), "-q"],
                              stdout=subprocess.DEVNULL)
    relay = None
    idle = []
    try:
        wait_listening(server_port, server)
        relay_port = free_port()
        relay = subprocess.Popen(
            pin(0) + [udpkit, "relay", "--listen", f"127.0.0.1:{relay_port}",
                      "--to", f"127.0.0.1:{server_port}", "--idle", "600"],
            stdout=subprocess.DEVNULL)
        wait_listening(relay_port, relay)
        results = {}
        for label, n in (("none", 0), ("idle", sessions)):
            while len(idle) < n:
                # Each idle source in a /24 of its own within 127.0.0.0/8 (loopback): the
                # relay gives a prefix 8 sessions at most, and the clients use 127.0.0.1.
                k = len(idle)
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((f"127.{1 + k // 250}.{k % 250}.1", 0))
                for _ in range(2):
                    s.sendto(b"hello", ("127.0.0.1", relay_port))
                idle.append(s)
            time.sleep(0.5)
            out = subprocess.run(
                pin(1) + [udpkit, "ping", "127.0.0.1", "-p", str(relay_port), "-c", str(count),
                          "-i", "0", "-W", "0.5", "--json"],
                capture_output=True, text=True, timeout=120)
            v = json.loads(out.stdout)
            out = subprocess.run(
                pin(1) + [udpkit, "bench", "127.0.0.1", "-p", str(relay_port), "--window", "64",
                          "-d", str(seconds), "-W", "0.5", "--json"],
                capture_output=True, text=True, timeout=120 + seconds)
            b = json.loads(out.stdout)
            results[label] = (v["rtt_ms"]["p50"] * 1000, v["rtt_ms"]["p99"] * 1000, v["received"],
                              b["requests_per_second"])
        return results
    finally:
        for p in (relay, server):
            if p:
                p.kill()
                p.wait()
        for s in idle:
            s.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--udpkit", action="append")
    args = parser.parse_args()
    binaries = args.udpkit or [os.path.join(ROOT, "target", "release", "udpkit")]
    for r in range(args.rounds):
        for b in binaries:
            res = measure(b, args.sessions, args.count, args.seconds)
            (p50a, p99a, ra, qa), (p50b, p99b, rb, qb) = res["none"], res["idle"]
            print(f"round {r + 1} {b}: no idle sessions p50 {p50a:.1f} us p99 {p99a:.1f} us "
                  f"({ra}/{args.count}), bench {qa:.0f}/s; {args.sessions} idle p50 {p50b:.1f} us "
                  f"p99 {p99b:.1f} us ({rb}/{args.count}), bench {qb:.0f}/s; p50 ratio "
                  f"{p50b / p50a:.2f}x, bench ratio {qb / qa:.2f}x", flush=True)


if __name__ == "__main__":
    main()
