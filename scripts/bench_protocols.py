#!/usr/bin/env python3
"""Echo and STAMP servers side by side (issue 13), in one run, pinned (servers on CPU 1,
the load on CPU 0), `udpkit bench --window W` for SECONDS a run, ROUNDS rounds:

1. STAMP, 72-byte packets: udpkit's reflector (`server --protocol stamp`, stateless and
   `--stateful`) against stamp-suite's (`stamp-suite -i`, stateless and
   `--stateful-reflector`), the same load generator for both.
2. Echo, 38-byte requests: `udpkit server --protocol echo` against a Python echo server
   (the five lines a user writes) and socat's (`UDP4-LISTEN,fork PIPE`, window 1 only:
   its pipe joins datagrams).
3. The seed's protocol on the same server, for scale.

usage: scripts/bench_protocols.py [--seconds 3] [--rounds 3] [--window 64]
Needs stamp-suite (`cargo install stamp-suite`) and socat; a missing one is left out.
Loopback only; every process it starts is killed before it exits.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from benchlib import build, free_port, pinned_client, pinned_server, wait_listening

PY_ECHO = ("import socket\n"
           "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
           "s.bind(('127.0.0.1', int(__import__('sys').argv[1])))\n"
           "while True:\n"
           "    d, p = s.recvfrom(65535)\n"
           "    s.sendto(d, p)\n")


def stamp_suite():
    found = shutil.which("stamp-suite")
    home = os.path.expanduser("~/.cargo/bin/stamp-suite")
    return found or (home if os.path.exists(home) else None)


def bench(udpkit, port, protocol, secs, window):
    out = pinned_client([udpkit, "bench", "127.0.0.1", "-p", str(port), "--protocol",
                         protocol, "--window", str(window), "-d", str(secs), "--json"],
                        secs + 30)
    j = json.loads(out)
    if j["bad"] or j["forged"]:
        raise SystemExit(f"bad replies: {j}")
    return j["requests_per_second"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    a = ap.parse_args()
    udpkit, _ = build()
    suite = stamp_suite()
    socat = shutil.which("socat")
    # name -> (command given a port, protocol, window, payload that gets an answer)
    stamp_probe = bytes(44)
    servers = {
        "udpkit server --protocol stamp": (
            lambda p: [udpkit, "server", "-q", "-p", str(p), "--protocol", "stamp"],
            "stamp", a.window, stamp_probe),
        "udpkit server --protocol stamp --stateful": (
            lambda p: [udpkit, "server", "-q", "-p", str(p), "--protocol", "stamp",
                       "--stateful"], "stamp", a.window, stamp_probe),
        "udpkit server --protocol echo": (
            lambda p: [udpkit, "server", "-q", "-p", str(p), "--protocol", "echo"],
            "echo", a.window, b"ping"),
        "python3 echo server": (
            lambda p: [sys.executable, "-c", PY_ECHO, str(p)], "echo", a.window, b"ping"),
        "udpkit server (seed)": (
            lambda p: [udpkit, "server", "-q", "-p", str(p)], "seed", a.window, b"ping"),
    }
    if suite:
        servers["stamp-suite -i"] = (
            lambda p: [suite, "-i", "-S", "127.0.0.1", "-o", str(p)], "stamp", a.window,
            stamp_probe)
        servers["stamp-suite -i --stateful-reflector"] = (
            lambda p: [suite, "-i", "-S", "127.0.0.1", "-o", str(p), "--stateful-reflector"],
            "stamp", a.window, stamp_probe)
    else:
        print("stamp-suite not found: left out", file=sys.stderr)
    if socat:
        servers["socat PIPE (window 1)"] = (
            lambda p: [socat, "-b", "65536", f"UDP4-LISTEN:{p},bind=127.0.0.1,reuseaddr,fork",
                       "PIPE"], "echo", 1, b"ping")
        servers["udpkit server --protocol echo (window 1)"] = (
            lambda p: [udpkit, "server", "-q", "-p", str(p), "--protocol", "echo"],
            "echo", 1, b"ping")
    results = {name: [] for name in servers}
    for r in range(a.rounds):
        for name, (cmd, protocol, window, probe) in servers.items():
            port = free_port()
            proc = pinned_server(cmd(port))
            try:
                wait_listening(port, proc, probe)
                rate = bench(udpkit, port, protocol, a.seconds, window)
            finally:
                proc.kill()
                proc.wait()
            results[name].append(rate)
            print(f"round {r + 1}: {name}: {rate:,.0f} requests/s", flush=True)
    print()
    print(f"udpkit bench --window {a.window} (socat: 1), {a.seconds} s a run, "
          f"median of {a.rounds} rounds (requests/s; loopback, server on CPU 1, load on CPU 0)")
    print()
    print("| server | requests/s | rounds |")
    print("|---|---|---|")
    for name, rates in results.items():
        rounds = ", ".join(f"{x:,.0f}" for x in rates)
        print(f"| {name} | {statistics.median(rates):,.0f} | {rounds} |")
    pairs = [("udpkit server --protocol stamp", "stamp-suite -i"),
             ("udpkit server --protocol stamp --stateful", "stamp-suite -i --stateful-reflector"),
             ("udpkit server --protocol echo", "python3 echo server"),
             ("udpkit server --protocol echo (window 1)", "socat PIPE (window 1)")]
    print()
    for ours, theirs in pairs:
        if ours in results and theirs in results:
            ratios = [x / y for x, y in zip(results[ours], results[theirs])]
            print(f"- {ours} / {theirs}: {statistics.median(ratios):.2f}x "
                  f"(rounds {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
