#!/usr/bin/env python3
"""GSO and GRO against the C yardstick (issue 12), everything in one run, pinned (servers
on CPU 1, load generators on CPU 0), 38-byte requests, SECONDS a run, ROUNDS rounds:

1. `udpload` -> `refserver` (batched C, no offload): the yardstick, at WINDOWS in flight.
2. `udpkit bench` -> `udpkit server`, both with GSO and GRO (the default). Goal: 3x the
   yardstick at 64 in flight, 10x at 256.
3. `udpload` -> `udpkit server` (the peer sends no GSO): goal >= 1.0x the yardstick.
4. `udpkit bench` -> `refserver` (the server does no GRO or GSO): goal >= 1.0x.
5. `udpkit ping -i 0` against `udpkit server` with GRO and with `--no-gro`: single requests
   must not wait for GRO.
6. The open loop: `udpkit bench --rate R` against `udpkit server`, R = 80% of the closed
   loop's rate at 64 in flight measured in the same round. Goal: the rate sent within 1% of
   R, the send lag's p99 under 100 µs.

Figures are for loopback, where a GSO send reaches a GRO socket without ever being cut
into datagrams; see BENCHMARKS.md for what a real NIC changes.

usage: scripts/bench_offload.py [--seconds 3] [--rounds 3] [--windows 64,256]
Loopback only; every process it starts is killed before it exits.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchlib import build, free_port, pinned_client, pinned_server, wait_listening

SIZE = 38


server = pinned_server
client = pinned_client


def udpload(tools, port, secs, window):
    out = client([os.path.join(tools, "udpload"), "127.0.0.1", str(port), str(secs),
                  str(window), str(SIZE), "len"], secs + 30)
    return json.loads(out)["replies_per_s"]


def bench(udpkit, port, secs, window, extra=()):
    out = client([udpkit, "bench", "127.0.0.1", "-p", str(port), "--window", str(window),
                  "-d", str(secs), "-s", str(SIZE), "--json", *extra], secs + 30)
    j = json.loads(out)
    if j["bad"] or j["duplicates"] or j["forged"]:
        raise SystemExit(f"bad replies: {j}")
    return j["requests_per_second"]


def open_loop(udpkit, port, secs, rate):
    out = client([udpkit, "bench", "127.0.0.1", "-p", str(port), "--rate", str(int(rate)),
                  "-d", str(secs), "-s", str(SIZE), "--json"], secs + 30)
    j = json.loads(out)
    return j["sent_per_second"] / rate, j["send_lag_us"]["p99"], j["requests_per_second"]


def ping_p50(udpkit, port, count):
    out = client([udpkit, "ping", "127.0.0.1", "-p", str(port), "-i", "0", "-s", str(SIZE),
                  "-c", str(count), "-q", "--json"], 120)
    return json.loads(out)["rtt_ms"]["p50"] * 1000


def with_server(cmd, port, body):
    srv = server(cmd)
    try:
        wait_listening(port, srv)
        return body()
    finally:
        srv.kill()
        srv.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--windows", default="64,256")
    args = ap.parse_args()
    secs = args.seconds
    windows = [int(w) for w in args.windows.split(",")]
    udpkit, tools = build()
    names = ["udpload -> refserver", "udpkit bench -> udpkit server (GSO+GRO)",
             "udpload -> udpkit server", "udpkit bench -> refserver"]
    rate = {(n, w): [] for n in names for w in windows}
    p50 = {"GRO": [], "--no-gro": []}
    opened = []  # (asked, sent share, lag p99 us, replies/s)
    for r in range(args.rounds):
        for w in windows:
            port = free_port()
            ref = [os.path.join(tools, "refserver"), str(port)]
            rate[(names[0], w)].append(with_server(ref, port, lambda: udpload(tools, port, secs, w)))
            rate[(names[3], w)].append(
                with_server(ref, port, lambda: bench(udpkit, port, secs, w)))
            port = free_port()
            ours = [udpkit, "server", "-p", str(port), "-q"]
            rate[(names[1], w)].append(
                with_server(ours, port, lambda: bench(udpkit, port, secs, w)))
            rate[(names[2], w)].append(with_server(ours, port, lambda: udpload(tools, port, secs, w)))
            print(f"round {r + 1} window {w}: " + ", ".join(
                f"{n} {rate[(n, w)][-1]:.0f}/s" for n in names), file=sys.stderr, flush=True)
        if 64 in windows:
            asked = 0.8 * rate[(names[1], 64)][-1]
            port = free_port()
            ours = [udpkit, "server", "-p", str(port), "-q"]
            share, lag, got = with_server(ours, port, lambda: open_loop(udpkit, port, secs, asked))
            opened.append((asked, share, lag, got))
            print(f"round {r + 1} open loop at {asked:.0f}/s: sent {share:.4f} of it, send lag "
                  f"p99 {lag:.1f} us, {got:.0f} replies/s", file=sys.stderr, flush=True)
        for label, extra in (("GRO", []), ("--no-gro", ["--no-gro"])):
            port = free_port()
            cmd = [udpkit, "server", "-p", str(port), "-q", *extra]
            p50[label].append(with_server(cmd, port, lambda: ping_p50(udpkit, port, 20000)))
        print(f"round {r + 1} ping p50: server with GRO {p50['GRO'][-1]:.1f} us, "
              f"--no-gro {p50['--no-gro'][-1]:.1f} us", file=sys.stderr, flush=True)

    print(f"\n{SIZE}-byte requests, {secs:g} s per run, median of {args.rounds} rounds "
          "(requests/s; loopback, servers on CPU 1, load on CPU 0)\n")
    print("| load -> server | " + " | ".join(f"{w} in flight" for w in windows) + " |")
    print("|---|" + "---|" * len(windows))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{statistics.median(rate[(n, w)]):,.0f}"
                                       for w in windows) + " |")
    print()
    base = names[0]
    for n in names[1:]:
        for w in windows:
            paired = [a / b for a, b in zip(rate[(n, w)], rate[(base, w)])]
            print(f"- {w} in flight: {n} / {base} = "
                  f"{statistics.median(rate[(n, w)]) / statistics.median(rate[(base, w)]):.2f}x "
                  f"(ratio of medians); rounds {', '.join(f'{x:.2f}' for x in paired)}")
    for asked, share, lag, got in opened:
        print(f"- open loop at {asked:,.0f}/s (80% of that round's closed loop at 64): sent "
              f"{100 * share:.2f}% of the rate asked, send lag p99 {lag:.1f} µs, "
              f"{got:,.0f} replies/s")
    paired = [a / b for a, b in zip(p50["GRO"], p50["--no-gro"])]
    print(f"- ping -i 0 p50 against a server with GRO / with --no-gro: "
          f"{statistics.median(p50['GRO']):.1f} / {statistics.median(p50['--no-gro']):.1f} us; "
          f"rounds {', '.join(f'{x:.2f}' for x in paired)}")


if __name__ == "__main__":
    main()
