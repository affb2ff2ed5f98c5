#!/usr/bin/env python3
"""The relay's cost per datagram against the number of idle sessions: ping through the
relay with no other session, then with N idle ones (each a source that sent two datagrams
and went quiet), side by side for one or more udpkit binaries in one run.

  python3 scripts/bench_relay_idle.py [--sessions 3800] [--count 2000] [--rounds 3]
                                      [--udpkit PATH ...]

Prints, per binary and round, ping's median and p99 round trip (-i 0) through a clean
relay to a udpkit server, and the ratio with/without idle sessions. Loopback only; pinned
with taskset (the relay on CPU 0, server and ping on CPU 1) where available.
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


def measure(udpkit, sessions, count):
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
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                for _ in range(2):
                    s.sendto(b"hello", ("127.0.0.1", relay_port))
                idle.append(s)
            time.sleep(0.5)
            out = subprocess.run(
                pin(1) + [udpkit, "ping", "127.0.0.1", "-p", str(relay_port), "-c", str(count),
                          "-i", "0", "-W", "0.5", "--json"],
                capture_output=True, text=True, timeout=120)
            v = json.loads(out.stdout)
            results[label] = (v["rtt_ms"]["p50"] * 1000, v["rtt_ms"]["p99"] * 1000, v["received"])
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
    parser.add_argument("--sessions", type=int, default=3800)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--udpkit", action="append")
    args = parser.parse_args()
    binaries = args.udpkit or [os.path.join(ROOT, "target", "release", "udpkit")]
    for r in range(args.rounds):
        for b in binaries:
            res = measure(b, args.sessions, args.count)
            (p50a, p99a, ra), (p50b, p99b, rb) = res["none"], res["idle"]
            print(f"round {r + 1} {b}: no idle sessions p50 {p50a:.1f} us p99 {p99a:.1f} us "
                  f"({ra}/{args.count}); {args.sessions} idle p50 {p50b:.1f} us p99 {p99b:.1f} us "
                  f"({rb}/{args.count}); p50 ratio {p50b / p50a:.2f}x", flush=True)


if __name__ == "__main__":
    main()
